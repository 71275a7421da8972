"""`python predict.py checkpoint=<run dir | .pt> input=<video | image | folder | list>` and `deepfake-predict ...`:
the probability of fake of each input, written to `output=` (preds.csv). Videos are decoded, their faces found
and cropped as extract.py did, scored and aggregated to one row each; images are face crops, one row each
(deepfake.prediction.driver)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfake.cli import run_and_leave
from deepfake.commands.conf import conf_dir
from deepfake.config import register_configs
from deepfake.exits import run_reporting_errors
from deepfake.prediction.driver import predict

__all__ = ["main", "predict", "run"]

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="predict")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(predict, cfg)


def run() -> None:
    run_and_leave(main)
