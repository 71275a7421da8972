"""Flip test-time augmentation (`tta=flip`): the mean of the probabilities of an image and of its mirror.

The mean is taken of probabilities, not logits, as the DFDC solutions did; it is returned as the logit of that
mean, so a temperature or a logit-space ensemble can act on it like on any logit. Validation in training,
`evaluate.py` and `predict.py` all score through `tta_logits`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepfake.choices import TTA


def tta_logits(model: nn.Module, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """The model's float32 logits of uint8 `images` (N, 3, S, S); with `flip`, the logit of the mean probability."""
    logits = model(images).float()
    if tta == "none":
        return logits
    if tta != "flip":
        raise ValueError(f"tta={tta!r} is not one of {', '.join(TTA)}")
    mirrored = model(images.flip(-1)).float()
    return mean_probability_logit(torch.stack([logits, mirrored]))


def mean_probability_logit(logits: torch.Tensor) -> torch.Tensor:
    """logit(mean over dim 0 of sigmoid(logits)), computed in log space so that saturated logits stay finite.

    log(mean p) - log(mean (1 - p)) with log p = logsigmoid(z) and log(1 - p) = logsigmoid(-z); the 1/n cancels.
    """
    return torch.logsumexp(F.logsigmoid(logits), 0) - torch.logsumexp(F.logsigmoid(-logits), 0)
