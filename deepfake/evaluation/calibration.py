"""Temperature scaling: one scalar T fitted on validation logits, so that sigmoid(logit / T) is calibrated.

Dividing every logit by the same positive T keeps their order, so AUC, AP and EER are unchanged; only the
probabilities (log loss, ECE, accuracy at a threshold) move. T is fitted by L-BFGS on log T (which keeps T > 0)
minimising the validation binary cross-entropy, on validation predictions only, never on a test set.
ECE uses 15 equal-width bins of the probability of fake, binned as scikit-learn's `calibration_curve` does.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepfake.errors import UserError

log = logging.getLogger("deepfake")

ECE_BINS = 15


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The T > 0 minimising the mean BCE of sigmoid(logits / T) against labels (both classes needed)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    if len(z) == 0 or len(torch.unique(y)) < 2 or not torch.isfinite(z).all():
        raise ValueError("a temperature needs finite logits of both classes")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_change=1e-12
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z * torch.exp(-log_t), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(torch.exp(log_t.detach()))


def log_loss(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy from logits (exact where a probability would round to 0 or 1)."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float64))
    return float(F.binary_cross_entropy_with_logits(z, y)) if len(z) else math.nan


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
    probs = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
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
    if not math.isfinite(temperature) or after["log_loss"] > before["log_loss"]:
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
    """The temperature a checkpoint carries, refused unless it is a finite number > 0; None when it has none."""
    if calibration is None or calibration == {}:
        return None
    value = calibration.get("temperature") if isinstance(calibration, dict) else calibration
    try:
        temperature = float(value)
        ok = math.isfinite(temperature) and temperature > 0 and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(
            f"{source}: its calibration temperature ({str(value)[:60]!r}) is not a finite number > 0; the file "
            "is damaged or was not written by this project: use the checkpoint as training saved it"
        )
    return temperature
