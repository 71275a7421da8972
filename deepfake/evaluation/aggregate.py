"""Face and frame probabilities to one score: the aggregation rules evaluate.py and predict.py share.

Pure numpy, no state. Over the faces of one frame: `max` (SBI's protocol: a frame is as fake as its most
suspicious face) or `mean`. Over the frames of one video: `mean`, `max`, `median`, `topk` (the mean of the k
highest) or `confident` (the DFDC winner's rule, below).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfake.choices import FACE_AGGREGATION, VIDEO_AGGREGATION

TOPK = 5  # frames averaged by `topk` unless told otherwise
#: The DFDC winner's constants (for 32 frames a video): the fake and real sides of the confidence band, the
#: share of frames beyond the fake side (count > n // 2.5) and the least such count (> 11), and the share beyond
#: the real side (> 0.9 n).
CONFIDENT_FAKE, CONFIDENT_REAL = 0.8, 0.2
CONFIDENT_FAKE_DIVISOR, CONFIDENT_MIN_FAKES, CONFIDENT_REAL_SHARE = 2.5, 11, 0.9


def over_faces(probs: Sequence[float] | np.ndarray, mode: str = "max") -> float:
    """One frame's probability from its faces' probabilities."""
    p = _checked(probs, mode, FACE_AGGREGATION)
    return float(p.max() if mode == "max" else p.mean())


def over_frames(probs: Sequence[float] | np.ndarray, mode: str = "mean", k: int = TOPK) -> float:
    """One video's probability from its frames' probabilities."""
    p = _checked(probs, mode, VIDEO_AGGREGATION)
    if mode == "mean":
        return float(p.mean())
    if mode == "max":
        return float(p.max())
    if mode == "median":
        return float(np.median(p))
    if mode == "topk":
        if k <= 0:
            raise ValueError(f"topk needs k > 0 (got {k})")
        return float(np.sort(p)[-k:].mean())
    return confident(p)


def confident(p: np.ndarray) -> float:
    """Selim Seferbekov's `confident_strategy` (1st place, DFDC 2020; github.com/selimsef/dfdc_deepfake_challenge,
    docs/prediction.md, Aggregation): when more than n // 2.5 frames, and more than 11, lie above 0.8, the mean
    of those; else when more than 0.9 n frames lie below 0.2, the mean of those; else the plain mean."""
    fakes = p[p > CONFIDENT_FAKE]
    if len(fakes) > len(p) // CONFIDENT_FAKE_DIVISOR and len(fakes) > CONFIDENT_MIN_FAKES:
        return float(fakes.mean())
    reals = p[p < CONFIDENT_REAL]
    if len(reals) > CONFIDENT_REAL_SHARE * len(p):
        return float(reals.mean())
    return float(p.mean())


def _checked(probs: Sequence[float] | np.ndarray, mode: str, modes: tuple[str, ...]) -> np.ndarray:
    if mode not in modes:
        raise ValueError(f"aggregation {mode!r} is not one of {', '.join(modes)}")
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if not len(p):
        raise ValueError("nothing to aggregate: no probabilities")
    return p
