"""The run directory: where a run writes, chosen once (Hydra's output dir, a resumed run's, or a new one)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deepfake.resume import Resume, adopt_run_dir


def resolve_run_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """Hydra's output dir when Hydra runs this job; otherwise a fresh `<base_path>/outputs/<date>/<time>`."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir), True
    now = dt.datetime.now()
    run_dir = (
        Path(cfg.base_path).expanduser() / "outputs" / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    )
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir, False


def attach_file_log(run_dir: Path) -> logging.Handler:
    """Without Hydra, mirror Hydra's job logging: console plus `<run dir>/train.log`."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and h.stream is sys.stdout for h in root.handlers):
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(console)
    return handler


def choose_run_dir(cfg: DictConfig, resume: Resume | None) -> tuple[Path, bool]:
    if resume is not None and resume.run_dir is not None:
        under_hydra = HydraConfig.initialized()
        if under_hydra:
            adopt_run_dir(Path(HydraConfig.get().runtime.output_dir), resume.run_dir)
        return resume.run_dir, under_hydra
    return resolve_run_dir(cfg)
