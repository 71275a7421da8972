"""Frame- and video-level detection metrics, as the field defines them (label 1 = fake = positive).

The maths is scikit-learn's; this module only fixes the definitions (EER, video grouping) and makes the
single-class case explicit (NaN) instead of an exception in the middle of a run.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from deepfake.evaluation.aggregate import TOPK, over_frames

log = logging.getLogger("deepfake.metrics")  # the name train.log has always shown

# scikit-learn is imported inside the functions: it takes ~1 s to import, which every start-up would pay.


def equal_error_rate(labels: np.ndarray, probs: np.ndarray) -> float:
    """The rate where FNR (1 - TPR) equals FPR, interpolated linearly between the two ROC points around it.

    The ROC keeps every threshold (`drop_intermediate=False`) and starts at (0, 0), so FNR - FPR falls from 1
    to -1 along it and crosses 0 on exactly one segment. DeepfakeBench takes the FPR of the ROC point where
    |FNR - FPR| is smallest instead; on a coarse or tied ROC that is a corner far from the crossing (constant
    predictions give 0.0 there, 0.5 here).
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, probs, drop_intermediate=False)
    gap = (1.0 - tpr) - fpr
    i = int(np.argmax(gap <= 0))  # the first point at or past the crossing; gap[0] = 1 > 0
    if gap[i] == 0:
        return float(fpr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


#: The false-positive rates at which `tpr_at_fpr` reports the detection rate (metrics.json keys "0.1", ...).
FPR_TARGETS = (0.1, 0.01, 0.001)


def fpr_key(target: float) -> str:
    """The JSON key of an FPR target: 0.01 -> "0.01"."""
    return f"{target:g}"


def enough_reals(reals: int, target: float) -> bool:
    """An FPR of `target` is measurable only with at least 1/target reals (one false alarm among them)."""
    return reals * target >= 1.0 - 1e-9


def tpr_at_fpr(
    labels: np.ndarray, probs: np.ndarray, targets: Sequence[float] = FPR_TARGETS
) -> dict[str, float | None]:
    """For each target FPR, the largest TPR among ROC points whose FPR is at or below it ("what it catches at
    1% false alarms"); None where the set has fewer reals than 1/FPR, or only one class."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels, dtype=np.int64)
    reals = int((labels == 0).sum())
    out: dict[str, float | None] = {fpr_key(t): None for t in targets}
    if reals == 0 or reals == len(labels):
        return out
    fpr, tpr, _ = roc_curve(labels, np.asarray(probs, dtype=np.float64), drop_intermediate=False)
    for t in targets:
        if enough_reals(reals, t):
            out[fpr_key(t)] = float(tpr[fpr <= t + 1e-12].max())
    return out


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, AP, EER, ACC and balanced ACC at threshold, and log loss.

    With one class present the ranking metrics and log loss are NaN, and balanced ACC is that class's recall,
    which is ACC.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        log_loss,
        roc_auc_score,
    )

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    out = {"acc": float(accuracy_score(labels, probs >= threshold)) if len(labels) else math.nan}
    if len(np.unique(labels)) < 2:
        out.update(balanced_acc=out["acc"], auc=math.nan, ap=math.nan, eer=math.nan, loss=math.nan)
        return out
    out["balanced_acc"] = float(balanced_accuracy_score(labels, probs >= threshold))
    out["auc"] = float(roc_auc_score(labels, probs))
    out["ap"] = float(average_precision_score(labels, probs))
    out["eer"] = equal_error_rate(labels, probs)
    out["loss"] = float(log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7), labels=[0, 1]))
    return out


def video_scores(
    labels: np.ndarray,
    probs: np.ndarray,
    videos: Sequence[str],
    aggregation: str = "mean",
    k: int = TOPK,
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate frame probabilities per video id with `deepfake.evaluation.aggregate.over_frames` (the rule
    predict.py uses); a video's label is its frames' (they must agree)."""
    keys, inverse = np.unique(np.asarray(videos, dtype=object).astype(str), return_inverse=True)
    v_probs = np.empty(len(keys))
    v_labels = np.empty(len(keys), dtype=np.int64)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    for i, idx in enumerate(np.split(order, bounds)):
        v_probs[i] = over_frames(probs[idx], aggregation, k)
        v_labels[i] = int(np.round(np.mean(labels[idx])))
    return v_labels, v_probs


def detection_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    videos: Sequence[str] | None = None,
    prefix: str = "val",
    threshold: float = 0.5,
    aggregation: str = "mean",
    k: int = TOPK,
) -> dict[str, float]:
    """Frame metrics as `<prefix>/auc` ...; video metrics as `<prefix>/video_auc`, `<prefix>/video_acc`."""
    frame = binary_metrics(labels, probs, threshold)
    out = {f"{prefix}/{k}": v for k, v in frame.items()}
    if videos is not None and len(videos):
        v_labels, v_probs = video_scores(np.asarray(labels), np.asarray(probs), videos, aggregation, k)
        if len(v_labels) == len(labels):
            note_one_frame_videos()
        video = binary_metrics(v_labels, v_probs, threshold)
        out[f"{prefix}/video_auc"] = video["auc"]
        out[f"{prefix}/video_acc"] = video["acc"]
        out[f"{prefix}/video_eer"] = video["eer"]
    return out


@functools.cache
def note_one_frame_videos() -> None:
    """Said once per process: with loose images (no video folders) the video metrics add nothing."""
    log.info(
        "every video has one frame (loose images, or a manifest without a video column): the video-level "
        "metrics (video_auc, video_acc, video_eer) equal the frame-level ones"
    )


def weighted_auc(labels: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], float]:
    """ROC AUC under per-item weights, equal to `roc_auc_score(..., sample_weight=w)` (ties count half).

    The scores are ranked once; each call is then two weighted counts per distinct score, which is what makes
    a thousand bootstrap resamples of a 100k-frame test set take a second rather than minutes.
    """
    distinct, rank = np.unique(np.asarray(probs, dtype=np.float64), return_inverse=True)
    fake = np.asarray(labels) == 1

    def auc(weights: np.ndarray) -> float:
        neg = np.bincount(rank, weights * ~fake, minlength=len(distinct))
        pos = np.bincount(rank, weights * fake, minlength=len(distinct))
        below = np.cumsum(neg) - neg
        return float(pos @ (below + 0.5 * neg) / (pos.sum() * neg.sum()))

    return auc


def bootstrap_auc_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: Sequence[str] | None = None,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for ROC AUC, resampling whole groups (videos) with replacement.

    Frames of one video are not independent, so resampling frames would give a falsely narrow interval; a
    resampled video's frames count as many times as the video was drawn. Without groups each item is its own
    group. NaN when the interval is undefined (one class, or `samples=0`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if samples <= 0 or len(np.unique(labels)) < 2:
        return math.nan, math.nan
    if groups is None:
        inverse = np.arange(len(labels))
    else:
        inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    n_groups = int(inverse.max()) + 1
    auc = weighted_auc(labels, probs)
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(samples):
        weights = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[inverse].astype(
            np.float64
        )
        if weights[labels == 1].any() and weights[labels == 0].any():
            aucs.append(auc(weights))
    if not aucs:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
