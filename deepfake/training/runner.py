"""`train(cfg)`: wires config, hardware, data, model, loop, metrics and checkpoints into one run."""

from __future__ import annotations

import logging
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from deepfake.checks.start import start_checks
from deepfake.cli import error_message, log_to_files
from deepfake.config import Config, to_config
from deepfake.data.module import resolve_num_workers
from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.scoring import evaluate_best
from deepfake.reporting.progress import ProgressTracker, fan_out
from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.reporting.tensorboard_views import best_scalars, log_run_start, log_val_epoch
from deepfake.runs.backup import ProjectBackup
from deepfake.runs.run_dir import discard_fresh_run_dir, open_run
from deepfake.runs.run_files import (
    adopt_val_predictions,
    log_best,
    save_val_predictions,
    val_metrics,
    warn_if_undefined,
    write_hardware,
    write_metrics,
    write_plots,
)
from deepfake.system import distributed
from deepfake.system.hardware import HardwareManager, describe
from deepfake.training.checkpoint import Checkpointer, build_state, unwrap
from deepfake.training.early_stopping import EarlyStopping, improved
from deepfake.training.engine import LoopConfig, TrainState, train_epoch, validate
from deepfake.training.interrupt import GracefulInterrupt, TrainingInterrupted
from deepfake.training.memory import OutOfMemory, fit_batch_size, oom_message, probe_step
from deepfake.training.resume import (
    Resume,
    check_train_set,
    needs_replan,
    restore_progress,
    restore_rng,
    restore_training,
    resume_command,
)

log = logging.getLogger("deepfake")


def instantiate(config: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, but a UserError raised by the target surfaces as itself, not wrapped."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: Config | DictConfig | dict) -> float:
    """Train one detector as configured and return the best value of `training.monitor`.

    With `resume` (or `training.auto_resume` and an existing last.pt) the run continues in its own
    directory from the saved state; a signal stops it cleanly (see `deepfake.training.interrupt`).
    """
    try:
        cfg = to_config(cfg)
        if cfg.check:
            raise ConfigError(
                "check=true runs the pre-flight check, not training: use `python train.py check=true ...`, "
                "or deepfake.checks.preflight.check(cfg) from Python"
            )
    except UserError:
        discard_fresh_run_dir()
        raise
    ddp = distributed.setup(cfg.hardware.device, cfg.distributed.backend, cfg.distributed.timeout_min)
    handlers: list[logging.Handler] = []
    try:
        cfg, run_dir, resume, overrides, handlers = open_run(cfg, ddp)
        with distributed.quiet_unless_main(ddp):
            return _train(cfg, run_dir, resume, overrides, ddp)
    except Exception as e:
        message = error_message(e)
        if message is not None and handlers:  # this call's own train.log; Hydra's gets it from deepfake.cli
            log_to_files(message, handlers)
        raise
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        ddp.close()


def _train(
    cfg: DictConfig, run_dir: Path, resume: Resume | None, overrides: list[str], ddp: distributed.DistContext
) -> float:
    t_start = time.perf_counter()
    tc = cfg.training
    log.info("run directory: %s", run_dir.resolve())
    seed_everything(cfg.seed)

    hw = HardwareManager(**{**cfg.hardware, "device": ddp.device(cfg.hardware.device)})
    hw.configure(resolve_num_workers(cfg.data.num_workers))
    precision = hw.precision(tc.amp)
    device = hw.device
    summary = {**hw.summary(str(run_dir)), "world_size": ddp.world_size}
    if ddp.is_main:
        write_hardware(run_dir, summary)
    log.info(describe(summary))
    log.info("device: %s (%s), precision %s", device, hw.reason, precision.name)

    model = instantiate(cfg.model).to(device)
    img_size = cfg.data.img_size or model.img_size
    batch_size = tc.batch_size
    if tc.auto_batch_size:
        if device.type == "cuda":
            batch_size = fit_batch_size(probe_step(model, precision, device, img_size), batch_size, device)
            batch_size = ddp.min(batch_size)  # every rank must step with the same batch
            log.info("auto batch size: %d fits in GPU memory", batch_size)
        else:
            log.info("training.auto_batch_size applies to CUDA devices; keeping batch %d", batch_size)
    data = instantiate(
        cfg.data,
        img_size=img_size,
        batch_size=batch_size,
        eval_batch_size=tc.eval_batch_size,
        seed=cfg.seed,
        pin_memory=device.type == "cuda",
        rank=ddp.rank,
        world_size=ddp.world_size,
        _convert_="all",
    )
    with ddp.main_first():  # rank 0 generates a missing synthetic set once; the others then read it
        data.setup()
    unwrap(model).img_size = img_size  # the size the loaders feed: what predict and export must reproduce
    model = distributed.wrap(model, ddp, device, cfg.distributed.sync_batchnorm)
    # Scan the test sets now, so a wrong path fails before training rather than after it.
    test_sets = data.setup_test_sets() if cfg.data.test_sets else []
    train_loader = data.train_dataloader()
    val_loader = data.eval_dataloader("val")
    val_videos = np.asarray(val_loader.dataset.videos, dtype=object)
    num_batches = len(train_loader)
    if cfg.check_on_start:
        start_checks(cfg, data.samples, train_loader.batch_size)
    steps_per_epoch = math.ceil(num_batches / tc.grad_accum_steps)
    log.info(
        "batch %d x %d accumulation x %d processes = effective batch %d; %d optimizer steps per epoch",
        batch_size, tc.grad_accum_steps, ddp.world_size, batch_size * tc.grad_accum_steps * ddp.world_size,
        steps_per_epoch,
    )  # fmt: skip

    optimizer, scheduler = unwrap(model).configure_optimizers(
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        optimizer=instantiate(tc.optimizer, _convert_="all"),
        scheduler=instantiate(tc.scheduler, _convert_="all"),
        steps_per_epoch=steps_per_epoch,
        num_epochs=tc.num_epochs,
    )
    ema = None
    if tc.ema.enabled:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(distributed.local_module(model), decay=tc.ema.decay, use_warmup=tc.ema.warmup)

    loop = LoopConfig(
        grad_clip_mode=tc.grad_clip.mode,
        grad_clip_max=tc.grad_clip.max,
        accum_steps=tc.grad_accum_steps,
        on_nan=tc.on_nan,
        log_every=tc.log_every_n_steps,
        pos_weight=data.pos_weight,
    )
    state = TrainState()
    early = EarlyStopping(**{k: v for k, v in tc.early_stopping.items() if k != "enabled"})
    best: dict[str, Any] = {"value": None, "epoch": None, "metrics": {}}
    ckpts = Checkpointer(run_dir / "checkpoints", tc.checkpoint.keep_top_k, tc.monitor_mode)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    stop_reason = "completed"
    labels_seen: np.ndarray | None = None  # the last validation's labels, to explain an undefined metric
    final: dict[str, float] = {}
    elapsed_before = 0.0
    if resume is not None:
        check_train_set(resume, len(train_loader.dataset), ddp.world_size)
        restore_training(
            resume, model=model, optimizer=optimizer, scheduler=scheduler, scaler=precision.scaler, ema=ema,
            replan=needs_replan(resume, cfg, steps_per_epoch),
        )  # fmt: skip
        best, final, elapsed_before = restore_progress(resume, state, early, ckpts)
        if ddp.is_main:
            best = ckpts.reconcile_best(best, resume.path, resume.train_state)
            if resume.run_dir is None and best["epoch"] is not None:
                adopt_val_predictions(resume.path, run_dir)
        log.info(
            "resuming from %s: epoch %d, batch %d of %d, global step %d",
            resume.path, state.epoch + 1, state.batch_in_epoch, num_batches, state.global_step,
        )  # fmt: skip
    # A resumed run hides whatever the killed process logged after its checkpoint (TensorBoard purge).
    tb = TensorBoardLogger(
        run_dir,
        enabled=cfg.logging.tensorboard and ddp.is_main,
        purge_step=state.global_step + 1 if resume else None,
    )
    if resume is None:
        log_run_start(tb, cfg, config_yaml, train_loader)
    backup: ProjectBackup = instantiate(
        cfg.backup, run_dir=run_dir, base_path=cfg.base_path, config_yaml=config_yaml, overrides=overrides,
        _convert_="all",
    )  # fmt: skip
    start = (state.epoch, state.global_step)
    progress = ProgressTracker(
        tc.num_epochs,
        num_batches,
        batch_size=train_loader.batch_size,
        mode=cfg.logging.progress,
        every_n_seconds=cfg.logging.every_n_seconds,
    )

    on_log, on_reading = fan_out(tb, progress, lambda: state.global_step)
    sampler = hw.sampler(on_reading, disk_path=run_dir)

    def checkpoint_state(saved_at: str, best: dict[str, Any]) -> dict[str, Any]:
        return build_state(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=precision.scaler,
            ema=ema,
            train_state={
                "epoch": state.epoch,
                "global_step": state.global_step,
                "batch_in_epoch": state.batch_in_epoch,
                "skipped_steps": state.skipped_steps,
                "steps_per_epoch": steps_per_epoch,
                "num_train_samples": len(train_loader.dataset),
                "world_size": ddp.world_size,  # a mid-epoch position indexes this many shards
                "elapsed_s": elapsed_before + time.perf_counter() - t_start,
                "saved_at": saved_at,
            },
            monitor={"best": best, "early_stopping": early.state_dict(), "top_k": ckpts.top_k},
            config_yaml=config_yaml,
            metrics=final,
        )

    def save(saved_at: str, new_best: dict[str, Any] | None = None) -> None:
        """Checkpoint; a new best is recorded (in last.pt) only together with its durable best.pt."""
        if not ddp.is_main:  # only rank 0 writes; the others hold identical weights
            return
        tb.flush()  # the events up to this step are on disk before the checkpoint that covers them
        ckpts.save_last(checkpoint_state(saved_at, new_best or best), as_best=new_best is not None)
        backup.checkpoint_saved(ckpts.last, {"epoch": state.epoch, "global_step": state.global_step})

    every = tc.checkpoint.every_n_steps

    def on_step(s: TrainState) -> None:
        progress.step(s)
        # The epoch's last step is covered by the end-of-epoch checkpoint, which includes validation.
        if every and s.global_step % every == 0 and s.batch_in_epoch < num_batches:
            save("step")

    if resume is not None:
        restore_rng(resume)
    interrupt = GracefulInterrupt()
    stop = distributed.AgreedStop(interrupt, ddp, device, every=tc.log_every_n_steps)
    outcome = "end"
    with interrupt:
        try:
            progress.start()
            sampler.start()
            if state.epoch >= tc.num_epochs or (tc.early_stopping.enabled and early.stopped):
                log.info(
                    "nothing to train: the run already finished at epoch %d; pass training.num_epochs=N "
                    "(or a larger training.early_stopping.patience) to continue it",
                    state.epoch,
                )
            for epoch in range(state.epoch, tc.num_epochs):
                if stop.agree() or (tc.early_stopping.enabled and early.stopped):
                    break
                t0 = time.perf_counter()
                state.epoch = epoch
                train_loader.sampler.set_epoch(epoch, start=state.batch_in_epoch * batch_size)
                progress.start_epoch(epoch, state.batch_in_epoch)
                hw.reset_peak_memory()
                train_stats = train_epoch(
                    model, train_loader, optimizer, scheduler, precision, state, loop, device,
                    num_batches=num_batches, log=on_log, ema=ema, should_stop=stop, on_step=on_step,
                )  # fmt: skip
                if stop.agree():
                    break
                state.batch_in_epoch = 0
                progress.phase("validate")
                train_stats = distributed.reduce_train_stats(ddp, train_stats)
                # Each rank predicts its shard; all ranks get the whole split, so the metrics are a single run's.
                labels, probs, index = distributed.gather_predictions(
                    ddp, *validate(distributed.local_module(model), val_loader, precision, device)
                )
                val = val_metrics(labels, probs, index, val_videos, "val", cfg)
                if ema is not None:
                    ema_out = distributed.gather_predictions(
                        ddp, *validate(ema.module, val_loader, precision, device)
                    )
                    val.update(val_metrics(*ema_out, val_videos, "val_ema", cfg))
                monitored = val.get(tc.monitor)
                if monitored is None:
                    raise KeyError(
                        f"training.monitor={tc.monitor} is not a validation metric; have {sorted(val)}"
                    )
                labels_seen = labels
                warn_if_undefined(tc.monitor, monitored, labels, epoch + 1)
                if scheduler is not None:
                    scheduler.step_epoch(monitored)
                is_best = improved(monitored, best["value"], tc.monitor_mode)
                # `best` changes only once best.pt is durable; until then this epoch is a candidate.
                candidate = (
                    {"value": monitored, "epoch": epoch + 1, "metrics": dict(val)} if is_best else best
                )
                val["val/auc_best"] = candidate["metrics"].get("val/auc", math.nan)
                peak = hw.peak_memory_gb()
                epoch_scalars = {
                    **val,
                    **best_scalars(candidate["metrics"]),
                    "train/epoch_loss": train_stats["train/epoch_loss"],
                }
                if peak is not None:
                    epoch_scalars["hw/gpu_peak_mem_gb"] = peak
                tb.scalars(state.global_step, epoch_scalars)
                log_val_epoch(tb, state.global_step, epoch, labels, probs, index, val_loader.dataset, cfg)
                state.epoch = epoch + 1
                final = {**train_stats, **val, "epoch": epoch + 1}
                stop_early = tc.early_stopping.enabled and early.step(val, epoch + 1)
                in_top_k = ckpts.enters_top_k(monitored, epoch + 1)
                save("epoch", candidate if is_best else None)
                best = candidate
                if is_best and ddp.is_main:
                    save_val_predictions(run_dir, val_loader.dataset, (labels, probs, index))
                if in_top_k and ddp.is_main:
                    ckpts.copy_last(ckpts.epoch_file(epoch + 1))
                    ckpts.prune_top_k()
                progress.end_epoch(train_stats, val, time.perf_counter() - t0, peak)
                if backup.due(epoch + 1) and ddp.is_main:
                    elapsed = elapsed_before + time.perf_counter() - t_start
                    write_metrics(run_dir, cfg, final, best, "running", state, elapsed)
                    backup.create_backup("epoch", state.epoch, state.global_step)
                if stop_early:
                    stop_reason = early.reason or "early stopping"
                    log.info(stop_reason)
                    break
            finished = state.epoch >= tc.num_epochs or (tc.early_stopping.enabled and early.stopped)
            if stop.signum is not None and not finished:
                outcome = "interrupt"
                stop_reason = f"interrupted by {signal.Signals(stop.signum).name}"
                save("interrupt")
        except TrainingInterrupted as e:
            outcome, stop_reason = "abort", f"aborted: {e}"
            raise
        except torch.cuda.OutOfMemoryError:
            outcome, stop_reason = "crash", "failed: out of GPU memory"
            raise OutOfMemory(oom_message(batch_size, device)) from None
        except BaseException as e:
            outcome, stop_reason = "crash", f"failed: {type(e).__name__}: {e}"
            raise
        finally:
            sampler.stop()
            progress.close()
            tb.close()
            duration = elapsed_before + time.perf_counter() - t_start
            progressed = (state.epoch, state.global_step) != start
            if ddp.is_main:
                write_metrics(run_dir, cfg, final, best, stop_reason, state, duration)
                if outcome in ("interrupt", "crash") or (
                    outcome == "end" and progressed and backup.last_step != state.global_step
                ):
                    backup.exit_backup(outcome, state.epoch, state.global_step)

    hw.free_memory()
    if outcome != "abort" and ddp.is_main:
        write_plots(run_dir)
    if outcome == "interrupt":
        # Every rank stops together; the others wait for rank 0's checkpoint and backup, because a rank that
        # exits non-zero first makes torchrun stop the rest, rank 0 mid-save.
        ddp.barrier()
        assert stop.signum is not None
        message = (
            f"{stop_reason} at epoch {state.epoch + 1}, batch {state.batch_in_epoch} (global step "
            f"{state.global_step}); checkpoint saved to {ckpts.last}. Resume with: {resume_command(run_dir)}"
        )
        log.warning(message)
        raise TrainingInterrupted(stop.signum, message)
    log_best(tc.monitor, best, labels_seen, ckpts.last)
    if test_sets and ddp.is_main and (run_dir / "checkpoints" / "best.pt").is_file():
        evaluate_best(run_dir, model, data, test_sets, precision, device, cfg)
    if tb.enabled:
        log.info("inspect with: tensorboard --logdir %s", run_dir)
    return float(best["value"]) if best["value"] is not None else math.nan
