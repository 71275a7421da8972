"""What a job of `python train.py -m ...` does around `train`: a failure is recorded, not fatal to the sweep.

A sweep job that raises (a bad value, a missing dataset, a NaN loss, a bug) logs the reason in its own
train.log and marks its metrics.json as failed. Under Hydra's basic sweeper it then returns NaN, since a raised
job would stop the sweep; the Optuna sweeper gets the exception and records a failed trial. Either way the other
jobs run, and the sweep callback (deepfake.sweeps.callbacks) summarises every job and exits with status 1 naming the
failed ones. A single run keeps `run_reporting_errors`: one `error:` line
and exit 2 for a user error, a traceback for a bug.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from deepfake.errors import UserError
from deepfake.exits import run_reporting_errors
from deepfake.runs.fileio import atomic_write
from deepfake.sweeps.gpu_slots import assign_gpu
from deepfake.training.early_stopping import Best

log = logging.getLogger("deepfake")


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(fn: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """Run `fn(cfg)` as this Hydra job: a single run reports errors; a sweep job records them and goes on."""
    if not in_sweep():
        return run_reporting_errors(fn, cfg)
    hydra_cfg = HydraConfig.get()
    if is_joblib(hydra_cfg.launcher):
        # loky makes itself the default start method in its workers, and its processes cannot host DataLoader
        # workers: give them back the platform's default (fork on Linux, spawn on macOS and Windows).
        multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)
        if cfg.hardware.device in ("auto", "cuda"):
            from joblib import effective_n_jobs

            assign_gpu(hydra_cfg.sweep.dir, effective_n_jobs(hydra_cfg.launcher.n_jobs))
    if is_submitit(hydra_cfg.launcher) and not overridden(hydra_cfg.overrides.task, "training.auto_resume"):
        # A pre-empted or timed-out job is requeued into the same run directory: continue it, never start over.
        cfg.training.auto_resume = True
    t0 = time.perf_counter()
    try:
        return float(fn(cfg))
    except Exception as e:  # any failure of one job: recorded for the summary, the sweep goes on
        if isinstance(e, UserError):
            log.error("error: %s", e)
        else:
            log.exception("job %s failed", hydra_cfg.job.num)
        if int(os.environ.get("RANK", "0")) == 0:  # in a multi-task job only rank 0 writes
            record_failure(Path(hydra_cfg.runtime.output_dir), e, time.perf_counter() - t0)
        if is_optuna(hydra_cfg.sweeper):
            raise  # the Optuna sweeper records a raised job as a failed trial and goes on (max_failure_rate)
        return math.nan  # the basic sweeper would stop the whole sweep on a raised job


def is_joblib(launcher: Any) -> bool:
    return str(launcher.get("_target_", "")).endswith("JoblibLauncher")


def is_submitit(launcher: Any) -> bool:
    return str(launcher.get("_target_", "")).startswith("hydra_plugins.hydra_submitit_launcher.")


def overridden(overrides: Sequence[str], key: str) -> bool:
    """Whether the command line set `key` (`key=...`, `+key=...` or `++key=...`)."""
    return any(o.lstrip("+").partition("=")[0] == key for o in overrides)


def is_optuna(sweeper: Any) -> bool:
    return str(sweeper.get("_target_", "")).endswith("OptunaSweeper")


def record_failure(job_dir: Path, error: BaseException, duration_s: float) -> None:
    """Mark the job's metrics.json as failed (creating it when the job failed before training started)."""
    path = job_dir / "metrics.json"
    payload: dict[str, Any] = {
        "best": Best().state_dict(),
        "final": {},
        "epochs_completed": 0,
        "duration_s": round(duration_s, 2),
    }
    if path.is_file():
        with contextlib.suppress(ValueError):  # an unreadable file is replaced by the failure record
            payload = json.loads(path.read_text())
    if not str(payload.get("stop_reason", "")).startswith("failed"):
        payload["stop_reason"] = f"failed: {type(error).__name__}: {error}"
    text = json.dumps(payload, indent=2, allow_nan=True)
    atomic_write(path, lambda f: f.write(text.encode()))
