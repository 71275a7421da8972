"""The optimizer (and schedule) of a run from its config: parameter groups, the configured torch optimizer,
optionally wrapped in SAM. Shared by the Trainer and the pre-flight check, so both step the same way.

SAM lives in `training.sam`, not inside `training.optimizer`: that node is a Hydra partial whose every key
becomes a keyword argument of the optimizer class, so a `sam` key there would reach `torch.optim.AdamW(...)`
wherever the node is instantiated; a node of its own is type-checked by the schema too.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from omegaconf import DictConfig

from deepfake.runs.checkpoint import unwrap
from deepfake.training.build import instantiate
from deepfake.training.param_groups import part_groups, uses_parts
from deepfake.training.sam import SAM


def build_optimizer(
    model: torch.nn.Module,
    cfg: DictConfig,
    steps_per_epoch: int | None = None,
    num_epochs: int | None = None,
    with_scheduler: bool = True,
) -> tuple[torch.optim.Optimizer, Any]:
    """`model.configure_optimizers` with the run's groups, optimizer, SAM and (optionally) schedule."""
    tc, bare = cfg.training, unwrap(model)
    groups = None
    frozen = cfg.model.freeze_backbone or getattr(bare, "backbone_frozen", False)
    if uses_parts(frozen, tc.backbone_lr_scale, tc.layer_decay, tc.unfreeze_at_epoch):
        groups = part_groups(
            bare,
            learning_rate=tc.learning_rate,
            weight_decay=tc.weight_decay,
            backbone_lr_scale=tc.backbone_lr_scale,
            layer_decay=tc.layer_decay,
        )
    factory = instantiate(tc.optimizer, _convert_="all")
    if tc.sam.enabled:
        factory = functools.partial(SAM, base_optimizer=factory, rho=tc.sam.rho, adaptive=tc.sam.adaptive)
    return bare.configure_optimizers(
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        optimizer=factory,
        scheduler=instantiate(tc.scheduler, _convert_="all") if with_scheduler else None,
        steps_per_epoch=steps_per_epoch,
        num_epochs=num_epochs,
        param_groups=groups,
    )
