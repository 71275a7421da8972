"""The layer Grad-CAM reads in a detector, and how its output becomes a (N, C, h, w) map, per model family.

Defaults (`default_layer`), each a module path inside the `DeepfakeDetector`:
- CNNs: the last stage timm lists in `feature_info` (`backbone.layer4`, `backbone.stages.3`, `backbone.blocks.6`);
- ViTs (and DeiT, EVA...: a backbone with `num_prefix_tokens`): `norm1` of the last block, whose tokens the
  class token still attends to (after the last block only the pooled token reaches the head, so the patch
  tokens would get no gradient); the prefix tokens are dropped and the rest laid on the backbone's real
  patch grid (`patch_embed.grid_size`: 4 x 4 at 64 px, not an assumed 14 x 14);
- Swin (timm's `output_fmt == "NHWC"`): `norm1` of the last block of the last stage, its (N, H, W, C) map
  moved to (N, C, H, W);
- input streams: the fused backbone under early fusion, the RGB branch under late fusion (the branch a
  person can read a heatmap on);
- clip models: the shared backbone; each frame gets its own map (`deepfake.explain.cam`).

A detector's `explain_layer` (`model.explain_layer` in its config) replaces the default, and the command line's
layer key replaces both; the reshape follows the family of the backbone the layer sits in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from deepfake.errors import ConfigError

Reshape = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CamTarget:
    path: str  # module path inside the detector, e.g. backbone.layer4
    module: nn.Module
    reshape: Reshape | None  # the layer's output -> (N, C, h, w); None: it already is one
    family: str  # cnn | vit | swin


class TokensToGrid:
    """(N, prefix + h*w, C) tokens -> (N, C, h, w): the prefix (class, distillation, register) tokens dropped."""

    def __init__(self, prefix: int, grid: tuple[int, int]) -> None:
        self.prefix, self.grid = prefix, grid

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            return x
        h, w = self.grid
        if x.shape[1] != self.prefix + h * w:
            raise ValueError(
                f"the layer gives {x.shape[1]} tokens, not {self.prefix} prefix + {h}x{w} patch tokens"
            )
        return x[:, self.prefix :].reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def nhwc_to_nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x


def family(backbone: nn.Module) -> str | None:
    """cnn, vit or swin for a timm backbone (by the attributes timm gives them), else None."""
    if (
        hasattr(backbone, "num_prefix_tokens")
        and hasattr(backbone, "patch_embed")
        and hasattr(backbone, "blocks")
    ):
        return "vit"
    if getattr(backbone, "output_fmt", None) == "NHWC" and hasattr(backbone, "layers"):
        return "swin"
    if getattr(backbone, "feature_info", None):
        return "cnn"
    return None


def reshape_for(backbone: nn.Module) -> Reshape | None:
    kind = family(backbone)
    if kind == "vit":
        return TokensToGrid(int(backbone.num_prefix_tokens), tuple(backbone.patch_embed.grid_size))
    return nhwc_to_nchw if kind == "swin" else None


def main_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    """The timm backbone a heatmap is read from, and its path: the fused one (early fusion), the RGB branch
    (late fusion), else the detector's own."""
    backbone = model.backbone
    if "backbones" in backbone._modules:  # LateFusion: one backbone per stream, RGB first
        return "backbone.backbones.0", backbone.backbones[0]
    if "stems" in backbone._modules and "backbone" in backbone._modules:  # EarlyFusion: one widened backbone
        return "backbone.backbone", backbone.backbone
    return "backbone", backbone


def default_layer(model: nn.Module) -> str | None:
    """The family's target layer (module docstring), or None when the backbone is of no known family."""
    prefix, backbone = main_backbone(model)
    kind = family(backbone)
    if kind == "vit":
        return f"{prefix}.blocks.{len(backbone.blocks) - 1}.norm1"
    if kind == "swin":
        stage = backbone.layers[-1]
        return f"{prefix}.layers.{len(backbone.layers) - 1}.blocks.{len(stage.blocks) - 1}.norm1"
    if kind == "cnn":
        return f"{prefix}.{backbone.feature_info[-1]['module']}"
    return None


def find_module(model: nn.Module, path: str) -> tuple[nn.Module, list[nn.Module]]:
    """The module at a dotted path (negative indices count from the end of a list) and the modules on the way;
    KeyError names the first step that does not exist."""
    module, chain = model, []
    for part in path.split("."):
        if part in module._modules and module._modules[part] is not None:
            module = module._modules[part]
        elif part.lstrip("-").isdigit() and isinstance(module, nn.ModuleList | nn.Sequential):
            try:
                module = module[int(part)]
            except IndexError:
                raise KeyError(f"{part!r} is out of range ({len(module)} entries)") from None
        else:
            children = ", ".join(list(module._modules)[:8]) or "none"
            raise KeyError(f"{part!r} is not a child of {type(module).__name__} (children: {children})")
        chain.append(module)
    return module, chain


def cam_target(model: nn.Module, layer: str | None = None, key: str = "explain.layer") -> CamTarget:
    """The target layer of `model` (a DeepfakeDetector): `layer`, else the model's own `explain_layer`, else its
    family's default. A layer that cannot be found is a ConfigError naming `key` as the fix."""
    path = layer or getattr(model, "explain_layer", None) or default_layer(model)
    architecture = getattr(model, "architecture", "") or type(model).__name__
    if path is None:
        raise ConfigError(
            f"no Grad-CAM layer is known for {architecture} (not a CNN with timm feature_info, a ViT or a Swin); "
            f"name one: {key}=<module path>, e.g. {key}=backbone.<last conv stage>"
        )
    try:
        module, chain = find_module(model, path)
    except KeyError as e:
        default = default_layer(model)
        hint = f" (this detector's default is {default})" if default else ""
        raise ConfigError(
            f"{key}={path} is not a layer of {architecture}: {e.args[0]}. Pass {key}=<module path>{hint}"
        ) from None
    # the reshape of the innermost timm backbone the layer sits in: a late-fusion branch's own, say
    owners = [m for m in (model.backbone, *chain) if family(m) is not None]
    owner = owners[-1] if owners else model.backbone
    return CamTarget(path, module, reshape_for(owner), family(owner) or "cnn")
