"""Fusing input streams into a timm backbone: early (stacked channels into a widened first conv) or late
(one backbone per stream, features concatenated before the head).

Either way the result quacks like a timm backbone (`num_features`, `pretrained_cfg`, `forward`,
`forward_features`/`forward_head` for early fusion), so `DeepfakeDetector` wraps it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.models import adapt_input_conv
from torch import nn

from deepfake.choices import FUSIONS
from deepfake.errors import ConfigError
from deepfake.model.streams import CHANNELS, Stem


def check_streams(streams: Sequence[str], fusion: str) -> list[str]:
    """The streams as a list with rgb first, refused unless known, unique and paired with a known fusion."""
    streams = list(streams)
    unknown = [s for s in streams if s not in CHANNELS]
    if unknown or not streams or streams[0] != "rgb" or len(set(streams)) != len(streams):
        raise ConfigError(
            f"model.streams={streams} is not valid: give rgb first, then any of srm, dct once each "
            "(e.g. model.streams=[rgb,srm,dct])"
        )
    if fusion not in FUSIONS:
        raise ConfigError(f"model.fusion={fusion!r} is not one of {', '.join(FUSIONS)}")
    return streams


def first_conv(backbone: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """The parent module, attribute name and layer of a timm backbone's first convolution."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    path = cfg.get("first_conv")
    try:
        conv = backbone.get_submodule(path) if path else None
    except AttributeError:
        conv = None
    if not isinstance(conv, nn.Conv2d):
        name = cfg.get("architecture", type(backbone).__name__)
        raise ConfigError(
            f"model.streams needs a backbone whose first layer is a convolution timm names, and {name} has "
            "none; use model.streams=[rgb] or another model.architecture"
        )
    parent, _, attr = path.rpartition(".")
    return backbone.get_submodule(parent) if parent else backbone, attr, conv


def widen_stem(backbone: nn.Module, in_chans: int, rgb_first: bool) -> None:
    """Give the first conv `in_chans` inputs. `rgb_first`: the RGB weights stay on channels 0-2 and the new
    channels start at zero (the widened model starts as the RGB one); else timm's `adapt_input_conv`
    spreads the RGB weights over all channels (a non-RGB stream's own backbone)."""
    parent, attr, conv = first_conv(backbone)
    wide = nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, conv.bias is not None, conv.padding_mode,
    )  # fmt: skip
    with torch.no_grad():
        if rgb_first:
            wide.weight.zero_()
            wide.weight[:, : conv.in_channels].copy_(conv.weight)
        else:
            wide.weight.copy_(adapt_input_conv(in_chans, conv.weight))
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    setattr(parent, attr, wide.to(conv.weight.device))


class EarlyFusion(nn.Module):
    """RGB plus each stream's stem output, stacked on the channel axis into one widened backbone."""

    def __init__(self, backbone: nn.Module, streams: Sequence[str]) -> None:
        super().__init__()
        self.streams = list(streams)
        self.stems = nn.ModuleList(Stem(s) for s in self.streams[1:])
        widen_stem(backbone, sum(CHANNELS[s] for s in self.streams), rgb_first=True)
        self.backbone = backbone
        self.num_features = backbone.num_features
        self.pretrained_cfg = backbone.pretrained_cfg

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, *(stem(x).to(x.dtype) for stem in self.stems)], 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self.stack(x))

    def forward_intermediates(self, x: torch.Tensor, **kwargs: Any) -> Any:
        return self.backbone.forward_intermediates(self.stack(x), **kwargs)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.stack(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def __getattr__(self, name: str) -> Any:
        """Backbone attributes the detector reads (`feature_info`) pass through."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("backbone"), name)


class LateFusion(nn.Module):
    """One backbone per stream (RGB's as built, the others behind their stems); pooled features concatenated."""

    def __init__(
        self, rgb: nn.Module, make_backbone: Callable[[], nn.Module], streams: Sequence[str]
    ) -> None:
        super().__init__()
        self.streams = list(streams)
        self.stems = nn.ModuleList(Stem(s) for s in self.streams[1:])
        backbones = [rgb, *(make_backbone() for _ in self.streams[1:])]
        for backbone, stream in zip(backbones[1:], self.streams[1:], strict=True):
            widen_stem(backbone, CHANNELS[stream], rgb_first=False)
        self.backbones = nn.ModuleList(backbones)
        self.num_features = sum(b.num_features for b in backbones)
        self.pretrained_cfg = backbones[0].pretrained_cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = [x, *(stem(x).to(x.dtype) for stem in self.stems)]
        return torch.cat([b(i) for b, i in zip(self.backbones, inputs, strict=True)], 1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for b in self.backbones:
            b.set_grad_checkpointing(enable)
