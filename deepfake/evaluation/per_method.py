"""Per-method (per-generator) metrics of a test set: what metrics.json keeps as `per_method`.

A method's ranking metrics (AUC, AP, video AUC) compare its fakes with reals: its own reals when it has some (a
GenImage or ForenSynths generator, whose folder pairs fakes with reals), else the set's shared reals, those of
methods without fakes (FF++'s originals: the FF++ convention of ranking each manipulation against the same real
videos). Accuracies count the method's own images only: on a fake-only method that is its detection rate, on a
generator UnivFD's accuracy (reals and fakes), split into `real_acc` and `fake_acc` as UnivFD reports them.

Entry per method, every key always present (null where undefined, never NaN, so any JSON reader takes it):
`n`, `n_real`, `n_fake`, `reals` ("own", "shared" or null: what the ranking metrics compared against), `auc`,
`ap`, `video_auc`, `acc` (at `eval.threshold`), `real_acc`, `fake_acc`, `acc_at_val_threshold` (at the
threshold chosen on validation, null without one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from deepfake.evaluation.aggregate import TOPK
from deepfake.evaluation.metrics import video_scores


def per_method_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    methods: Sequence[str],
    videos: Sequence[str],
    threshold: float = 0.5,
    val_threshold: float | None = None,
    aggregation: str = "mean",
    k: int = TOPK,
) -> dict[str, dict[str, float | int | str | None]]:
    """Every method's entry (see the module's docstring), in name order."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    methods = np.asarray(methods, dtype=object).astype(str)
    videos = np.asarray(videos, dtype=object).astype(str)
    names = sorted(set(methods.tolist()))
    with_fakes = [m for m in names if labels[methods == m].any()]
    shared = (labels == 0) & ~np.isin(methods, with_fakes)
    out: dict[str, dict[str, float | int | str | None]] = {}
    for method in names:
        own = methods == method
        n_fake = int(labels[own].sum())
        n_real = int(own.sum()) - n_fake
        pool, reals = None, None
        if n_fake and n_real:
            pool, reals = own, "own"
        elif n_fake and shared.any():
            pool, reals = own | shared, "shared"
        entry: dict[str, float | int | str | None] = {
            "n": int(own.sum()),
            "n_real": n_real,
            "n_fake": n_fake,
            "reals": reals,
            **_ranking(labels, probs, videos, pool, aggregation, k),
            "acc": _accuracy(labels[own], probs[own], threshold),
            "real_acc": _accuracy(labels[own & (labels == 0)], probs[own & (labels == 0)], threshold),
            "fake_acc": _accuracy(labels[own & (labels == 1)], probs[own & (labels == 1)], threshold),
            "acc_at_val_threshold": None
            if val_threshold is None
            else _accuracy(labels[own], probs[own], val_threshold),
        }
        out[method] = entry
    return out


def _ranking(
    labels: np.ndarray,
    probs: np.ndarray,
    videos: np.ndarray,
    pool: np.ndarray | None,
    aggregation: str,
    k: int,
) -> dict[str, float | None]:
    """AUC and AP of the pooled images, and the AUC of their videos (frames aggregated per video)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if pool is None:
        return {"auc": None, "ap": None, "video_auc": None}
    y, p = labels[pool], probs[pool]
    v_labels, v_probs = video_scores(y, p, videos[pool].tolist(), aggregation, k)
    video_auc = float(roc_auc_score(v_labels, v_probs)) if len(np.unique(v_labels)) == 2 else None
    return {
        "auc": float(roc_auc_score(y, p)),
        "ap": float(average_precision_score(y, p)),
        "video_auc": video_auc,
    }


def _accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float | None:
    if not len(labels) or not math.isfinite(threshold):
        return None
    return float(np.mean((probs >= threshold) == labels))
