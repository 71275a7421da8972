"""Probability of fake per image: `python predict.py checkpoint=<run dir | .pt> input=<image | folder | list> output=preds.csv`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfake.cli import run_hydra
from deepfake.config import register_configs
from deepfake.exits import run_reporting_errors
from deepfake.prediction.driver import predict

__all__ = ["predict"]

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(predict, cfg)


if __name__ == "__main__":
    run_hydra(main)
