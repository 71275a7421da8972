"""`python train.py [overrides]` and `deepfake-train [overrides]`: train, or with `check=true` run the pre-flight
check (exit 1 when it finds errors), or with `find_lr=true` the LR range test. Under torchrun every rank runs it
(see deepfake.system.distributed).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from deepfake.cli import run_and_leave
from deepfake.commands.conf import conf_dir
from deepfake.config import register_configs
from deepfake.exits import run_reporting_errors
from deepfake.sweeps.sweep_job import run_job
from deepfake.system.distributed import worker_hydra_overrides
from deepfake.training.lr_finder import find_lr
from deepfake.training.preflight import run as run_check
from deepfake.training.runner import train

__all__ = ["main", "run", "train"]

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    if cfg.check:
        code = run_reporting_errors(run_check, cfg)
        if code:  # a passing check returns normally, so a `-m` sweep of checks goes on to the next job
            raise SystemExit(code)
        return None
    if cfg.find_lr:
        return run_reporting_errors(find_lr, cfg)
    return run_job(train, cfg)


def run() -> None:
    """The command line: Hydra's composition errors become one `error:` line (exit 2); the process ends
    through `deepfake.cli.leave` (no interpreter teardown)."""
    sys.argv += worker_hydra_overrides()  # torchrun ranks > 0 share rank 0's run directory
    run_and_leave(main)
