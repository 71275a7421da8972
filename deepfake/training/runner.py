"""`train(cfg)`: builds a `Trainer` for the config and runs it; the Trainer wires config, hardware, data,
model, loop, observers and checkpoints into one run."""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from deepfake.config import Config
from deepfake.exits import error_message, log_to_files
from deepfake.extraction.settings import manifest_settings
from deepfake.reporting.eval_sets import evaluate_best
from deepfake.reporting.report import write_end_of_run
from deepfake.runs.backup import code_version
from deepfake.runs.checkpoint import build_state
from deepfake.system import distributed
from deepfake.system.interrupt import GracefulInterrupt, TrainingInterrupted
from deepfake.training.build import seed_everything
from deepfake.training.debug import check_verdict, is_debug_run
from deepfake.training.early_stopping import Best, improved
from deepfake.training.engine import EpochHooks, TrainState, train_epoch
from deepfake.training.memory import OutOfMemory, oom_message
from deepfake.training.observers import (
    EpochEnd,
)
from deepfake.training.resume import (
    Resume,
    restore_rng,
    resume_command,
)
from deepfake.training.run_dir import open_run
from deepfake.training.run_files import (
    log_best,
    log_next_steps,
    val_metrics,
    warn_if_undefined,
    write_metrics,
    write_plots,
)
from deepfake.training.setup import TrainerSetup
from deepfake.training.start import checked_training_config
from deepfake.training.validation import predict_split

log = logging.getLogger("deepfake")


def train(cfg: Config | DictConfig | dict) -> float:
    """Train one detector as configured and return the best value of `training.monitor`.

    With `resume` (or `training.auto_resume` and an existing last.pt) the run continues in its own
    directory from the saved state; a signal stops it cleanly (see `deepfake.system.interrupt`).
    """
    cfg = checked_training_config(cfg)
    ddp = distributed.setup(cfg.hardware.device, cfg.distributed.backend, cfg.distributed.timeout_min)
    handlers: list[logging.Handler] = []
    try:
        cfg, run_dir, resume, overrides, handlers = open_run(cfg, ddp)
        with distributed.quiet_unless_main(ddp):
            return Trainer(cfg, run_dir, resume, overrides, ddp).run()
    except Exception as e:
        message = error_message(e)
        if message is not None and handlers:  # this call's own train.log; Hydra's gets it from deepfake.exits
            log_to_files(message, handlers)
        raise
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        ddp.close()


class Trainer(TrainerSetup):
    """One training run, torchtune-recipe style: its parts and progress live on `self`.

    `setup()` builds every part with the `_setup_x()` builders of `deepfake.training.setup` (hardware, model,
    data, optimisation, the resumed progress, observers) and assigns them all; `fit()` runs the epochs, each closed by `end_epoch()`, which hands an `EpochEnd` to the observers (TensorBoard, early
    stopping, checkpoints, progress, metrics file, backup); `finish(outcome)` writes the plots, scores the
    test sets and returns the best monitored value. `run()` does all of it in that order.
    """

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        resume: Resume | None,
        overrides: list[str],
        ddp: distributed.DistContext,
    ) -> None:
        self.cfg, self.tc = cfg, cfg.training
        self.run_dir, self.resume, self.overrides, self.ddp = run_dir, resume, overrides, ddp
        self.t_start = time.perf_counter()
        self.config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        self.extraction = manifest_settings(cfg.data)  # saved in checkpoints: predict.py crops videos alike
        self.stop_reason = "completed"
        self.outcome = "end"  # how the loop ended: end, interrupt, abort or crash (set by fit)
        self.labels_seen: np.ndarray | None = None  # the last validation's labels: an undefined metric's why
        self.calibration: dict[str, Any] | None = None  # best.pt's fitted temperature, for metrics.json
        # The best epoch's validation (epoch, labels, logits), when this process validated it.
        self.best_logits: tuple[int, np.ndarray, np.ndarray] | None = None
        self.operating_point: dict[str, Any] | None = None  # best.pt's validation threshold, for metrics.json

    def setup(self) -> None:
        """Build every part (`deepfake.training.setup`), continue `resume`'s checkpoint, and assign them: every
        attribute the loop uses is set here."""
        log.info("run directory: %s", self.run_dir.resolve())
        seed_everything(self.cfg.seed)
        hardware = self._setup_hardware()
        self.hw, self.precision, self.device = hardware.hw, hardware.precision, hardware.device
        model = self._setup_model(hardware)
        data = self._setup_data(hardware, model)
        self.data, self.batch_size, self.test_sets = data.data, data.batch_size, data.test_sets
        self.train_loader, self.num_batches = data.train_loader, data.num_batches
        self.val_loader, self.val_videos = data.val_loader, data.val_videos
        self.faithfulness = data.faithfulness
        self.model = distributed.wrap(model, self.ddp, self.device, self.cfg.distributed.sync_batchnorm)
        opt = self._setup_optimization(hardware, self.model, data)
        self.steps_per_epoch = opt.steps_per_epoch
        self.optimizer, self.scheduler, self.ema = opt.optimizer, opt.scheduler, opt.ema
        self.backbone, self.step_context, self.loop = opt.backbone, opt.step_context, opt.loop
        self.early, self.checkpoints = opt.early, opt.checkpoints
        self.state, progress = self._setup_resume(self.model, hardware, data, opt)
        self.best, self.final, self.elapsed_before = progress.best, progress.metrics, progress.elapsed_s
        self.start = (self.state.epoch, self.state.global_step)  # where this process began: `progressed()`
        parts = self._setup_observers(hardware, self.model, data, opt, self.state)
        self.trackers, self.tb, self.backup = parts.trackers, parts.tb, parts.backup
        self.progress, self.on_log, self.sampler = parts.progress, parts.on_log, parts.sampler
        self.observers = parts.observers
        self.interrupt = GracefulInterrupt()  # entered by fit: SIGINT/SIGTERM then stop at the next step
        self.stop = distributed.AgreedStop(
            self.interrupt, self.ddp, self.device, every=self.tc.log_every_n_steps
        )

    def run(self) -> float:
        try:
            self.setup()
            try:
                best = self.finish(self.fit())
            except BaseException:
                self.trackers.close("crash" if self.outcome == "end" else self.outcome)
                raise
            self.trackers.close("end")  # after finish: the plots, reports and test results they upload exist
        finally:
            self.close_loaders()
        check_verdict(self.observers)  # debug.overfit_batches: passed, or OverfitCheckFailed (exit 1)
        return best

    def close_loaders(self) -> None:
        """Stop the loaders' persistent workers now. A process that lives on after the run (a joblib sweep's
        loky worker) would otherwise keep them, and its exit would wait on them forever."""
        for name in ("train_loader", "val_loader"):
            loader = getattr(self, name, None)
            if loader is not None:
                loader.close()

    # ----- the loop -----

    def fit(self) -> str:
        """Train the remaining epochs; returns the outcome: end, or interrupt (a signal, checkpoint saved)."""
        if self.resume is not None:
            restore_rng(self.resume)  # last: every draw until the checkpoint's step is then replayed
        self.outcome = "end"
        with self.interrupt:
            try:
                self.progress.start()
                self.sampler.start()
                self._epochs()
            except TrainingInterrupted as e:
                self.outcome, self.stop_reason = "abort", f"aborted: {e}"
                raise
            except torch.cuda.OutOfMemoryError:
                self.outcome, self.stop_reason = "crash", "failed: out of GPU memory"
                raise OutOfMemory(oom_message(self.batch_size, self.device)) from None
            except BaseException as e:
                self.outcome, self.stop_reason = "crash", f"failed: {type(e).__name__}: {e}"
                raise
            finally:
                self.sampler.stop()
                for observer in self.observers:
                    observer.on_close(self, self.outcome)
        return self.outcome

    def _epochs(self) -> None:
        if self.finished():
            log.info(
                "nothing to train: the run already finished at epoch %d; pass training.num_epochs=N "
                "(or a larger training.early_stopping.patience) to continue it",
                self.state.epoch,
            )
        for epoch in range(self.state.epoch, self.tc.num_epochs):
            if self.stop.agree() or (self.tc.early_stopping.enabled and self.early.stopped):
                break
            t0 = time.perf_counter()
            train_stats = self.train_one_epoch(epoch)
            if self.stop.agree():
                break
            end = self.end_epoch(epoch, train_stats, t0)
            if end.stop is not None:
                self.stop_reason = end.stop
                log.info(self.stop_reason)
                break
        if self.stop.signum is not None and not self.finished():
            self.outcome = "interrupt"
            self.stop_reason = f"interrupted by {signal.Signals(self.stop.signum).name}"
            self.save("interrupt")

    def finished(self) -> bool:
        return self.state.epoch >= self.tc.num_epochs or (
            self.tc.early_stopping.enabled and self.early.stopped
        )

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        state = self.state
        state.epoch = epoch
        if self.backbone.set_epoch(distributed.local_module(self.model), epoch) and self.ddp.enabled:
            # DDP registers the parameters that need gradients when it wraps: rewrap with the backbone's.
            self.model = self.step_context.model = distributed.wrap(
                distributed.local_module(self.model), self.ddp, self.device
            )
        self.train_loader.sampler.set_epoch(epoch, start=state.batch_in_epoch * self.train_loader.batch_size)
        self.progress.start_epoch(epoch, state.batch_in_epoch)
        self.hw.reset_peak_memory()
        hooks = EpochHooks(log=self.on_log, on_step=self._on_step, should_stop=self.stop)
        return train_epoch(self.step_context, self.train_loader, state, self.loop, self.num_batches, hooks)

    def _on_step(self, state: TrainState) -> None:
        self.hw.threads.after_step()  # times the step; during the thread probe, sets the next step's count
        for observer in self.observers:
            observer.on_step(self, state)

    def _validate(self, model: torch.nn.Module, prefix: str) -> tuple[dict[str, float], tuple, np.ndarray]:
        """Each rank predicts its shard; all ranks get the whole split, so the metrics are a single run's.
        Returns the metrics, (labels, probabilities, indices) and the logits, all in dataset order."""
        labels, probs, index, logits = predict_split(
            model, self.val_loader, self.precision, self.device, self.cfg.eval.tta
        )
        labels, scores, index = distributed.gather_predictions(
            self.ddp, labels, np.stack([probs, logits], axis=1), index
        )
        predictions = (labels, np.ascontiguousarray(scores[:, 0]), index)
        return val_metrics(*predictions, self.val_videos, prefix, self.cfg), predictions, scores[:, 1]

    def end_epoch(self, epoch: int, train_stats: dict[str, float], started: float) -> EpochEnd:
        """Validate, pick the best, and hand the epoch to the observers."""
        tc, state = self.tc, self.state
        state.batch_in_epoch = 0
        self.hw.threads.end_pass()  # a thread probe still running ends with the epoch's training
        self.progress.phase("validate")
        train_stats = distributed.reduce_train_stats(self.ddp, train_stats)
        val, predictions, logits = self._validate(distributed.local_module(self.model), "val")
        if self.faithfulness is not None:
            val.update(self.faithfulness(distributed.local_module(self.model), self.device))
        if self.ema is not None:
            val.update(self._validate(self.ema.module, "val_ema")[0])
        monitored = val.get(tc.monitor)
        if monitored is None:
            raise KeyError(f"training.monitor={tc.monitor} is not a validation metric; have {sorted(val)}")
        self.labels_seen = predictions[0]
        warn_if_undefined(tc.monitor, monitored, predictions[0], epoch + 1)
        if self.scheduler is not None:
            self.scheduler.step_epoch(monitored)
        is_best = improved(monitored, self.best.value, tc.monitor_mode)
        # The run's `best` changes only once best.pt is durable (`save`); until then this epoch is a candidate.
        candidate = Best(monitored, epoch + 1, dict(val)) if is_best else self.best
        val["val/auc_best"] = candidate.metrics.get("val/auc", math.nan)
        peak = self.hw.peak_memory_gb()
        state.epoch = epoch + 1
        self.final = {**train_stats, **val, "epoch": epoch + 1}
        end = EpochEnd(
            epoch=epoch + 1, global_step=state.global_step, train=train_stats, val=val, monitored=monitored,
            improved=is_best, best=candidate, predictions=predictions, val_dataset=self.val_loader.dataset,
            peak_gb=peak, started=started,
        )  # fmt: skip
        for observer in self.observers:
            observer.on_epoch_end(self, end)
        if is_best and self.best.epoch == epoch + 1:  # best.pt holds these weights: calibration reuses them
            self.best_logits = (epoch + 1, predictions[0], logits)
        return end

    # ----- saving -----

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def progressed(self) -> bool:
        return (self.state.epoch, self.state.global_step) != self.start

    def checkpoint_state(self, saved_at: str, best: Best) -> dict[str, Any]:
        """Everything an exact resume needs, as plain tensors and containers."""
        train_state = {
            **self.state.state_dict(),
            "steps_per_epoch": self.steps_per_epoch,
            "num_train_samples": len(self.train_loader.dataset),
            "world_size": self.ddp.world_size,  # a mid-epoch position indexes this many shards
            "threads": self.hw.threads.state_dict(),  # the intra-op count (and a running probe): exact resume
            "elapsed_s": self.elapsed(),
            "saved_at": saved_at,
        }
        state = build_state(
            model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.precision.scaler,
            ema=self.ema, train_state=train_state, config_yaml=self.config_yaml, metrics=self.final,
            monitor={"best": best.state_dict(), "early_stopping": self.early.state_dict(), "top_k": self.checkpoints.top_k},
        )  # fmt: skip
        if self.extraction is not None:
            state["extraction"] = self.extraction
        state["trackers"] = self.trackers.state_dict()  # a resume continues the same tracker runs
        return state

    def save(self, saved_at: str, new_best: Best | None = None) -> None:
        """Checkpoint; a new best is recorded (in last.pt, then in `self.best`) only with its durable best.pt."""
        if self.ddp.is_main:  # only rank 0 writes; the others hold identical weights
            self.tb.flush()  # the events up to this step are on disk before the checkpoint that covers them
            state = self.checkpoint_state(saved_at, new_best or self.best)
            self.checkpoints.save_last(state, as_best=new_best is not None)
            self.backup.checkpoint_saved(
                self.checkpoints.last, {"epoch": self.state.epoch, "global_step": self.state.global_step}
            )
        if new_best is not None:
            self.best = new_best

    def write_metrics(self, stop_reason: str) -> None:
        write_metrics(
            self.run_dir,
            self.cfg,
            self.final,
            self.best,
            stop_reason,
            self.state,
            self.elapsed(),
            self.calibration,
            self.operating_point,
            code_version(self.backup.provenance),
        )

    # ----- the end -----

    def finish(self, outcome: str) -> float:
        """After the loop: plots, the interrupt message, the best epoch, test-set scores; the best value."""
        if self.test_sets:  # the test-set pass starts from an empty cache (a full gc.collect costs ~0.3 s)
            self.hw.free_memory()
        if outcome != "abort" and self.ddp.is_main:
            write_plots(self.run_dir)
        if outcome == "interrupt":
            self._stopped_by_signal()
        log_best(self.tc.monitor, self.best, self.labels_seen, self.checkpoints.last)
        scored: dict[str, dict] = {}
        has_best = self.ddp.is_main and self.checkpoints.best.is_file()
        if self.test_sets and has_best:
            which = "data.test_sets" if self.cfg.data.test_sets else "the data's test split"
            log.info("scoring best.pt (epoch %s, chosen on %s) on %s: a report, never a selection",
                     self.best.epoch, self.tc.monitor, which)  # fmt: skip
            scored = evaluate_best(
                self.run_dir, self.model, self.data, self.test_sets, self.precision, self.device, self.cfg
            )
        if outcome == "end" and self.ddp.is_main:  # report.html and MODEL_CARD.md: a failure only warns
            eval_dir = Path(self.cfg.eval.out_dir) if self.cfg.eval.out_dir else self.run_dir / "eval"
            write_end_of_run(self.run_dir, eval_dir, list(scored))
        if self.tb.enabled:
            log.info("inspect with: tensorboard --logdir %s", self.run_dir)
        if has_best and not is_debug_run(self.cfg):
            log_next_steps(self.run_dir)
        return float(self.best.value) if self.best.value is not None else math.nan

    def _stopped_by_signal(self) -> None:
        # Every rank stops together; the others wait for rank 0's checkpoint and backup, because a rank that
        # exits non-zero first makes torchrun stop the rest, rank 0 mid-save.
        self.ddp.barrier()
        state = self.state
        assert self.stop.signum is not None
        message = (
            f"{self.stop_reason} at epoch {state.epoch + 1}, batch {state.batch_in_epoch} (global step "
            f"{state.global_step}); checkpoint saved to {self.checkpoints.last}. Resume with: "
            f"{resume_command(self.run_dir)}"
        )
        log.warning(message)
        raise TrainingInterrupted(self.stop.signum, message)
