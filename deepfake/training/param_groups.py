"""Learning rates per part of the detector: the backbone's relative to the head's, and layer-wise decay.

Torch's LR schedulers scale each parameter group from its own starting `lr`, so a group's relative rate is
simply its `lr` here (timm's `lr_scale` key, which only timm's schedulers read, is folded in). Every group
carries `part` (`head` or `backbone`), which the unfreeze warm restart (`deepfake.training.freezing`) uses.
Frozen parameters are grouped too: they wait in the optimizer, without gradients, until they are unfrozen,
so the optimizer's layout (and a checkpoint of it) is the same before and after an unfreeze.
"""

from __future__ import annotations

import contextlib
from typing import Any

from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from deepfake.errors import ConfigError
from deepfake.model.fusion import EarlyFusion, LateFusion
from deepfake.model.grad_flags import requires_grad


def all_trainable(module: nn.Module) -> contextlib.AbstractContextManager[None]:
    """timm's grouping skips parameters without `requires_grad`; inside, a frozen backbone counts too."""
    return requires_grad(module, True)


def part_groups(
    model: nn.Module,
    *,
    learning_rate: float,
    weight_decay: float,
    backbone_lr_scale: float = 1.0,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """The head's groups at `learning_rate`, then the backbone's at `learning_rate x backbone_lr_scale`, each
    backbone layer further scaled by `layer_decay ** depth from the top` (timm `param_groups_layer_decay`).

    Norm and bias parameters get no weight decay, as in the default grouping.
    """
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    if layer_decay is not None and isinstance(backbone, EarlyFusion | LateFusion):
        raise ConfigError(
            f"training.layer_decay={layer_decay} splits a timm backbone into layers, but "
            f"model.streams wraps it in {type(backbone).__name__} (stems and fused inputs have no layer depth); "
            "set training.layer_decay=null or model.streams=[rgb]"
        )
    # Everything that is not the backbone trains at the head's rate: the head, and a mask decoder if any.
    head = nn.ModuleDict({name: child for name, child in model.named_children() if name != "backbone"})
    groups = [
        {**g, "lr": learning_rate, "part": "head"} for g in param_groups_weight_decay(head, weight_decay)
    ]
    with all_trainable(backbone):
        if layer_decay is None:
            body = param_groups_weight_decay(backbone, weight_decay)
        else:
            skip = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
            body = param_groups_layer_decay(
                backbone, weight_decay, no_weight_decay_list=skip, layer_decay=layer_decay
            )
    for g in body:
        scale = g.pop("lr_scale", 1.0)
        groups.append({**g, "lr": learning_rate * backbone_lr_scale * scale, "part": "backbone"})
    return [g for g in groups if g["params"]]


def uses_parts(
    freeze_backbone: bool, backbone_lr_scale: float, layer_decay: float | None, unfreeze: int | None
) -> bool:
    """Whether any per-part setting is in use; without one the optimizer keeps the model's default two groups
    (so checkpoints of earlier runs still load)."""
    return freeze_backbone or backbone_lr_scale != 1.0 or layer_decay is not None or unfreeze is not None
