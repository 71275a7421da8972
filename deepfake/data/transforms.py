"""torchvision v2 transforms on uint8 tensors; scaling and normalisation happen later, on the device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision.transforms import v2

from deepfake.data.augment import build_augment


def train_transform(
    img_size: int, hflip: bool = True, crop_scale: Sequence[float] = (0.8, 1.0), **augment: Any
) -> v2.Compose:
    """The configured training augmentations (see `deepfake.data.augment`); output uint8 (3, S, S)."""
    return build_augment(img_size, {"hflip": hflip, "crop_scale": crop_scale, **augment})


def eval_transform(img_size: int) -> v2.Compose:
    return v2.Compose([v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size)])
