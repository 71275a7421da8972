"""The setup phase of a `Trainer`: hardware, model, data, batch size, optimizer, schedule, EMA and the loop's
settings, each put on `self` for the loop (`training.runner`) to use. Split from the runner by job: what is
built once, before the first step, against what runs every epoch."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from deepfake.checks.start import start_checks
from deepfake.data.module import resolve_num_workers
from deepfake.model.temporal import clip_length
from deepfake.runs.checkpoint import unwrap
from deepfake.system import distributed
from deepfake.system.hardware import HardwareManager, describe
from deepfake.training.build import build_model, instantiate, seed_everything
from deepfake.training.checkpointer import Checkpointer
from deepfake.training.debug import describe_limits, is_debug_run, loader_limits
from deepfake.training.early_stopping import EarlyStopping
from deepfake.training.engine import LoopConfig, StepContext
from deepfake.training.faithfulness import SbiFaithfulness
from deepfake.training.freezing import BackboneSchedule
from deepfake.training.memory import fit_batch_size, probe_step
from deepfake.training.optimizer import build_optimizer
from deepfake.training.run_files import write_hardware

log = logging.getLogger("deepfake")


class TrainerSetup:
    """Builds a run's parts on `self`; `Trainer` sets `cfg`, `tc`, `run_dir` and `ddp` before `setup()`."""

    cfg: DictConfig
    tc: Any
    run_dir: Path
    ddp: distributed.DistContext
    resume: Any = None  # the checkpoint a Trainer continues (its weights replace any pretrained ones)

    def setup(self) -> None:
        log.info("run directory: %s", self.run_dir.resolve())
        seed_everything(self.cfg.seed)
        self._setup_hardware()
        self._setup_model_and_data()
        self._setup_optimization()

    def _setup_hardware(self) -> None:
        cfg, ddp = self.cfg, self.ddp
        self.hw = HardwareManager(**{**cfg.hardware, "device": ddp.device(cfg.hardware.device)})
        self.hw.configure(resolve_num_workers(cfg.data.num_workers))
        self.precision = self.hw.precision(self.tc.amp)
        self.device = self.hw.device
        summary = {**self.hw.summary(str(self.run_dir)), "world_size": ddp.world_size}
        if ddp.is_main:
            write_hardware(self.run_dir, summary)
        log.info(describe(summary))
        log.info("device: %s (%s), precision %s", self.device, self.hw.reason, self.precision.name)

    def _batch_size(self, model: torch.nn.Module, img_size: int) -> int:
        """`training.batch_size`, or under `auto_batch_size` on CUDA the largest that fits on every rank."""
        batch_size = self.tc.batch_size
        if not self.tc.auto_batch_size:
            return batch_size
        if self.device.type != "cuda":
            log.info("training.auto_batch_size applies to CUDA devices; keeping batch %d", batch_size)
            return batch_size
        probe = probe_step(model, self.precision, self.device, img_size)
        batch_size = self.ddp.min(fit_batch_size(probe, batch_size, self.device))  # every rank, same batch
        log.info("auto batch size: %d fits in GPU memory", batch_size)
        return batch_size

    def _setup_model_and_data(self) -> None:
        cfg, tc, ddp = self.cfg, self.tc, self.ddp
        model = build_model(cfg, resuming=self.resume is not None).to(self.device)
        img_size = cfg.data.img_size or model.img_size
        self.batch_size = self._batch_size(model, img_size)
        self.data = instantiate(
            cfg.data, img_size=img_size, batch_size=self.batch_size, eval_batch_size=tc.eval_batch_size,
            seed=cfg.seed, pin_memory=self.device.type == "cuda", rank=ddp.rank, world_size=ddp.world_size,
            clip_frames=clip_length(model), masks=cfg.model.mask_head, _convert_="all",
        )  # fmt: skip
        with ddp.main_first():  # rank 0 generates a missing synthetic set once; the others then read it
            self.data.setup()
        unwrap(model).img_size = img_size  # the size the loaders feed: what predict and export must reproduce
        self.model = distributed.wrap(model, ddp, self.device, cfg.distributed.sync_batchnorm)
        # Scan the test sets now, so a wrong path fails before training rather than after it. Without
        # data.test_sets, the data's own test split (when it has one) is reported at the end.
        own_split = "test" in self.data.samples and cfg.eval.score_test_split and not is_debug_run(cfg)
        self.test_sets = self.data.setup_test_sets() if cfg.data.test_sets or own_split else []
        train_limit, val_limit, fixed = loader_limits(cfg)  # the debug modes' batches (None: all)
        self.train_loader = self.data.train_dataloader(train_limit, fixed)
        self.val_loader = self.data.eval_dataloader("val", val_limit)
        self.val_videos = np.asarray(self.val_loader.dataset.videos, dtype=object)
        # eval.explain with SBI: the heatmaps of blended validation fakes scored against their masks each epoch
        self.faithfulness = SbiFaithfulness.from_config(cfg, self.val_loader.dataset, unwrap(model))
        self.num_batches = len(self.train_loader)
        if (note := describe_limits(cfg, self.num_batches, len(self.val_loader))) is not None:
            log.info(note)
        if cfg.check_on_start:
            start_checks(cfg, self.data.samples, self.train_loader.batch_size)

    def _setup_optimization(self) -> None:
        tc, world = self.tc, self.ddp.world_size
        self.steps_per_epoch = math.ceil(self.num_batches / tc.grad_accum_steps)
        log.info(
            "batch %d x %d accumulation x %d processes = effective batch %d; %d optimizer steps per epoch",
            self.batch_size, tc.grad_accum_steps, world, self.batch_size * tc.grad_accum_steps * world,
            self.steps_per_epoch,
        )  # fmt: skip
        self.optimizer, self.scheduler = build_optimizer(
            self.model, self.cfg, self.steps_per_epoch, tc.num_epochs
        )
        self.backbone = BackboneSchedule(
            self.cfg.model.freeze_backbone,
            tc.unfreeze_at_epoch,
            tc.unfreeze_warmup_epochs,
            self.steps_per_epoch,
        )
        self.ema = None
        if tc.ema.enabled:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(
                distributed.local_module(self.model), decay=tc.ema.decay, use_warmup=tc.ema.warmup
            )
        self.step_context = StepContext(
            self.model, self.optimizer, self.precision, self.device, scheduler=self.scheduler, ema=self.ema,
            backbone=self.backbone,
        )  # fmt: skip
        self.loop = LoopConfig.from_config(self.cfg, pos_weight=self.data.pos_weight)
        self.early = EarlyStopping(**{k: v for k, v in tc.early_stopping.items() if k != "enabled"})
        self.checkpoints = Checkpointer(
            self.run_dir / "checkpoints", tc.checkpoint.keep_top_k, tc.monitor_mode
        )
