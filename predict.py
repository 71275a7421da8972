"""Probability of fake per image: `python predict.py checkpoint=<run dir | .pt> input=<image | folder | list> output=preds.csv`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfake.cli import run_and_leave, run_reporting_errors
from deepfake.config import register_configs
from deepfake.evaluation.predict import predict

__all__ = ["predict"]

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(predict, cfg)


if __name__ == "__main__":
    run_and_leave(main)
