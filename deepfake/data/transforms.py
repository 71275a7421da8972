"""torchvision v2 transforms on uint8 tensors; scaling and normalisation happen later, on the device."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.transforms import v2


def train_transform(
    img_size: int, hflip: bool = True, crop_scale: Sequence[float] = (0.8, 1.0)
) -> v2.Compose:
    """Face-safe crop (keeps most of the face) plus flip; output stays uint8 (3, img_size, img_size)."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(img_size, scale=tuple(crop_scale), ratio=(0.9, 1.1), antialias=True)
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def eval_transform(img_size: int) -> v2.Compose:
    return v2.Compose([v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size)])
