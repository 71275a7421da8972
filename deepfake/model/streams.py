"""Input streams beside RGB: the SRM noise residuals and F3Net's frequency bands, each with its own stem.

`srm`: the three fixed 5x5 high-pass kernels of the Spatial Rich Model (Fridrich & Kodovsky 2012) as the
RGB-N detector (Zhou et al., CVPR 2018) and DeepfakeBench's SRM detector use them: every output channel
sums one kernel over the three colour channels, truncated to [-3, 3].

`dct`: F3Net's Frequency-Aware Decomposition (Qian et al., ECCV 2020): the image's 2-D DCT is split by
anti-diagonal bands (low: i + j <= S/2.82, middle: S/2.82..S/2, high: S/2..2S, and all), each band goes
back through the inverse DCT, giving 4 x 3 channels. The bands are F3Net's fixed base masks, without its
learnable per-pixel residuals, so one filter serves any input size (the loader's size is set after the
model is built) and the stream's learning happens in its stem and backbone.

Both filters run in fp32 with autocast off: a bf16 DCT of a 224 px image loses the high band to rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Stream name (`deepfake.choices.STREAMS`) -> channels its stem emits.
CHANNELS: dict[str, int] = {"rgb": 3, "srm": 3, "dct": 12}

SRM_KERNELS = (
    [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
    [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
)
SRM_SCALES = (4.0, 12.0, 2.0)
SRM_CLIP = 3.0


def _fp32(x: torch.Tensor) -> tuple[torch.Tensor, torch.autocast]:
    return x.float(), torch.autocast(device_type=x.device.type, enabled=False)


class SRMFilter(nn.Module):
    """(N, 3, H, W) -> (N, 3, H, W): the three SRM residuals, each summed over the colour channels."""

    def __init__(self) -> None:
        super().__init__()
        kernels = torch.tensor(SRM_KERNELS, dtype=torch.float32) / torch.tensor(SRM_SCALES).view(3, 1, 1)
        self.register_buffer("kernel", kernels[:, None].expand(3, 3, 5, 5).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, no_autocast = _fp32(x)
        with no_autocast:
            return F.conv2d(x, self.kernel, padding=2).clamp_(-SRM_CLIP, SRM_CLIP)


def dct_matrix(size: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (size x size): D @ x @ D.T is the 2-D DCT of x."""
    i = torch.arange(size, dtype=torch.float64)[:, None]
    j = torch.arange(size, dtype=torch.float64)[None, :]
    d = torch.cos((j + 0.5) * math.pi * i / size) * math.sqrt(2.0 / size)
    d[0] = math.sqrt(1.0 / size)
    return d.float()


def band_masks(size: int) -> torch.Tensor:
    """F3Net's four (size x size) band masks: 1 where start <= i + j <= end (low, middle, high, all)."""
    limits = ((0, size // 2.82), (size // 2.82, size // 2), (size // 2, size * 2), (0, size * 2))
    s = torch.arange(size)[:, None] + torch.arange(size)[None, :]
    return torch.stack([((s >= lo) & (s <= hi)).float() for lo, hi in limits])


class FADFilter(nn.Module):
    """(N, 3, S, S) -> (N, 12, S, S): each colour channel's low, middle, high and full DCT bands, back in space."""

    def __init__(self) -> None:
        super().__init__()
        self._tables: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The DCT matrix and band masks for one size, made once per size and device."""
        key = (size, device)
        if key not in self._tables:
            self._tables[key] = (dct_matrix(size).to(device), band_masks(size).to(device))
        return self._tables[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"the dct stream takes square inputs, got {tuple(x.shape[-2:])}")
        x, no_autocast = _fp32(x)
        dct, masks = self.tables(x.shape[-1], x.device)
        with no_autocast:
            freq = dct @ x @ dct.T  # (N, 3, S, S)
            bands = freq[:, None] * masks[None, :, None]  # (N, 4, 3, S, S)
            return (dct.T @ bands @ dct).flatten(1, 2)


class Stem(nn.Module):
    """One stream's own stem: its filter, then a BatchNorm that brings the filter's range to the RGB's."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.filter: nn.Module = SRMFilter() if name == "srm" else FADFilter()
        self.norm = nn.BatchNorm2d(CHANNELS[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.filter(x))
