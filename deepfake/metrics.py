"""Frame- and video-level detection metrics, as the field defines them (label 1 = fake = positive).

The maths is scikit-learn's; this module only fixes the definitions (EER, video grouping) and makes the
single-class case explicit (NaN) instead of an exception in the middle of a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, log_loss, roc_auc_score, roc_curve


def equal_error_rate(labels: np.ndarray, probs: np.ndarray) -> float:
    """FPR at the ROC threshold where FPR and FNR (1 - TPR) are closest."""
    fpr, tpr, _ = roc_curve(labels, probs)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float(fpr[i])


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, AP, EER, ACC@threshold and log loss; ranking metrics are NaN when only one class is present."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    out = {"acc": float(accuracy_score(labels, probs >= threshold)) if len(labels) else math.nan}
    if len(np.unique(labels)) < 2:
        out.update(auc=math.nan, ap=math.nan, eer=math.nan, loss=math.nan)
        return out
    out["auc"] = float(roc_auc_score(labels, probs))
    out["ap"] = float(average_precision_score(labels, probs))
    out["eer"] = equal_error_rate(labels, probs)
    out["loss"] = float(log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7), labels=[0, 1]))
    return out


def video_scores(
    labels: np.ndarray, probs: np.ndarray, videos: Sequence[str], aggregation: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate frame probabilities per video id; a video's label is its frames' (they must agree)."""
    agg = {"mean": np.mean, "max": np.max, "median": np.median}[aggregation]
    keys, inverse = np.unique(np.asarray(videos, dtype=object).astype(str), return_inverse=True)
    v_probs = np.empty(len(keys))
    v_labels = np.empty(len(keys), dtype=np.int64)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    for k, idx in enumerate(np.split(order, bounds)):
        v_probs[k] = agg(probs[idx])
        v_labels[k] = int(np.round(np.mean(labels[idx])))
    return v_labels, v_probs


def detection_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    videos: Sequence[str] | None = None,
    prefix: str = "val",
    threshold: float = 0.5,
) -> dict[str, float]:
    """Frame metrics as `<prefix>/auc` ...; video metrics as `<prefix>/video_auc`, `<prefix>/video_acc`."""
    frame = binary_metrics(labels, probs, threshold)
    out = {f"{prefix}/{k}": v for k, v in frame.items()}
    if videos is not None and len(videos):
        v_labels, v_probs = video_scores(np.asarray(labels), np.asarray(probs), videos)
        video = binary_metrics(v_labels, v_probs, threshold)
        out[f"{prefix}/video_auc"] = video["auc"]
        out[f"{prefix}/video_acc"] = video["acc"]
        out[f"{prefix}/video_eer"] = video["eer"]
    return out
