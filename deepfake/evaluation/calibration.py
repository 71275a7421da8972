"""Temperature scaling: one scalar T fitted on validation logits, so that sigmoid(logit / T) is calibrated.

Dividing every logit by the same positive T keeps their order, so AUC, AP and EER are unchanged; only the
probabilities (log loss, ECE, accuracy at a threshold) move. T minimises the validation binary cross-entropy
(a convex 1-D problem in 1/T, solved to float64 precision by safeguarded Newton steps, no optimiser state), and
is fitted on validation predictions only, never on a test set.
ECE uses 15 equal-width bins of the probability of fake, binned as scikit-learn's `calibration_curve` does.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from deepfake.errors import UserError

log = logging.getLogger("deepfake")

ECE_BINS = 15
#: 1 / the smallest temperature searched: beyond it the validation set counts as perfectly separated.
MAX_INVERSE_TEMPERATURE = 1e4
#: The temperatures a checkpoint may carry. Outside them a temperature is damage, not calibration: 1e-300
#: turns every logit into +-inf (probabilities of exactly 0 and 1), 1e300 every probability into 0.5.
TEMPERATURE_RANGE = (1 / MAX_INVERSE_TEMPERATURE, 1e4)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The T > 0 minimising the mean BCE of sigmoid(logits / T) against labels.

    The loss is convex in s = 1/T, with derivative mean(z (sigmoid(s z) - y)), increasing in s: a bracket
    [0, hi] around its root, then Newton steps that fall back to bisection outside the bracket, converge to the
    global minimum in a few dozen float64 evaluations. ValueError when no T > 0 exists: one class only,
    non-finite logits, logits that rank reals above fakes (the minimum is at s <= 0), or a validation set the
    logits separate perfectly (the loss keeps falling as T goes to 0).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(z) == 0 or len(np.unique(y)) < 2 or not np.isfinite(z).all():
        raise ValueError("a temperature needs finite logits of both classes")

    def slope(s: float) -> float:
        return float(np.mean(z * (_sigmoid(s * z) - y)))

    if slope(0.0) >= 0:
        raise ValueError("the logits do not rank fakes above reals")
    lo, hi = 0.0, 1.0
    while slope(hi) < 0:
        lo, hi = hi, 2 * hi
        if hi > MAX_INVERSE_TEMPERATURE:
            raise ValueError("the logits separate the validation set perfectly: no finite temperature")
    s = hi
    for _ in range(max_iter):
        g = slope(s)
        lo, hi = (s, hi) if g < 0 else (lo, s)
        p = _sigmoid(s * z)
        curvature = float(np.mean(z * z * p * (1 - p)))
        step = s - g / curvature if curvature > 0 else math.nan
        s_next = step if lo < step < hi else (lo + hi) / 2
        if abs(s_next - s) <= 1e-12 * s:
            break
        s = s_next
    return 1.0 / s


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning at large |x|


def log_loss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy from logits (exact where a probability would round to 0 or 1)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(z) else math.nan


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width bins of (bin share) x |fraction of fakes - mean probability of fake|."""
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        return math.nan
    ids = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], probs)
    fakes = np.bincount(ids, weights=np.asarray(labels, dtype=np.float64), minlength=bins)
    confidence = np.bincount(ids, weights=probs, minlength=bins)
    return float(np.abs(fakes - confidence).sum() / len(probs))


def calibration_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Log loss and ECE of sigmoid(logits)."""
    probs = _sigmoid(np.asarray(logits, dtype=np.float64))
    return {"log_loss": log_loss(labels, logits), "ece": expected_calibration_error(labels, probs)}


def calibrate(logits: np.ndarray, labels: np.ndarray, tta: str) -> dict[str, Any] | None:
    """Fit T and report log loss and ECE before and after; None (with a warning) when T cannot be fitted.

    The dict is what a checkpoint's `calibration` holds: `temperature` divides the (TTA-combined) logit.
    """
    try:
        temperature = fit_temperature(logits, labels)
    except ValueError as e:
        log.warning("no temperature fitted (%s): predictions stay uncalibrated", e)
        return None
    before = calibration_metrics(labels, logits)
    after = calibration_metrics(labels, np.asarray(logits) / temperature)
    low, high = TEMPERATURE_RANGE
    if not low <= temperature <= high:
        log.warning("the fitted temperature %g is outside [%g, %g]: not used", temperature, low, high)
        return None
    if after["log_loss"] > before["log_loss"]:
        log.warning("the fitted temperature %g does not lower the validation log loss: not used", temperature)
        return None
    return {
        "temperature": temperature,
        "method": "temperature",
        "fitted_on": "validation",
        "tta": tta,
        "images": len(labels),
        "before": before,
        "after": after,
    }


def checked_temperature(source: str, calibration: Any) -> float | None:
    """The temperature a checkpoint carries, refused unless `calibration` is a mapping whose `temperature` is
    a number in TEMPERATURE_RANGE; None when it has none."""
    if calibration is None or calibration == {}:
        return None
    low, high = TEMPERATURE_RANGE
    if not isinstance(calibration, dict):
        raise UserError(
            f"{source}: its 'calibration' ({str(calibration)[:60]!r}) is not a mapping with a temperature; the "
            "file is damaged or was not written by this project: use the checkpoint as training saved it"
        )
    value = calibration.get("temperature")
    try:
        temperature = float(value)
        ok = low <= temperature <= high and not isinstance(value, bool)  # NaN fails the comparison
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(
            f"{source}: its calibration temperature ({str(value)[:60]!r}) is not a number in [{low:g}, {high:g}]; "
            "the file is damaged or was not written by this project: use the checkpoint as training saved it"
        )
    return temperature
