"""`python evaluate.py checkpoint=<run dir | .pt> 'data.test_sets=[...]'` and `deepfake-evaluate ...`: score a
trained detector on test sets."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deepfake.cli import run_and_leave
from deepfake.commands.conf import conf_dir
from deepfake.config import register_configs
from deepfake.exits import run_reporting_errors
from deepfake.reporting.eval_sets import evaluate

__all__ = ["evaluate", "main", "run"]

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(evaluate, cfg, list(HydraConfig.get().overrides.task))


def run() -> None:
    run_and_leave(main)
