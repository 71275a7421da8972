"""The one callable a video's crops are scored through: uint8 crops in, fake probabilities out, on the device.

Prediction code calls only this, so flip TTA, temperatures and ensembles (`deepfake.evaluation.ensemble.Ensemble`,
which is such a callable) apply to videos exactly as to images. A clip model scores a whole video at once:
`clip_scorer` adapts it to the same contract.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from deepfake.data.clips import clip_positions

#: uint8 (N, 3, S, S) crops on the device -> float32 (N,) probabilities of fake on the device.
Scorer = Callable[[torch.Tensor], torch.Tensor]


def clip_scorer(score: Scorer, frames: int) -> Scorer:
    """Score one video's crops (all of them, in temporal order) as a clip of `frames` evenly spaced ones, as
    training sampled them (fewer are repeated in order); every crop gets the clip's probability, so any
    aggregation over faces and frames returns it unchanged."""

    def run(crops: torch.Tensor) -> torch.Tensor:
        clip = crops[clip_positions(len(crops), frames)].unsqueeze(0)  # (1, T, 3, S, S)
        return score(clip).reshape(1).expand(len(crops))

    return run
