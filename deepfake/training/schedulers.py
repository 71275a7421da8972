"""Learning-rate schedules with linear warmup, built from torch's `lr_scheduler`.

Every schedule except `plateau` advances once per optimizer update, so warmup and decay do not depend on
the epoch length; `plateau` watches the monitored validation metric once per epoch (after its warmup).
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer, lr_scheduler


class LRSchedule:
    """One object the loop drives: `step_update()` per optimizer update, `step_epoch(metric)` per epoch."""

    def __init__(
        self, per_update: lr_scheduler.LRScheduler | None, plateau: lr_scheduler.ReduceLROnPlateau | None
    ) -> None:
        self.per_update = per_update
        self.plateau = plateau
        self.updates = 0

    def step_update(self) -> None:
        self.updates += 1
        if self.per_update is not None and not (
            self.plateau is not None and self.updates > self.per_update.total_iters  # type: ignore[attr-defined]
        ):
            self.per_update.step()

    def step_epoch(self, metric: float | None) -> None:
        if self.plateau is None or metric is None:
            return
        if self.per_update is None or self.updates >= self.per_update.total_iters:  # type: ignore[attr-defined]
            self.plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "per_update": self.per_update.state_dict() if self.per_update is not None else None,
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = state["updates"]
        if self.per_update is not None and state["per_update"] is not None:
            self.per_update.load_state_dict(state["per_update"])
        if self.plateau is not None and state["plateau"] is not None:
            self.plateau.load_state_dict(state["plateau"])


def warmup_length(steps_per_epoch: int, warmup_epochs: float, warmup_steps: int | None, total: int) -> int:
    """Warmup in optimizer updates; `warmup_steps` wins over `warmup_epochs` when set."""
    warm = warmup_steps if warmup_steps is not None else round(warmup_epochs * steps_per_epoch)
    return max(0, min(warm, total - 1))


def create_scheduler(
    optimizer: Optimizer,
    *,
    steps_per_epoch: int,
    num_epochs: int,
    name: str = "cosine",
    warmup_epochs: float = 1.0,
    warmup_steps: int | None = None,
    warmup_start_factor: float = 0.01,
    min_lr: float = 1e-6,
    step_epochs: float = 10.0,
    milestones: list[float] | tuple[float, ...] = (30.0, 60.0),
    gamma: float = 0.1,
    plateau_patience: int = 2,
    mode: str = "max",
    onecycle_max_lr_factor: float = 1.0,
    decay_start_epochs: float = 0.0,
) -> LRSchedule:
    """Build the named schedule; step-based positions (`step_epochs`, `milestones`) are given in epochs."""
    total = max(1, steps_per_epoch * num_epochs)
    warm = warmup_length(steps_per_epoch, warmup_epochs, warmup_steps, total)
    if name == "onecycle":
        base = [g["lr"] * onecycle_max_lr_factor for g in optimizer.param_groups]
        return LRSchedule(
            lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=base,
                total_steps=total + 1,
                pct_start=max(warm, 1) / (total + 1),
                div_factor=1.0 / warmup_start_factor,
                final_div_factor=max(1.0, base[0] / max(min_lr, 1e-12) * warmup_start_factor),
                cycle_momentum=False,
            ),
            None,
        )
    warmup = _warmup(optimizer, warm, warmup_start_factor)
    if name == "plateau":
        plateau = lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=gamma, patience=plateau_patience, min_lr=min_lr
        )
        return LRSchedule(warmup, plateau)
    after = total - warm
    main = _decay(
        optimizer,
        name,
        steps_per_epoch,
        warm,
        after,
        min_lr,
        step_epochs,
        milestones,
        gamma,
        decay_start_epochs,
    )
    if warmup is None:
        return LRSchedule(main, None)
    return LRSchedule(lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warm]), None)


def _warmup(optimizer: Optimizer, warm: int, start_factor: float) -> lr_scheduler.LinearLR | None:
    """The linear warmup over `warm` updates, from `start_factor` of each group's rate; none when 0."""
    if not warm:
        return None
    return lr_scheduler.LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warm)


def _decay(
    optimizer: Optimizer,
    name: str,
    steps_per_epoch: int,
    warm: int,
    after: int,
    min_lr: float,
    step_epochs: float,
    milestones: list[float] | tuple[float, ...],
    gamma: float,
    decay_start_epochs: float,
) -> lr_scheduler.LRScheduler:
    """The named schedule that runs for the `after` updates once a `warm`-update warmup is over."""
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, after), eta_min=min_lr)
    elif name == "step":
        return lr_scheduler.StepLR(
            optimizer, step_size=max(1, round(step_epochs * steps_per_epoch)), gamma=gamma
        )
    elif name == "multistep":
        points = sorted(max(1, round(m * steps_per_epoch) - warm) for m in milestones)
        return lr_scheduler.MultiStepLR(optimizer, milestones=points, gamma=gamma)
    elif name == "linear":
        return lr_scheduler.LambdaLR(
            optimizer, _LinearDecay(round(decay_start_epochs * steps_per_epoch) - warm, after)
        )
    elif name == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown scheduler {name!r}")


class _LinearDecay:
    """`linear`: the factor holds at 1 for `hold` updates, then falls in a straight line to 0 at `total`
    (SBI's LinearDecayLR, per update instead of per epoch). A class, so LambdaLR's state_dict stores it."""

    def __init__(self, hold: int, total: int) -> None:
        self.hold, self.total = max(0, hold), max(1, total)

    def __call__(self, step: int) -> float:
        if step <= self.hold:
            return 1.0
        return max(0.0, 1.0 - (step - self.hold) / max(1, self.total - self.hold))
