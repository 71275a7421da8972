"""The one callable a video's crops are scored through: uint8 crops in, fake probabilities out, on the device.

Prediction code calls only this, so an ensemble or test-time augmentation can replace it without touching the
video path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms.v2 import functional as F

from deepfake.evaluation.inference import LoadedDetector
from deepfake.system.precision import Precision

#: uint8 (N, 3, S, S) crops on the device -> float32 (N,) probabilities of fake on the device.
Scorer = Callable[[torch.Tensor], torch.Tensor]


def crop_scorer(loaded: LoadedDetector, precision: Precision, device: torch.device) -> Scorer:
    """Score crops of any size S with `loaded`: resized on the device to its input size (antialiased, as a
    downscale in the training loaders is), under `precision`'s autocast, sigmoid of the logit."""
    model = loaded.model.to(device).eval()
    size = loaded.img_size

    @torch.no_grad()
    def score(batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[-2:] != (size, size):
            batch = F.resize(batch, [size, size], antialias=True)
        with precision.autocast():
            logits = model(batch)
        return torch.sigmoid(logits.float()).reshape(-1)

    return score
