"""Train a deepfake detector: `python train.py [overrides]` or `from train import train`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfake.cli import run_reporting_errors
from deepfake.config import register_configs
from deepfake.runner import train

__all__ = ["train"]

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run_reporting_errors(train, cfg)


if __name__ == "__main__":
    main()
