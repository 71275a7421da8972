"""What every tracker is told about the run: its name, resolved config and provenance tags."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from deepfake.config.flatten import flatten
from deepfake.runs.backup import git_commit


@dataclass
class RunInfo:
    """The run as every tracker sees it when it opens."""

    run_dir: Path
    name: str  # display name: the run directory below its outputs folder (<date>/<time>, or <sweep>/<job>)
    config: dict[str, Any]  # the resolved config, nested
    tags: dict[str, str]  # run_dir, git_commit, host, device, seed, overrides; sweep and sweep_job in a sweep
    start_step: int = 0  # the optimizer step this process continues from (a resumed checkpoint's)
    resumed: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # per tracker: the ids of the run to continue
    group: str | None = None  # the sweep this run is a job of

    @property
    def params(self) -> dict[str, str]:
        """The config flattened to dotted keys with string values (lists as their YAML-like text)."""
        return {k: str(v) for k, v in flatten(self.config).items()}


def run_info(
    cfg: DictConfig,
    run_dir: Path,
    device: str,
    overrides: list[str],
    start_step: int = 0,
    resumed: dict[str, dict[str, str]] | None = None,
    resumed_from: str | None = None,
) -> RunInfo:
    """The run's description; in a `-m` sweep the job is tagged with its sweep and its overrides."""
    tags = {
        "run_dir": str(run_dir.resolve()),
        "git_commit": git_commit() or "",
        "host": socket.gethostname(),
        "device": device,
        "seed": str(cfg.seed),
        "overrides": " ".join(overrides),
    }
    group = None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra = HydraConfig.get()
        group = str(Path(hydra.sweep.dir))
        tags.update(sweep=group, sweep_job=str(hydra.job.num))
    if resumed_from:
        tags["resumed_from"] = resumed_from
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    return RunInfo(
        run_dir=run_dir,
        name=_name(run_dir),
        config={str(k): v for k, v in config.items()},
        tags={k: v for k, v in tags.items() if v},
        start_step=start_step,
        resumed=resumed or {},
        group=group,
    )


def _name(run_dir: Path) -> str:
    """<date>/<time> for a run, <sweep time>/<job> for a sweep job: the two last parts of its folder."""
    parts = run_dir.resolve().parts
    return "/".join(parts[-2:])
