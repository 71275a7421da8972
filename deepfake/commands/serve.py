"""`python serve.py checkpoint=<run dir | .pt | .safetensors | [a,b]>` and `deepfake-serve ...`: a web page and an
HTTP API that score uploaded videos and images as predict.py does (deepfake.serving.server)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfake.cli import run_hydra
from deepfake.commands.conf import conf_dir
from deepfake.config import register_configs
from deepfake.exits import run_reporting_errors
from deepfake.serving.server import serve

__all__ = ["main", "run", "serve"]

register_configs()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="serve")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(serve, cfg)


def run() -> None:
    run_hydra(main)
