"""Training augmentations on uint8 (3, H, W) tensors, built from `data.augment.*`, each switched on alone.

The standard ones (face-safe random resized crop, flip, colour jitter) plus the deepfake-robustness ones
(JPEG re-compression, Gaussian blur, downscale-then-upscale, Gaussian noise, grayscale, cutout) that mimic
how fakes are laundered on the web. All are torchvision v2 ops on tensors, so they run unchanged on the CPU
in loader workers or on the GPU after `data.decode=gpu`; randomness comes from torch's generator, which the
dataset seeds per sample from (seed, epoch, index).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from deepfake.config import AugmentConfig
from deepfake.errors import ConfigError

_DEFAULTS: dict[str, Any] = asdict(AugmentConfig())


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


class FaceCrop(v2.RandomResizedCrop):
    """Random resized crop (near-square, keeping most of the face) plus an optional horizontal flip.

    One transform instead of two: the pair runs on every training image, and each v2 dispatch costs about
    as much as the flip itself, which shows on a decoded-cache loader.
    """

    def __init__(self, size: int, scale: Sequence[float], flip: bool) -> None:
        super().__init__(size, scale=tuple(scale), ratio=(0.9, 1.1), antialias=True)
        self.flip = flip

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {**super().make_params(flat_inputs), "flip": self.flip and bool(torch.rand(()) < 0.5)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, {k: v for k, v in params.items() if k != "flip"})
        return TF.horizontal_flip(out) if params["flip"] else out


class RandomJpeg(v2.Transform):
    """Re-encode as JPEG at a quality drawn from [lo, hi]; on CUDA via nvjpeg both ways."""

    def __init__(self, quality: Sequence[int]) -> None:
        super().__init__()
        self.quality = (int(quality[0]), int(quality[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"quality": int(torch.randint(self.quality[0], self.quality[1] + 1, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if inpt.device.type == "cuda":  # decode_jpeg takes CPU bytes only, even when it decodes on the GPU
            data = encode_jpeg(inpt.contiguous(), quality=params["quality"]).cpu()
            return decode_jpeg(data, device=inpt.device)
        return TF.jpeg(inpt, quality=params["quality"])


class Downscale(v2.Transform):
    """Resize down by a factor from `scale`, then back up: the blur-and-alias of low-resolution uploads."""

    def __init__(self, scale: Sequence[float]) -> None:
        super().__init__()
        self.scale = (float(scale[0]), float(scale[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"factor": _uniform(*self.scale)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        h, w = inpt.shape[-2:]
        small = [max(1, round(h * params["factor"])), max(1, round(w * params["factor"]))]
        down = TF.resize(inpt, small, antialias=True)
        return TF.resize(down, [h, w], interpolation=v2.InterpolationMode.BILINEAR, antialias=False)


class RandomGaussianNoise(v2.Transform):
    """Additive Gaussian noise whose standard deviation (in 0-255 levels) is drawn from `sigma`."""

    def __init__(self, sigma: Sequence[float]) -> None:
        super().__init__()
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"sigma": _uniform(*self.sigma) / 255.0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.gaussian_noise(inpt, sigma=params["sigma"], clip=True)


def _range(name: str, value: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    if len(value) != 2 or not lo <= value[0] <= value[1] <= hi:
        raise ConfigError(
            f"data.augment.{name} must be [low, high] with {lo} <= low <= high <= {hi} (got {list(value)})"
        )
    return float(value[0]), float(value[1])


def augment_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """`options` over the schema's defaults, so Python callers may give only what they change."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown data.augment key(s) {', '.join(unknown)}; known: {', '.join(_DEFAULTS)}")
    return {
        k: {**v, **(options.get(k) or {})} if isinstance(v, dict) else options.get(k, v)
        for k, v in _DEFAULTS.items()
    }


def _on(options: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    section = options[name]
    if not section["enabled"]:
        return None
    p = float(section["p"])
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"data.augment.{name}.p must be in [0, 1] (got {p})")
    return section


def _maybe(transform: v2.Transform, p: float) -> v2.Transform:
    return transform if p >= 1.0 else v2.RandomApply([transform], p=p)


def build_augment(img_size: int, options: Mapping[str, Any] | None = None) -> v2.Compose:
    """The training pipeline as configured: uint8 (3, S, S) in, uint8 (3, img_size, img_size) out."""
    o = augment_options(options)
    steps: list[v2.Transform] = []
    if o["crop"]:
        steps.append(FaceCrop(img_size, _range("crop_scale", o["crop_scale"], 0.01, 1.0), flip=o["hflip"]))
    else:
        steps.append(v2.Resize([img_size, img_size], antialias=True))
        if o["hflip"]:
            steps.append(v2.RandomHorizontalFlip())
    if c := _on(o, "color_jitter"):
        jitter = v2.ColorJitter(c["brightness"], c["contrast"], c["saturation"], c["hue"])
        steps.append(_maybe(jitter, c["p"]))
    if c := _on(o, "grayscale"):
        steps.append(v2.RandomGrayscale(p=c["p"]))
    if c := _on(o, "blur"):
        sigma = _range("blur.sigma", c["sigma"], 0.01, 50.0)
        kernel = 2 * math.ceil(3 * sigma[1]) + 1
        steps.append(_maybe(v2.GaussianBlur(kernel, sigma=sigma), c["p"]))
    if c := _on(o, "downscale"):
        steps.append(_maybe(Downscale(_range("downscale.scale", c["scale"], 0.05, 1.0)), c["p"]))
    if c := _on(o, "noise"):
        steps.append(_maybe(RandomGaussianNoise(_range("noise.sigma", c["sigma"], 0.0, 255.0)), c["p"]))
    if c := _on(o, "jpeg"):
        lo, hi = _range("jpeg.quality", c["quality"], 1, 100)
        steps.append(_maybe(RandomJpeg((int(lo), int(hi))), c["p"]))
    if c := _on(o, "cutout"):
        area = _range("cutout.scale", c["scale"], 0.001, 1.0)
        steps.append(v2.RandomErasing(p=c["p"], scale=area, ratio=(0.5, 2.0), value=0))
    return v2.Compose(steps)
