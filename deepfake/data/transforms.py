"""torchvision v2 transforms on uint8 tensors; scaling and normalisation happen later, on the device."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from deepfake.data.augment import build_augment

#: `data.format_align`'s JPEG quality: UnbiasedGenImage re-encodes reals and fakes alike so that a detector cannot
#: learn the format (GenImage's reals are ImageNet JPEGs, its fakes PNGs).
ALIGN_QUALITY = {"jpeg95": 95}


def train_transform(
    img_size: int, hflip: bool = True, crop_scale: Sequence[float] = (0.8, 1.0), **augment: Any
) -> v2.Compose:
    """The configured training augmentations (see `deepfake.data.augment`); output uint8 (3, S, S)."""
    return build_augment(img_size, {"hflip": hflip, "crop_scale": crop_scale, **augment})


def eval_transform(img_size: int, geometry: str = "resize") -> v2.Compose:
    """The evaluation geometry: `resize` brings any image to S x S (decoded crops already are); `crop` takes the
    centre S x S crop without resizing, zero-padded where the image is smaller (`data.geometry`)."""
    if geometry == "crop":
        return v2.Compose([v2.CenterCrop(img_size)])
    return v2.Compose([v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size)])


def format_aligner(format_align: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The re-encoding `data.format_align` applies to each decoded image (uint8 (3, H, W)), or None."""
    quality = ALIGN_QUALITY.get(format_align)
    if quality is None:
        return None
    return _JpegAlign(quality)


class _JpegAlign:
    """Re-encode as JPEG at a fixed quality (a class, not a lambda, so spawned loader workers can pickle it)."""

    def __init__(self, quality: int) -> None:
        self.quality = quality

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return TF.jpeg(image, quality=self.quality)
