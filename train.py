"""Train a deepfake detector: `python train.py [overrides]` or `from train import train`.

`python train.py check=true [overrides]` runs the pre-flight check instead and exits 1 when it finds errors.
`python train.py find_lr=true [overrides]` runs the LR range test instead (deepfake.training.lr_finder).
`torchrun --nproc_per_node=N train.py [overrides]` trains with DistributedDataParallel (see deepfake.system.distributed).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from deepfake.checks.preflight import run as run_check
from deepfake.cli import run_and_leave, run_reporting_errors
from deepfake.config import register_configs
from deepfake.sweeps.sweep_job import run_job
from deepfake.system.distributed import worker_hydra_overrides
from deepfake.training.lr_finder import find_lr
from deepfake.training.runner import train

__all__ = ["train"]

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if cfg.check:
        code = run_reporting_errors(run_check, cfg)
        if code:  # a passing check returns normally, so a `-m` sweep of checks goes on to the next job
            raise SystemExit(code)
        return None
    if cfg.find_lr:
        return run_reporting_errors(find_lr, cfg)
    return run_job(train, cfg)


if __name__ == "__main__":
    sys.argv += worker_hydra_overrides()  # torchrun ranks > 0 share rank 0's run directory
    run_and_leave(main)
