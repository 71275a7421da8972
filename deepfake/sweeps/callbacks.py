"""Hydra callbacks for sweeps (registered under `hydra.callbacks` in conf/train.yaml).

`SweepSummaryCallback` keeps `<sweep dir>/summary.{csv,md,png}` current after every job (so a long or killed
sweep still has one), prints the table when the sweep ends, and exits 1 when a job failed. Before the sweep
starts it checks the launcher: its plugin is installed, and a parallel launcher does not oversubscribe the CPU.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from deepfake.data.workers import default_num_workers
from deepfake.sweeps.summarize import render, summarize
from deepfake.sweeps.sweep_job import is_joblib

log = logging.getLogger("deepfake")


class SweepSummaryCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_launcher(config.hydra.launcher)
        warning = cpu_oversubscription(config)
        if warning:
            log.warning(warning)
        # Exists before the first job, so the Optuna sweeper can open its sqlite storage there.
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            summarize(config.hydra.sweep.dir)
        except Exception:  # the summary is a convenience: it must never fail a job that trained
            log.warning("could not update the sweep summary", exc_info=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = summarize(config.hydra.sweep.dir)
        print(render(summary), flush=True)
        print(f"sweep summary: {summary.sweep_dir / 'summary.md'} (and summary.csv, summary.png)", flush=True)
        if summary.failed:
            jobs = ", ".join(r.job for r in summary.failed)
            print(
                f"error: {len(summary.failed)} of {len(summary.rows)} sweep jobs failed (job {jobs}); "
                "the reasons are in summary.md and in each job's train.log",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)


def check_launcher(launcher: DictConfig) -> None:
    """A launcher preset whose plugin is missing fails here with the install command, not deep in Hydra."""
    target = str(launcher.get("_target_", ""))
    module = target.rpartition(".")[0]
    plugin = ".".join(module.split(".")[:2])
    if plugin.startswith("hydra_plugins.") and importlib.util.find_spec(plugin) is None:
        print(
            f"error: the launcher {target} is not installed; install the sweep plugins with "
            "pip install 'deepfake[sweeps]'",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)


def cpu_oversubscription(config: DictConfig) -> str | None:
    """A warning when joblib's parallel jobs, with their loader workers, need more processes than CPU cores."""
    if not is_joblib(config.hydra.launcher):
        return None
    from joblib import effective_n_jobs

    jobs = effective_n_jobs(config.hydra.launcher.n_jobs)
    workers = config.data.num_workers if config.data.num_workers >= 0 else default_num_workers()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        cpus = os.cpu_count() or 1
    busy = jobs * (1 + workers)
    if busy <= cpus:
        return None
    fit = max(0, cpus // jobs - 1)
    return (
        f"warning: CPU oversubscribed: {jobs} parallel jobs x (1 trainer + {workers} data.num_workers) = {busy} busy "
        f"processes on {cpus} CPU cores, so the jobs slow each other down. Lower hydra.launcher.n_jobs "
        f"or set data.num_workers={fit}."
    )
