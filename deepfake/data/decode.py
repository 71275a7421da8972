"""Image decoding: the canonical uint8 crop on the CPU, or JPEG bytes decoded in batches on the GPU.

Every path yields the same canonical form, a centre-cropped S x S uint8 image, so the caches, the
augmentations and SBI never care where the pixels came from. With `data.decode=gpu` the workers only read
file bytes; `decode_payloads` decodes a whole batch with nvjpeg (`deepfake.data.device_loader` drives it),
which frees the two CPU cores of a Colab-like machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from deepfake.data.samples import JPEG_EXTENSIONS
from deepfake.errors import DataError


def decode_file(path: str, size: int | None) -> torch.Tensor:
    """Decode to uint8 (3, H, W); with a size, centre-crop to a square and resize to size x size.

    PIL decodes (every format; large JPEGs at a reduced DCT scale that still covers `size`), torch resizes:
    its uint8 kernel is several times faster than PIL's resampling.
    """
    try:
        with Image.open(path) as im:
            if size:
                im.draft("RGB", (size, size))
            array = rgb_array(im)
    except Exception as e:  # a corrupt file must stop the run by name, never be replaced silently
        raise DataError(
            f"cannot read image {path}: {e}. Fix or remove it (its manifest row or file) and run again."
        ) from None
    image = torch.from_numpy(array).permute(2, 0, 1)
    return fit(image, size) if size else image


# PIL's integer modes: 16-bit PNGs open as I;16 (I in older Pillow). convert("RGB") clips them at 255, so
# anything above 0 would turn white; they are scaled to 8 bits instead.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def rgb_array(im: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) pixels of an open image; 16-bit greys are scaled (65535 -> 255), not clipped."""
    if im.mode == "RGB":
        return np.array(im)
    if im.mode in WIDE_MODES:
        wide = np.asarray(im).astype(np.uint32)
        grey = ((wide * 255 + 32767) // 65535).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))


def read_payload(path: str, size: int | None) -> torch.Tensor:
    """For device decoding: a JPEG's raw bytes (1-D uint8), or any other format decoded here (3-D)."""
    if os.path.splitext(path)[1].lower() in JPEG_EXTENSIONS:
        try:
            with open(path, "rb") as f:
                return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
    return decode_file(path, size)


def fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop (3, H, W) to a square and resize it to size x size: `decode_file`'s geometry, in torch."""
    h, w = image.shape[-2:]
    side = min(h, w)
    if side != h or side != w:
        image = TF.center_crop(image, [side, side])
    return resize(image, size) if side != size else image


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 (3, h, w) to (3, size, size), channels-last on the CPU.

    PyTorch's vectorised uint8 kernel needs a channels-last contiguous input: copying a crop into that
    layout first makes the resize twice as fast as on the planar layout (50 vs 110 us at 224 px), and the
    loader's batch buffers are channels-last too, so the result is stored without a transpose.
    """
    if image.device.type != "cpu":
        return TF.resize(image, [size, size], antialias=True)
    # Through HWC so the batch stride is H*W*3: `unsqueeze(0)` of a (3, h, w) view of HWC pixels gives a
    # stride-3 batch dimension, which PyTorch does not recognise as channels-last (slow planar kernel).
    x = image.permute(1, 2, 0).unsqueeze(0).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def decode_payloads(payloads: Sequence[torch.Tensor], size: int, device: torch.device) -> list[torch.Tensor]:
    """Decode the JPEG byte payloads of a batch in one call on `device`; decoded ones are just moved."""
    jpegs = [i for i, p in enumerate(payloads) if p.dim() == 1]
    out: list[torch.Tensor] = [p.to(device, non_blocking=True) if p.dim() == 3 else p for p in payloads]
    if jpegs:
        decoded = decode_jpeg([payloads[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
        for i, image in zip(jpegs, decoded, strict=True):
            out[i] = fit(image, size)
    return out
