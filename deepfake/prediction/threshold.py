"""predict.py's `threshold`: a probability as given, or `val_fpr`, the checkpoint's validation threshold for
`eval.target_fpr` (chosen at the end of training, `deepfake.evaluation.operating_point`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.inference import LoadedDetector
from deepfake.evaluation.operating_point import threshold_of

log = logging.getLogger("deepfake")

VAL_FPR = "val_fpr"  # threshold=val_fpr: the checkpoint's validation threshold for eval.target_fpr


def check_threshold(threshold: Any) -> None:
    """A probability in [0, 1] or `val_fpr`; anything else is a config error."""
    number = isinstance(threshold, int | float) and not isinstance(threshold, bool)
    if threshold != VAL_FPR and not (number and 0.0 <= threshold <= 1.0):
        raise ConfigError(
            f"threshold must be in [0, 1], or {VAL_FPR} (the checkpoint's validation threshold) (got {threshold})"
        )


def threshold_source(threshold: Any) -> str:
    """Where the run's threshold came from, as its JSON/Parquet metadata says."""
    return "validation" if threshold == VAL_FPR else "given"


def resolve_threshold(threshold: Any, loaded: Sequence[LoadedDetector], calibrated: bool, tta: str) -> float:
    """`threshold` as given, or for `val_fpr` the checkpoint's validation threshold on the probabilities this
    run reports (divided by its temperature when `calibrated`)."""
    if threshold != VAL_FPR:
        return float(threshold)
    if len(loaded) > 1:
        raise ConfigError(
            f"threshold={VAL_FPR} needs one checkpoint: each member's validation threshold is for its own "
            "probabilities, not the ensemble's mean; pass threshold=<a probability>"
        )
    detector = loaded[0]
    point = detector.operating_point
    if point is None:
        raise UserError(
            f"{detector.path} holds no validation threshold (trained before eval.target_fpr existed, with "
            "eval.target_fpr=null, or with too few real validation images); pass threshold=<a probability>"
        )
    temperature = detector.temperature if calibrated else None
    value = threshold_of(point, temperature)
    log.info(
        "threshold %.4f: the validation threshold for FPR %g (validation FPR %.4f, TPR %.4f on %d images)",
        value, point["target_fpr"], point.get("fpr", math.nan), point.get("tpr", math.nan),
        point.get("images", 0),
    )  # fmt: skip
    if point.get("tta", tta) != tta:
        log.warning(
            "the validation threshold was chosen with tta=%s and this run scores with tta=%s: its FPR may differ",
            point.get("tta"), tta,
        )  # fmt: skip
    return value
