"""The decision threshold chosen on validation, and where it lies on the probabilities a scorer reports.

Validation picks the probability that maximises balanced accuracy, Youden's J = TPR - FPR (`val/threshold`,
stored with each checkpoint's metrics); test sets then report their accuracy at it beside the accuracy at
`eval.threshold`. UnivFD's validate.py reports an accuracy at the best threshold *of the test set* (an oracle);
this is the honest counterpart: nothing is chosen on a test set.
"""

from __future__ import annotations

import math

import numpy as np


def balanced_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probability t maximising TPR - FPR of `probs >= t` (the highest such t on ties); NaN with one class."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        return math.nan
    fpr, tpr, thresholds = roc_curve(labels, np.asarray(probs, dtype=np.float64))
    i = 1 + int(np.argmax((tpr - fpr)[1:]))  # point 0 is sklearn's "nothing is fake" (threshold inf)
    return float(thresholds[i])


def reported_threshold(raw_threshold: float | None, temperature: float = 1.0) -> float | None:
    """A threshold chosen on raw probabilities, moved onto the probabilities of a member divided by its
    fitted temperature (sigmoid(logit(t) / T): the same logits fall on each side of it)."""
    if raw_threshold is None or not math.isfinite(raw_threshold):
        return None
    if temperature == 1.0 or not 0.0 < raw_threshold < 1.0:
        return float(raw_threshold)
    logit = math.log(raw_threshold) - math.log1p(-raw_threshold)
    return 1.0 / (1.0 + math.exp(-logit / temperature))


def checked_val_threshold(metrics: object) -> float | None:
    """`val/threshold` from a checkpoint's metrics (untrusted: a probability in [0, 1], else ignored)."""
    value = metrics.get("val/threshold") if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        return None
    return float(value)
