"""`python extract.py dataset=ffpp root=/data/FaceForensics++ out=/data/ffpp_faces` and `deepfake-extract ...`.

Writes `out/faces/<video>/<frame>.png` (+ landmarks), `out/manifest.csv` (train on it with `python train.py
data=manifest data.manifest=out/manifest.csv`) and `out/videos.csv` (one row per video, with a status). A rerun
into the same `out` resumes; `-m shard.count=N 'shard.index=range(N)'` splits the videos over N jobs.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deepfake.cli import run_hydra
from deepfake.commands.conf import conf_dir
from deepfake.exits import run_reporting_errors
from deepfake.extraction.config import register_extract_config

__all__ = ["main", "run"]

register_extract_config()


@hydra.main(version_base="1.3", config_path=str(conf_dir() / "extract"), config_name="extract")
def main(cfg: DictConfig) -> None:
    # Imported here, not above: the decode workers' forkserver imports the entry module, and needs no torch.
    from deepfake.extraction.pipeline import extract

    run_reporting_errors(extract, cfg)


def run() -> None:
    run_hydra(main)
