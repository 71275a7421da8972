"""The parts of a training run, each built by one `_setup_x()` that returns it (torchtune's recipe shape):
hardware, model, data, optimisation, the resumed progress and the observers. `Trainer.setup()`
(`training.runner`) calls them in order and assigns every attribute the loop uses; `LrFinder` reuses the first
four. Split from the runner by job: what is built once, before the first step, against what runs every epoch."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from deepfake.checks.start import start_checks
from deepfake.data.module import DataModule
from deepfake.data.workers import resolve_num_workers
from deepfake.model.temporal import clip_length
from deepfake.reporting.model_summary import report_summary
from deepfake.reporting.progress import ProgressTracker, fan_out
from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.reporting.tensorboard_views import log_run_start
from deepfake.runs.backup import ProjectBackup
from deepfake.runs.checkpoint import unwrap
from deepfake.system import distributed
from deepfake.system.hardware import HardwareManager, describe
from deepfake.system.precision import Precision
from deepfake.system.sampler import ResourceSampler
from deepfake.tracking.trackers import Trackers
from deepfake.training.build import build_model, instantiate
from deepfake.training.calibration import CalibrationObserver
from deepfake.training.checkpointer import Checkpointer
from deepfake.training.debug import debug_observers, describe_limits, is_debug_run, loader_limits
from deepfake.training.early_stopping import Best, EarlyStopping
from deepfake.training.engine import LoopConfig, StepContext, TrainState
from deepfake.training.faithfulness import SbiFaithfulness
from deepfake.training.freezing import BackboneSchedule
from deepfake.training.memory import fit_batch_size, probe_step
from deepfake.training.observers import (
    BackupObserver,
    CheckpointObserver,
    EarlyStoppingObserver,
    MaskObserver,
    MetricsFileObserver,
    Observer,
    ProgressObserver,
    TensorBoardObserver,
    TrackerObserver,
    build_trackers,
)
from deepfake.training.optimizer import build_optimizer
from deepfake.training.resume import (
    Progress,
    Resume,
    check_train_set,
    needs_replan,
    restore_progress,
    restore_training,
)
from deepfake.training.run_files import adopt_val_predictions, write_hardware
from deepfake.training.validation import preview_probs

log = logging.getLogger("deepfake")


@dataclass
class Hardware:
    hw: HardwareManager
    precision: Precision
    device: torch.device


@dataclass
class DataParts:
    data: DataModule
    batch_size: int  # per process; `training.batch_size`, or what auto_batch_size found
    test_sets: list[str]  # scored after the last epoch (none in the debug modes)
    train_loader: Any
    val_loader: Any
    val_videos: np.ndarray  # each validation item's video, for the per-video metrics
    faithfulness: SbiFaithfulness | None  # eval.explain with SBI: heatmaps against the blend masks each epoch
    num_batches: int  # training batches per epoch


@dataclass
class Optimization:
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    backbone: BackboneSchedule
    ema: Any  # timm's ModelEmaV3, or None
    step_context: StepContext
    loop: LoopConfig
    early: EarlyStopping
    checkpoints: Checkpointer


@dataclass
class Observers:
    trackers: Trackers
    tb: TensorBoardLogger
    backup: ProjectBackup
    progress: ProgressTracker
    on_log: Callable[
        [int, dict[str, float]], None
    ]  # the loop's log callback: TensorBoard, trackers, progress
    sampler: ResourceSampler  # CPU/RAM/GPU readings, on their own thread while the loop runs
    observers: list[Observer]  # in the order they see each event (see `deepfake.training.observers`)


class TrainerSetup:
    """The builders; each reads the run's settings (`cfg`, `run_dir`, `ddp`, `resume`) and the parts it is
    handed, and returns its part without setting anything on `self`."""

    cfg: DictConfig
    tc: Any
    run_dir: Path
    ddp: distributed.DistContext
    resume: Resume | None = (
        None  # the checkpoint a Trainer continues (its weights replace any pretrained ones)
    )
    overrides: list[str]
    config_yaml: str

    def _setup_hardware(self) -> Hardware:
        cfg, ddp = self.cfg, self.ddp
        hw = HardwareManager(**{**cfg.hardware, "device": ddp.device(cfg.hardware.device)})
        hw.configure(resolve_num_workers(cfg.data.num_workers))
        precision = hw.precision(self.tc.amp)
        summary = {**hw.summary(str(self.run_dir)), "world_size": ddp.world_size}
        if ddp.is_main:
            write_hardware(self.run_dir, summary)
        log.info(describe(summary))
        log.info("device: %s (%s), precision %s", hw.device, hw.reason, precision.name)
        return Hardware(hw, precision, hw.device)

    def _batch_size(self, model: torch.nn.Module, img_size: int, hardware: Hardware) -> int:
        """`training.batch_size`, or under `auto_batch_size` on CUDA the largest that fits on every rank."""
        batch_size, device = self.tc.batch_size, hardware.device
        if not self.tc.auto_batch_size:
            return batch_size
        if device.type != "cuda":
            log.info("training.auto_batch_size applies to CUDA devices; keeping batch %d", batch_size)
            return batch_size
        probe = probe_step(model, hardware.precision, device, img_size)
        batch_size = self.ddp.min(fit_batch_size(probe, batch_size, device))  # every rank, same batch
        log.info("auto batch size: %d fits in GPU memory", batch_size)
        return batch_size

    def _setup_model(self, hardware: Hardware) -> torch.nn.Module:
        """The detector on the device, not yet DDP-wrapped (`_setup_data` sets the input size it is fed)."""
        return build_model(self.cfg, resuming=self.resume is not None).to(hardware.device)

    def _setup_data(self, hardware: Hardware, model: torch.nn.Module) -> DataParts:
        cfg, tc, ddp = self.cfg, self.tc, self.ddp
        img_size = cfg.data.img_size or model.img_size
        batch_size = self._batch_size(model, img_size, hardware)
        data = instantiate(
            cfg.data, img_size=img_size, batch_size=batch_size, eval_batch_size=tc.eval_batch_size,
            seed=cfg.seed, pin_memory=hardware.device.type == "cuda", rank=ddp.rank, world_size=ddp.world_size,
            clip_frames=clip_length(model), masks=cfg.model.mask_head, _convert_="all",
        )  # fmt: skip
        with ddp.main_first():  # rank 0 generates a missing synthetic set once; the others then read it
            data.setup()
        unwrap(model).img_size = img_size  # the size the loaders feed: what predict and export must reproduce
        # Scan the test sets now, so a wrong path fails before training rather than after it. Without
        # data.test_sets, the data's own test split (when it has one) is reported at the end.
        own_split = "test" in data.samples and cfg.eval.score_test_split and not is_debug_run(cfg)
        test_sets = data.setup_test_sets() if cfg.data.test_sets or own_split else []
        train_limit, val_limit, fixed = loader_limits(cfg)  # the debug modes' batches (None: all)
        train_loader = data.train_dataloader(train_limit, fixed)
        val_loader = data.eval_dataloader("val", val_limit)
        num_batches = len(train_loader)
        if (note := describe_limits(cfg, num_batches, len(val_loader))) is not None:
            log.info(note)
        if cfg.check_on_start:
            start_checks(cfg, data.samples, train_loader.batch_size)
        return DataParts(
            data, batch_size, test_sets, train_loader, val_loader,
            val_videos=np.asarray(val_loader.dataset.videos, dtype=object),
            faithfulness=SbiFaithfulness.from_config(cfg, val_loader.dataset, unwrap(model)),
            num_batches=num_batches,
        )  # fmt: skip

    def _setup_optimization(
        self, hardware: Hardware, model: torch.nn.Module, data: DataParts
    ) -> Optimization:
        """The optimizer and schedule for the (wrapped) model, the backbone schedule, EMA, the loop's settings,
        early stopping and the checkpoint files."""
        tc, world, batch = self.tc, self.ddp.world_size, data.batch_size
        steps_per_epoch = math.ceil(data.num_batches / tc.grad_accum_steps)
        log.info(
            "batch %d x %d accumulation x %d processes = effective batch %d; %d optimizer steps per epoch",
            batch, tc.grad_accum_steps, world, batch * tc.grad_accum_steps * world, steps_per_epoch,
        )  # fmt: skip
        optimizer, scheduler = build_optimizer(model, self.cfg, steps_per_epoch, tc.num_epochs)
        backbone = BackboneSchedule(
            self.cfg.model.freeze_backbone, tc.unfreeze_at_epoch, tc.unfreeze_warmup_epochs, steps_per_epoch
        )
        ema = None
        if tc.ema.enabled:
            from timm.utils import ModelEmaV3

            ema = ModelEmaV3(distributed.local_module(model), decay=tc.ema.decay, use_warmup=tc.ema.warmup)
        step_context = StepContext(
            model,
            optimizer,
            hardware.precision,
            hardware.device,
            scheduler=scheduler,
            ema=ema,
            backbone=backbone,
        )
        return Optimization(
            steps_per_epoch, optimizer, scheduler, backbone, ema, step_context,
            loop=LoopConfig.from_config(self.cfg, pos_weight=data.data.pos_weight),
            early=EarlyStopping(**{k: v for k, v in tc.early_stopping.items() if k != "enabled"}),
            checkpoints=Checkpointer(self.run_dir / "checkpoints", tc.checkpoint.keep_top_k, tc.monitor_mode),
        )  # fmt: skip

    def _setup_resume(
        self, model: torch.nn.Module, hardware: Hardware, data: DataParts, opt: Optimization
    ) -> tuple[TrainState, Progress]:
        """The counters and progress to start from: zero, or `resume`'s checkpoint continued (weights, optimizer,
        schedule, counters, best and top-k restored into the parts). The RNG state is restored last, in `fit`."""
        state, resume = TrainState(), self.resume
        if resume is None:
            return state, Progress(best=Best(), metrics={}, elapsed_s=0.0)
        check_train_set(resume, len(data.train_loader.dataset), self.ddp.world_size)
        restore_training(
            resume, model=model, optimizer=opt.optimizer, scheduler=opt.scheduler, scaler=hardware.precision.scaler,
            ema=opt.ema, replan=needs_replan(resume, self.cfg, opt.steps_per_epoch),
        )  # fmt: skip
        hardware.hw.threads.load_state_dict(resume.train_state.get("threads"), self.cfg.hardware.num_threads)
        progress = restore_progress(resume, state, opt.early, opt.checkpoints)
        if self.ddp.is_main:
            best = opt.checkpoints.reconcile_best(progress.best, resume.path, resume.train_state)
            progress = Progress(best=best, metrics=progress.metrics, elapsed_s=progress.elapsed_s)
            if resume.run_dir is None and best.epoch is not None:
                adopt_val_predictions(resume.path, self.run_dir)
        log.info(
            "resuming from %s: epoch %d, batch %d of %d, global step %d",
            resume.path, state.epoch + 1, state.batch_in_epoch, data.num_batches, state.global_step,
        )  # fmt: skip
        return state, progress

    def _setup_observers(
        self,
        hardware: Hardware,
        model: torch.nn.Module,
        data: DataParts,
        opt: Optimization,
        state: TrainState,
    ) -> Observers:
        """TensorBoard, the trackers, the backup, progress and the resource sampler, and the loop's observers."""
        cfg, tc, ddp = self.cfg, self.tc, self.ddp
        trackers = build_trackers(
            cfg,
            self.run_dir,
            ddp,
            self.resume,
            state.global_step,
            hardware.hw.describe_device(),
            self.overrides,
        )
        # A resumed run hides whatever the killed process logged after its checkpoint (TensorBoard purge).
        tb = TensorBoardLogger(
            self.run_dir,
            enabled=cfg.logger.tensorboard is not None and cfg.logging.tensorboard and ddp.is_main,
            purge_step=state.global_step + 1 if self.resume else None,
        )
        if self.resume is None:
            local = distributed.local_module(model)
            score = functools.partial(
                preview_probs, local, precision=hardware.precision, device=hardware.device
            )
            log_run_start(tb, cfg, self.config_yaml, data.train_loader, score)
        if ddp.is_main:
            local = distributed.local_module(model)
            report_summary(local, opt.optimizer, local.img_size, self.run_dir, tb, state.global_step)
        backup: ProjectBackup = instantiate(
            cfg.backup, run_dir=self.run_dir, base_path=cfg.base_path, config_yaml=self.config_yaml,
            overrides=self.overrides, _convert_="all",
        )  # fmt: skip
        progress = ProgressTracker(
            tc.num_epochs, data.num_batches, batch_size=data.train_loader.batch_size,
            mode=cfg.logging.progress, every_n_seconds=cfg.logging.every_n_seconds,
        )  # fmt: skip
        on_log, on_reading = fan_out([tb, trackers], progress, lambda: state.global_step)
        sampler = hardware.hw.sampler(on_reading, disk_path=self.run_dir)
        masks = [MaskObserver(tb, distributed.local_module(model))] if cfg.model.mask_head else []
        observers = [
            TensorBoardObserver(tb),
            TrackerObserver(trackers),
            *masks,
            EarlyStoppingObserver(opt.early, tc.early_stopping.enabled),
            CheckpointObserver(opt.checkpoints, tc.checkpoint.every_n_steps, data.num_batches),
            ProgressObserver(progress),
            CalibrationObserver(
                model, data.val_loader, hardware.precision, hardware.device, opt.checkpoints.best
            ),
            MetricsFileObserver(),
            BackupObserver(backup),
            *debug_observers(cfg, self.run_dir, hardware.device, data.num_batches),
        ]
        return Observers(trackers, tb, backup, progress, on_log, sampler, observers)
