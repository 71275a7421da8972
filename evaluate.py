"""Score a trained detector on test sets: `python evaluate.py checkpoint=<run dir | .pt> 'data.test_sets=[...]'`."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from deepfake.cli import run_and_leave, run_reporting_errors
from deepfake.config import register_configs
from deepfake.evaluation.scoring import evaluate

__all__ = ["evaluate"]

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(evaluate, cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    run_and_leave(main)
