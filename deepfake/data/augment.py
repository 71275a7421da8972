"""Training augmentations on uint8 (3, H, W) tensors, built from `data.augment.*`, each switched on alone.

The standard ones (face-safe random resized crop, flip, colour jitter) plus the deepfake-robustness ones
(JPEG re-compression, Gaussian blur, downscale-then-upscale, Gaussian noise, grayscale, cutout) that mimic
how fakes are laundered on the web. All are torchvision v2 ops on tensors, so they run unchanged on the CPU
in loader workers or on the GPU after `data.decode=gpu`; randomness comes from torch's generator, which the
dataset seeds per sample from (seed, epoch, index). `perturb` (the robustness protocol's perturbations,
`deepfake.perturbations`) is numpy code and runs on the CPU only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from deepfake.config import AugmentConfig
from deepfake.data.decode import resize
from deepfake.errors import ConfigError
from deepfake.perturbations.protocol import frame_rng, perturb_single, settings

_DEFAULTS: dict[str, Any] = asdict(AugmentConfig())
# Cutout hides pixels but not the blend behind them: its blend mask (model.mask_head) rightly passes through.
warnings.filterwarnings("ignore", message=r"RandomErasing\(\) is currently passing through inputs of type")


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


class FaceCrop(v2.Transform):
    """Random resized crop (near-square, keeping most of the face) plus an optional horizontal flip.

    The sampling is torchvision's RandomResizedCrop (area share from `scale`, log-uniform aspect ratio, ten
    tries, then a centred fallback), written out because it runs on every training image: the generic v2
    dispatch of a crop and a flip cost about 50 us per image, as much as the resize on a decoded cache.
    """

    def __init__(
        self, size: int, scale: Sequence[float], flip: bool, ratio: Sequence[float] = (0.9, 1.1)
    ) -> None:
        super().__init__()
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip = flip

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) == 1 and type(inputs[0]) is torch.Tensor:  # the loaders' case: skip v2's input parsing
            image = inputs[0]
            return self.transform(image, self.box(*image.shape[-2:]))
        return super().forward(*inputs)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next(i for i in flat_inputs if isinstance(i, torch.Tensor))
        return self.box(*TF.get_size(image))

    def box(self, height: int, width: int) -> dict[str, Any]:
        """The crop (top, left, height, width) and the flip, from one draw of torch's generator."""
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        draws = torch.rand(10, 5).tolist()
        for a, r, t, u, _ in draws:
            area = height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * a)
            aspect = math.exp(lo + (hi - lo) * r)
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(t * (height - h + 1)), int(u * (width - w + 1))
                break
        else:  # no sample fitted: the whole image, trimmed to the ratio range, centred
            w, h = width, height
            if width / height < self.ratio[0]:
                h = round(width / self.ratio[0])
            elif width / height > self.ratio[1]:
                w = round(height * self.ratio[1])
            top, left = (height - h) // 2, (width - w) // 2
        return {"top": top, "left": left, "height": h, "width": w, "flip": self.flip and draws[0][4] < 0.5}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        top, left, h, w = params["top"], params["left"], params["height"], params["width"]
        if type(inpt) is torch.Tensor or isinstance(inpt, tv_tensors.Image):
            out = resize(inpt[..., top : top + h, left : left + w], self.size)
            return out.flip(-1) if params["flip"] else out
        out = self._call_kernel(
            TF.resized_crop, inpt, top, left, h, w, [self.size, self.size], antialias=True
        )
        return self._call_kernel(TF.horizontal_flip, out) if params["flip"] else out


class RandomJpeg(v2.Transform):
    """Re-encode as JPEG at a quality drawn from [lo, hi]; on CUDA via nvjpeg both ways."""

    def __init__(self, quality: Sequence[int]) -> None:
        super().__init__()
        self.quality = (int(quality[0]), int(quality[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"quality": int(torch.randint(self.quality[0], self.quality[1] + 1, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):  # a blend mask (model.mask_head) follows geometry only
            return inpt
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
        if isinstance(inpt, tv_tensors.Mask):
            return inpt
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
        if isinstance(inpt, tv_tensors.Mask):
            return inpt
        # Drawn in a fixed (planar) order, not `randn_like`'s memory order: the same seed must give the same
        # noise whether an image arrives planar or channels-last (decoded vs cached).
        noise = torch.randn(inpt.shape, device=inpt.device) * (params["sigma"] * 255)
        return (inpt + noise.to(torch.int16)).clamp_(0, 255).to(torch.uint8)


class Perturb(v2.Transform):
    """One of the robustness protocol's perturbations (`deepfake.perturbations`): a (type, level) drawn
    uniformly from `types` x `levels`, as DeeperForensics' `--type random --level random` does, applied at
    the image's canonical size before any other augmentation. VC encodes the image as a one-frame H.264 clip
    (an intra frame). The numpy generator is seeded from torch's, so the sample's seed fixes every draw."""

    def __init__(self, types: Sequence[str], levels: Sequence[int]) -> None:
        super().__init__()
        self.settings = settings(types, levels, key="data.augment.perturb")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        pick, seed = torch.randint(len(self.settings), ()), torch.randint(2**62, ())
        return {"setting": self.settings[int(pick)], "seed": int(seed)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):  # the blend mask follows geometry only
            return inpt
        if inpt.device.type != "cpu":
            raise ConfigError("data.augment.perturb runs on the CPU: use it with data.decode=cpu")
        out = perturb_single(
            params["setting"], inpt.permute(1, 2, 0).numpy(), frame_rng(params["seed"], "", 0)
        )
        image = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)
        return tv_tensors.wrap(image, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else image


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


def build_augment(
    img_size: int, options: Mapping[str, Any] | None = None, geometry: str = "resize"
) -> v2.Compose:
    """The training pipeline as configured: uint8 (3, S, S) in, uint8 (3, img_size, img_size) out.

    With `geometry="crop"` (`data.geometry`) images arrive at their own size and the geometric step is a plain
    random crop at `img_size`, zero-padded where the image is smaller, never resized: resampling would erase
    the upsampling traces of generated images; `crop` and `crop_scale` then do not apply.
    """
    o = augment_options(options)
    steps: list[v2.Transform] = []
    if c := _on(o, "perturb"):  # first: the protocol perturbs whole frames, before any crop
        steps.append(_maybe(Perturb(c["types"], c["levels"]), c["p"]))
    if geometry == "crop":
        steps.append(v2.RandomCrop(img_size, pad_if_needed=True))
        if o["hflip"]:
            steps.append(v2.RandomHorizontalFlip())
    elif o["crop"]:
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
