"""A decision threshold chosen on validation for a target false-positive rate (`eval.target_fpr`).

A trust-and-safety team asks "what does it catch at 1% false alarms?"; a fixed 0.5 answers a different
question. At the end of training, best.pt's validation logits give the lowest threshold whose validation FPR
is at most the target, which is also the one with the largest TPR there. It is stored in best.pt (key
`operating_point`) as a logit, halfway between the validation score at that ROC point and the next lower one,
so float rounding of a boundary image cannot flip it, and so it applies to raw and calibrated probabilities
alike: an image is fake when sigmoid(logit / T) >= sigmoid(threshold logit / T). `predict.py threshold=val_fpr`
uses it. It was chosen on validation only; a test set's FPR at it is a measurement, never a choice.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from deepfake.errors import UserError
from deepfake.evaluation.metrics import enough_reals

log = logging.getLogger("deepfake")


def choose(labels: np.ndarray, logits: np.ndarray, target: float, tta: str = "none") -> dict[str, Any] | None:
    """The operating point for `target` on these (validation) labels and logits; None, with the reason
    logged, when the split cannot measure that FPR (one class, or fewer than 1/target reals)."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels, dtype=np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    reals = int((labels == 0).sum())
    if reals == 0 or reals == len(labels) or not np.isfinite(logits).all():
        log.warning("no validation threshold for FPR %g: it needs finite scores of both classes", target)
        return None
    if not enough_reals(reals, target):
        log.warning(
            "no validation threshold for FPR %g: measuring it needs at least %d real validation images, the "
            "split has %d (set eval.target_fpr higher, or validate on more reals)",
            target, math.ceil(1 / target - 1e-9), reals,
        )  # fmt: skip
        return None
    fpr, tpr, thresholds = roc_curve(labels, logits, drop_intermediate=False)
    i = int(np.flatnonzero(fpr <= target + 1e-12).max())  # >= 1: one false alarm is allowed; < last: FPR 1
    logit = float((thresholds[i] + thresholds[i + 1]) / 2)
    return {
        "target_fpr": float(target),
        "logit": logit,
        "fpr": float(fpr[i]),
        "tpr": float(tpr[i]),
        "images": len(labels),
        "reals": reals,
        "fitted_on": "validation",
        "tta": tta,
    }


def threshold_of(point: dict[str, Any], temperature: float | None) -> float:
    """The probability threshold for probabilities divided by `temperature` (None: raw probabilities)."""
    return float(1.0 / (1.0 + math.exp(-point["logit"] / (temperature or 1.0))))


def measured_at(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float | None]:
    """FPR and TPR of `probs >= threshold` on a labelled set (None for a rate whose class is absent)."""
    labels = np.asarray(labels, dtype=np.int64)
    fake = np.asarray(probs, dtype=np.float64) >= threshold
    real = labels == 0
    return {
        "threshold": float(threshold),
        "fpr": float(fake[real].mean()) if real.any() else None,
        "tpr": float(fake[~real].mean()) if (~real).any() else None,
    }


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


#: The optional keys a stored operating point may carry, each with its check; others are dropped on load.
_OPTIONAL = {
    "fpr": lambda v: _finite(v) and 0 <= v <= 1,
    "tpr": lambda v: _finite(v) and 0 <= v <= 1,
    "threshold": lambda v: _finite(v) and 0 <= v <= 1,
    "images": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "reals": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "tta": lambda v: isinstance(v, str),
    "fitted_on": lambda v: isinstance(v, str),
    "calibrated": lambda v: isinstance(v, bool),
}


def checked_operating_point(source: str, point: Any) -> dict[str, Any] | None:
    """The operating point a checkpoint carries, refused unless its logit is finite and its target FPR in
    (0, 1); None when it has none. Of the other keys only known ones of the right type are kept."""
    if point is None or point == {}:
        return None
    ok = isinstance(point, dict) and _finite(point.get("logit")) and _finite(point.get("target_fpr"))
    if not ok or not 0 < point["target_fpr"] < 1:
        raise UserError(
            f"{source}: its validation threshold ({str(point)[:80]!r}) is not a finite logit with a target FPR "
            "in (0, 1); the file is damaged or was not written by this project: use the checkpoint as training "
            "saved it, or pass threshold=<number>"
        )
    kept = {k: v for k, v in point.items() if k in _OPTIONAL and _OPTIONAL[k](v)}
    return {"logit": float(point["logit"]), "target_fpr": float(point["target_fpr"]), **kept}
