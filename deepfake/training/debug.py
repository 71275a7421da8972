"""The debug modes (`debug=fast|overfit|limit|profile`, the `debug` config section), after Lightning's
fast_dev_run, overfit_batches, limit_*_batches and profiler: what each changes in the loaders, and the
observers that end a fast run, judge the overfit check and drive torch.profiler."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from deepfake.errors import UserError
from deepfake.training.engine import TrainState
from deepfake.training.observers import EpochEnd, Observer, Run

log = logging.getLogger("deepfake")


class OverfitCheckFailed(UserError):
    """`debug.overfit_batches`: the loss stayed above `debug.overfit_loss`. A failed check, not a bad input:
    the command exits 1, as a failed `check=true` does."""

    exit_code = 1


def is_debug_run(cfg: DictConfig) -> bool:
    """Whether a debug mode is on: its run then goes to the throwaway `<base_path>/debug/` folder."""
    debug = cfg.debug
    limits = (debug.limit_train_batches, debug.limit_val_batches)
    return bool(
        debug.fast or debug.overfit_batches or debug.profiler.enabled or any(v is not None for v in limits)
    )


def _as_limit(value: float | None) -> float | int | None:
    """A config limit as the DataModule takes it: an int counts batches, a float is a fraction of them."""
    if value is None:
        return None
    return int(value) if value > 1 else float(value)


def loader_limits(cfg: DictConfig) -> tuple[float | int | None, float | int | None, bool]:
    """(train limit, validation limit, same batches every epoch) for `DataModule.*_dataloader`."""
    debug = cfg.debug
    if debug.fast:
        return 1, 1, False
    val = _as_limit(debug.limit_val_batches)
    if debug.overfit_batches:
        return int(debug.overfit_batches), val if val is not None else int(debug.overfit_batches), True
    return _as_limit(debug.limit_train_batches), val, False


def describe_limits(cfg: DictConfig, train_batches: int, val_batches: int) -> str | None:
    """The line a debug run logs at its start, saying what it trains on; None when no mode is on."""
    debug = cfg.debug
    if debug.fast:
        return "debug.fast: one epoch of 1 train batch and 1 val batch, through every writer"
    if debug.overfit_batches:
        return (
            f"debug.overfit_batches: the same {train_batches} train batches every epoch, until the training "
            f"loss < {debug.overfit_loss} (at most {cfg.training.num_epochs} epochs)"
        )
    if debug.limit_train_batches is not None or debug.limit_val_batches is not None:
        return f"debug limits: {train_batches} train and {val_batches} val batches per epoch"
    return None


class DebugObserver(Observer):
    """Ends a `debug.fast` run after its epoch; ends an overfit check once the epoch's loss is low enough."""

    def __init__(self, cfg: DictConfig, num_batches: int) -> None:
        self.fast = bool(cfg.debug.fast)
        self.overfit = int(cfg.debug.overfit_batches)
        self.target = float(cfg.debug.overfit_loss)
        self.num_batches = num_batches
        self.batch_size = int(cfg.training.batch_size)
        self.loss: float | None = None
        self.epochs = 0
        self.passed = False

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        if self.fast:
            end.stop = "debug.fast: one epoch done"
        if not self.overfit:
            return
        self.loss, self.epochs = end.train["train/epoch_loss"], end.epoch
        if self.loss < self.target:
            self.passed = (
                True  # the verdict ("overfit check passed: ...") is said once, as the run's last line
            )
            end.stop = (
                f"debug.overfit_batches: loss {self.loss:.4f} < {self.target} after {self.epochs} epochs"
            )

    def message(self) -> str:
        batches = f"{self.num_batches} fixed batches of {self.batch_size}"
        if self.passed:
            return f"overfit check passed: loss {self.loss:.4f} < {self.target} after {self.epochs} epochs ({batches})"
        return (
            f"overfit check failed: loss {self.loss:.4f} >= {self.target} after {self.epochs} epochs ({batches}); "
            "a model that cannot fit a few batches has a bug in its data, labels or loss, or a learning rate far "
            "off (try python train.py find_lr=true); more epochs: training.num_epochs=N"
        )

    def verdict(self) -> None:
        """After the run: raise OverfitCheckFailed unless the check passed (nothing to judge otherwise); a pass is
        said here, so the run's final line is the check's answer."""
        if not self.overfit:
            return
        if self.passed:
            log.info(self.message())
            return
        if self.loss is None:
            raise OverfitCheckFailed("overfit check failed: no epoch finished, so no loss to judge")
        raise OverfitCheckFailed(self.message())


class ProfilerObserver(Observer):
    """`debug.profiler`: torch.profiler over `wait`, `warmup`, `active` optimizer steps (one cycle), saved as a
    TensorBoard trace under `<run dir>/profiler`; the top operators are logged as a table when the loop ends."""

    def __init__(self, settings: Any, run_dir: Path, device: torch.device) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        self.settings = settings
        self.folder = run_dir / "profiler"
        self.cuda = device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.window = settings.wait + settings.warmup + settings.active
        self.steps = 0
        self.profiler = profile(
            activities=activities,
            schedule=schedule(wait=settings.wait, warmup=settings.warmup, active=settings.active, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(self.folder)),
            record_shapes=True,
        )
        self.profiler.start()

    def on_step(self, run: Run, state: TrainState) -> None:
        self.profiler.step()
        self.steps += 1

    def on_close(self, run: Run, outcome: str) -> None:
        self.profiler.stop()
        if self.steps < self.window:
            log.warning(
                "profiler: the run ended after %d optimizer steps, before the profiled window "
                "(wait %d + warmup %d + active %d); train more batches (debug.limit_train_batches)",
                self.steps, self.settings.wait, self.settings.warmup, self.settings.active,
            )  # fmt: skip
            return
        sort_by = "self_device_time_total" if self.cuda else "self_cpu_time_total"
        table = self.profiler.key_averages().table(sort_by=sort_by, row_limit=self.settings.row_limit)
        log.info("profiler: top operators of %d steps by %s\n%s", self.settings.active, sort_by, table)
        log.info(
            "profiler trace: %s (tensorboard --logdir %s, with torch-tb-profiler)", self.folder, self.folder
        )


def debug_observers(cfg: DictConfig, run_dir: Path, device: torch.device, num_batches: int) -> list[Observer]:
    """The observers the debug section asks for (none for a normal run)."""
    observers: list[Observer] = []
    if cfg.debug.fast or cfg.debug.overfit_batches:
        observers.append(DebugObserver(cfg, num_batches))
    if cfg.debug.profiler.enabled:
        observers.append(ProfilerObserver(cfg.debug.profiler, run_dir, device))
    return observers


def check_verdict(observers: list[Observer]) -> None:
    """Raise OverfitCheckFailed when an overfit check ran and failed."""
    for observer in observers:
        if isinstance(observer, DebugObserver):
            observer.verdict()
