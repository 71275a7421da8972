"""Unfreezing a frozen backbone during a run, with an optional LR warm restart for it.

`model.freeze_backbone=true` builds the detector with its backbone frozen (`DeepfakeDetector.freeze_backbone`);
`training.unfreeze_at_epoch=N` lets the backbone train from epoch N on (0-based, so after N frozen epochs). The
state follows from the epoch alone, so a resumed run is frozen or not exactly as the original was.

The warm restart (`training.unfreeze_warmup_epochs`) ramps the backbone groups' rate linearly from near zero
to its scheduled value. The LR schedulers own each group's `lr` (theirs is a recursive form that reads it
back), so the ramp is applied around the optimizer's step and undone after it: a function of the global step,
with no state of its own to checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import torch
from torch import nn

log = logging.getLogger("deepfake")


class BackboneSchedule:
    """When the backbone trains, and the warm-up factor of its learning rate after it starts."""

    def __init__(
        self, frozen: bool, unfreeze_at_epoch: int | None, warmup_epochs: float, steps_per_epoch: int
    ) -> None:
        self.frozen = frozen
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.start_step = (unfreeze_at_epoch or 0) * steps_per_epoch
        self.warmup_steps = math.ceil(warmup_epochs * steps_per_epoch) if unfreeze_at_epoch else 0

    def frozen_in(self, epoch: int) -> bool:
        return self.frozen and (self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch)

    def set_epoch(self, model: nn.Module, epoch: int) -> bool:
        """Freeze or unfreeze `model`'s backbone for `epoch`; returns whether that changed anything."""
        frozen = self.frozen_in(epoch)
        if getattr(model, "backbone_frozen", False) == frozen:
            return False
        model.freeze_backbone(frozen)  # type: ignore[operator]
        log.info("epoch %d: backbone %s", epoch + 1, "frozen" if frozen else "unfrozen, training end to end")
        return True

    def factor(self, global_step: int) -> float:
        """The backbone's LR multiplier for the update after `global_step` updates."""
        done = global_step - self.start_step
        if self.warmup_steps <= 0 or done < 0 or done >= self.warmup_steps:
            return 1.0
        return (done + 1) / (self.warmup_steps + 1)

    @contextlib.contextmanager
    def warm_lr(self, optimizer: torch.optim.Optimizer, global_step: int) -> Iterator[None]:
        """Scale the backbone groups' `lr` for one step, then put the scheduler's values back exactly."""
        factor = self.factor(global_step)
        groups = [g for g in optimizer.param_groups if g.get("part") == "backbone"] if factor != 1.0 else []
        saved = [g["lr"] for g in groups]
        for g in groups:
            g["lr"] = g["lr"] * factor
        try:
            yield
        finally:
            for g, lr in zip(groups, saved, strict=True):
                g["lr"] = lr
