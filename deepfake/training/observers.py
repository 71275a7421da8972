"""The things that react to the training loop: TensorBoard, the experiment trackers, mask previews, early
stopping, checkpoints, progress, the metrics file and backups (best.pt's temperature is `training.calibration`,
the debug modes' observers `training.debug`).

Each observer gets three events, in list order: `on_step` after an optimizer update, `on_epoch_end` after
validation (with an `EpochEnd`), and `on_close` when the loop ends for any reason. An observer sees the run
through `Run`, the few attributes and methods of the Trainer it may use, so adding one (a tracker such as
MLflow or W&B, say) is a class here and a line in `TrainerSetup._setup_observers` (training/setup.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from omegaconf import DictConfig

from deepfake.reporting.masks import log_mask_grid
from deepfake.reporting.progress import ProgressTracker
from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.reporting.tensorboard_views import best_scalars, log_val_epoch
from deepfake.runs.backup import ProjectBackup
from deepfake.system.distributed import DistContext
from deepfake.tracking.run_info import run_info
from deepfake.tracking.trackers import Trackers, open_trackers, saved_ids
from deepfake.training.checkpointer import Checkpointer
from deepfake.training.early_stopping import Best, EarlyStopping
from deepfake.training.engine import TrainState
from deepfake.training.resume import Resume
from deepfake.training.run_files import save_val_predictions

log = logging.getLogger("deepfake")


class Run(Protocol):
    """What an observer may read and call on the running Trainer."""

    cfg: DictConfig
    run_dir: Path
    ddp: DistContext
    state: TrainState
    stop_reason: str
    calibration: dict[str, Any] | None
    best_logits: tuple[int, np.ndarray, np.ndarray] | None  # the best epoch's (epoch, val labels, val logits)
    operating_point: dict[str, Any] | None

    def save(self, saved_at: str, new_best: Best | None = None) -> None: ...

    def write_metrics(self, stop_reason: str) -> None: ...

    def progressed(self) -> bool: ...


@dataclass
class EpochEnd:
    """One validated epoch, as the observers see it."""

    epoch: int  # epochs completed (1-based)
    global_step: int
    train: dict[str, float]
    val: dict[str, float]  # this epoch's validation metrics, `val/auc_best` included
    monitored: float  # val[training.monitor]
    improved: bool  # this epoch is the new best; `best` is it, and becomes the run's once best.pt is durable
    best: Best
    predictions: tuple[np.ndarray, np.ndarray, np.ndarray]  # validation labels, probabilities, indices
    val_dataset: Any
    peak_gb: float | None  # peak GPU memory in the epoch
    started: float  # time.perf_counter() at the epoch's start
    stop: str | None = None  # set by an observer that ends training after this epoch: the reason


class Observer:
    """An observer of the loop; every event is a no-op unless overridden."""

    def on_step(self, run: Run, state: TrainState) -> None:
        """After each optimizer update."""

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        """After each validated epoch."""

    def on_close(self, run: Run, outcome: str) -> None:
        """When the loop ends: `outcome` is end, interrupt, abort or crash."""


class TensorBoardObserver(Observer):
    """The epoch's scalars and validation views; the writer is closed (flushed) at the end."""

    def __init__(self, tb: TensorBoardLogger) -> None:
        self.tb = tb

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        scalars = {
            **end.val,
            **best_scalars(end.best.metrics),
            "train/epoch_loss": end.train["train/epoch_loss"],
        }
        if end.peak_gb is not None:
            scalars["hw/gpu_peak_mem_gb"] = end.peak_gb
        self.tb.scalars(end.global_step, scalars)
        labels, probs, index = end.predictions
        log_val_epoch(self.tb, end.global_step, end.epoch - 1, labels, probs, index, end.val_dataset, run.cfg)

    def on_close(self, run: Run, outcome: str) -> None:
        self.tb.close()


class TrackerObserver(Observer):
    """The `logger` group's trackers (CSV, MLflow, W&B): each epoch's validation metrics and train summary, as
    TensorBoard gets them. Their per-step scalars come through the loop's log callback (`fan_out`); the Trainer
    closes them after `finish`, once the plots and reports they upload exist."""

    def __init__(self, trackers: Trackers) -> None:
        self.trackers = trackers

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        values = {**end.val, **best_scalars(end.best.metrics), **end.train}
        if end.peak_gb is not None:
            values["hw/gpu_peak_mem_gb"] = end.peak_gb
        self.trackers.epoch(end.epoch, end.global_step, values)


def build_trackers(
    cfg: DictConfig, run_dir: Path, ddp: DistContext, resume: Resume | None, start_step: int, device: str,
    overrides: list[str],
) -> Trackers:  # fmt: skip
    """Open the chosen trackers on rank 0 (other ranks log nothing). A run resumed in its own directory
    continues its tracker runs; one started from another run's checkpoint gets new ones, tagged with it."""
    if not ddp.is_main or not any(cfg.logger.get(name) is not None for name in ("csv", "mlflow", "wandb")):
        return Trackers([])
    continued = resume is not None and resume.run_dir is not None
    info = run_info(
        cfg, run_dir, device, overrides, start_step=start_step,
        resumed=saved_ids(run_dir, resume.state) if continued and resume is not None else None,
        resumed_from=str(resume.path) if resume is not None and not continued else None,
    )  # fmt: skip
    return open_trackers(cfg.logger, info)


class MaskObserver(Observer):
    """`model.mask_head`: predicted against true blend masks every `logging.images_every_n_epochs`."""

    def __init__(self, tb: TensorBoardLogger, model: Any) -> None:
        self.tb = tb
        self.model = model  # the local module (not the DDP wrapper): only the main process logs

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        every = run.cfg.logging.images_every_n_epochs
        if every and end.epoch % every == 0:
            log_mask_grid(self.tb, self.model, end.val_dataset, end.global_step, run.cfg.logging.num_images)


class EarlyStoppingObserver(Observer):
    """`training.early_stopping`: counts epochs without improvement; its state is saved with the checkpoint
    that follows, so it must run before `CheckpointObserver`."""

    def __init__(self, early: EarlyStopping, enabled: bool) -> None:
        self.early = early
        self.enabled = enabled

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        if self.enabled and self.early.step(end.val, end.epoch):
            end.stop = self.early.reason or "early stopping"


class CheckpointObserver(Observer):
    """last.pt every `every_n_steps` updates and at each epoch's end; best.pt, its validation predictions and
    the top-k epoch files."""

    def __init__(self, checkpoints: Checkpointer, every_n_steps: int, num_batches: int) -> None:
        self.checkpoints = checkpoints
        self.every = every_n_steps
        self.num_batches = num_batches

    def on_step(self, run: Run, state: TrainState) -> None:
        # The epoch's last step is covered by the end-of-epoch checkpoint, which includes validation.
        if self.every and state.global_step % self.every == 0 and state.batch_in_epoch < self.num_batches:
            run.save("step")

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        in_top_k = self.checkpoints.enters_top_k(end.monitored, end.epoch)
        run.save("epoch", end.best if end.improved else None)
        if end.improved and run.ddp.is_main:
            save_val_predictions(run.run_dir, end.val_dataset, end.predictions)
        if in_top_k and run.ddp.is_main:
            self.checkpoints.copy_last(self.checkpoints.epoch_file(end.epoch))
            self.checkpoints.prune_top_k()


class ProgressObserver(Observer):
    """Bars or plain lines per step, the epoch summary line."""

    def __init__(self, progress: ProgressTracker) -> None:
        self.progress = progress

    def on_step(self, run: Run, state: TrainState) -> None:
        self.progress.step(state)

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        self.progress.end_epoch(end.train, end.val, time.perf_counter() - end.started, end.peak_gb)

    def on_close(self, run: Run, outcome: str) -> None:
        self.progress.close()


class MetricsFileObserver(Observer):
    """metrics.json with the run's outcome, whatever ends it (before the exit backup, which includes it)."""

    def on_close(self, run: Run, outcome: str) -> None:
        if run.ddp.is_main:
            run.write_metrics(run.stop_reason)


class BackupObserver(Observer):
    """`backup.every_n_epochs` archives (with a current metrics.json), and one when the run ends unless the
    newest backup already holds its final step and checkpoints."""

    def __init__(self, backup: ProjectBackup) -> None:
        self.backup = backup

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        if self.backup.due(end.epoch) and run.ddp.is_main:
            run.write_metrics("running")
            self.backup.create_backup("epoch", run.state.epoch, run.state.global_step)

    def on_close(self, run: Run, outcome: str) -> None:
        state = run.state
        if run.ddp.is_main and (
            outcome in ("interrupt", "crash")
            or (outcome == "end" and run.progressed() and self.backup.stale(state.global_step))
        ):
            self.backup.exit_backup(outcome, state.epoch, state.global_step)
