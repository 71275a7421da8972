"""The run directory: where a run writes, chosen once (Hydra's output dir, a resumed run's, or a new one)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from deepfake.errors import UserError
from deepfake.exits import log_to_files
from deepfake.runs.fileio import require_writable
from deepfake.runs.mirror import check_mirror
from deepfake.system.distributed import DistContext
from deepfake.training.debug import is_debug_run
from deepfake.training.resume import (
    Resume,
    adopt_run_dir,
    explicit_overrides,
    find_auto_resume,
    load_resume,
    resumed_config,
)

log = logging.getLogger("deepfake")


def resolve_run_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """Hydra's output dir when Hydra runs this job; otherwise a fresh `<base_path>/outputs/<date>/<time>`
    (`<base_path>/debug/...` for a debug mode, as conf/debug/default.yaml does under Hydra)."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir), True
    now = dt.datetime.now()
    folder = "debug" if is_debug_run(cfg) else "outputs"
    run_dir = (
        Path(cfg.base_path).expanduser() / folder / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    )
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir, False


def attach_file_log(run_dir: Path) -> list[logging.Handler]:
    """Without Hydra, mirror Hydra's job logging: console plus `<run dir>/train.log`.

    Returns the handlers added, for the caller to remove when the run ends: a console handler left behind
    would keep writing to whatever `sys.stdout` was during this run.
    """
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    added: list[logging.Handler] = [handler]
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and h.stream is sys.stdout for h in root.handlers):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(console)
        added.append(console)
    return added


def choose_run_dir(cfg: DictConfig, resume: Resume | None) -> tuple[Path, bool]:
    if resume is not None and resume.run_dir is not None:
        require_writable(
            resume.run_dir,
            "the run to resume,",
            "make it writable (chmod -R u+w), or copy the run folder elsewhere and resume the copy",
        )
        under_hydra = HydraConfig.initialized()
        if under_hydra:
            adopt_run_dir(Path(HydraConfig.get().runtime.output_dir), resume.run_dir)
        return resume.run_dir, under_hydra
    run_dir, under_hydra = resolve_run_dir(cfg)
    require_writable(
        run_dir,
        "the run directory",
        "pass base_path=<a writable folder> (or hydra.run.dir=<a writable folder>)",
    )
    if not cfg.training.auto_resume:
        refuse_earlier_run(run_dir)
    return run_dir, under_hydra


def earlier_run_files(run_dir: Path) -> list[str]:
    """What an earlier run left here. Hydra makes the folder, `.hydra/` and the log before the job starts,
    so those say nothing; checkpoints, metrics and TensorBoard events do."""
    found = []
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        found.append("checkpoints/")
    if (run_dir / "metrics.json").is_file():
        found.append("metrics.json")
    if any(run_dir.glob("events.out.tfevents.*")):
        found.append("TensorBoard events")
    return found


def refuse_earlier_run(run_dir: Path) -> None:
    """A new run never writes over another run's checkpoints, metrics and curves."""
    found = earlier_run_files(run_dir)
    if found:
        raise UserError(
            f"{run_dir} already holds an earlier run ({', '.join(found)}); a new run would overwrite it. "
            "Continue that run with training.auto_resume=true (or resume=<run dir>), or pick another "
            "directory (hydra.run.dir=...)"
        )


def discard_fresh_run_dir() -> None:
    """After a config error under Hydra: remove the run directory Hydra made for this call, when it holds
    nothing but Hydra's own record and log, so a refused command leaves no empty run behind."""
    if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return  # a sweep job's folder records its failure for the sweep summary
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not run_dir.is_dir():
        return
    if any(p.name != ".hydra" and p.suffix != ".log" for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    if run_dir.parent.parent.name in ("outputs", "debug"):  # the default <base>/outputs/<date>/<time>
        with contextlib.suppress(OSError):  # each only if now empty
            run_dir.parent.rmdir()
            run_dir.parent.parent.rmdir()


def open_run(
    cfg: DictConfig, ddp: DistContext
) -> tuple[DictConfig, Path, Resume | None, list[str], list[logging.Handler]]:
    """Settle where and from what this run starts: (config, run dir, resume, overrides, log handlers added).

    Rank 0 decides the run directory (the resumed run's, Hydra's, or a new one); other ranks write nothing.
    A refusal here leaves no fresh run directory behind.
    """
    handlers: list[logging.Handler] = []
    try:
        resume = load_resume(cfg.resume) if cfg.resume else None
        if ddp.is_main and cfg.backup.enabled and cfg.backup.mirror:
            check_mirror(cfg.backup.mirror)
        run_dir, under_hydra = choose_run_dir(cfg, resume) if ddp.is_main else (None, True)
        run_dir = Path(ddp.broadcast(str(run_dir) if run_dir is not None else None))
        if resume is None and cfg.training.auto_resume:
            resume = find_auto_resume(run_dir)
        handlers = [] if under_hydra else attach_file_log(run_dir)  # before resumed_config: it logs changes
        overrides = explicit_overrides(cfg)
        if resume is not None:
            cfg = resumed_config(resume, cfg)
    except UserError as e:
        if ddp.is_main:
            discard_fresh_run_dir()
        log_to_files(str(e), handlers)
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        raise
    return cfg, run_dir, resume, overrides, handlers
