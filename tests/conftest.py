"""Shared fixtures: small on-disk datasets written as real image files, and Hydra compose helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from deepfake.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

register_configs()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep generated data out of ~/.cache and never let timm reach a model hub."""
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_face(path: Path, label: int, rng: np.random.Generator, size: int = 32) -> None:
    """A tiny image whose fakes carry a bright square: learnable within a couple of epochs."""
    img = rng.integers(60, 120, size=(size, size, 3), dtype=np.uint8)
    if label:
        img[size // 4 : size // 2, size // 4 : size // 2] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def make_folder_dataset(root: Path, videos: int = 4, frames: int = 3, size: int = 32, seed: int = 0) -> Path:
    """Write `root/{train,val,test}/{real,fake}/...` with JPEG and PNG frames and a nested method folder."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for v in range(videos):
            for f in range(frames):
                ext = "png" if f % 2 else "jpg"
                write_face(root / split / "real" / f"{split}_r{v:03d}" / f"{f:04d}.{ext}", 0, rng, size)
                method = "Deepfakes" if v % 2 else "FaceSwap"
                write_face(
                    root / split / "fake" / method / f"{split}_f{v:03d}" / f"{f:04d}.{ext}", 1, rng, size
                )
    return root


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "dataset")


FAST = [
    "model=tiny",
    "data.num_workers=0",
    "data.img_size=32",
    "training.batch_size=8",
    "training.num_epochs=2",
    "training.log_every_n_steps=1",
]


@pytest.fixture
def compose_cfg() -> Iterator[Callable[..., DictConfig]]:
    """Compose `conf/train.yaml` with overrides through Hydra's compose API (no Hydra run dir)."""

    def _compose(overrides: list[str], config_name: str = "train") -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)

    yield _compose


def run_cli(
    args: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python <args>` from the repo as a user would, capturing both streams."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )
