"""Helpers for tests that train tiny runs in-process: configs, run lookup, torch global state."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from deepfake.config import Config

STEPS_PER_EPOCH = 3  # 24 training images, batch 4, 2 micro-batches per optimizer step
EPOCHS = 2
# Settings a checkpoint must restore exactly: accumulation windows, EMA, dropout, top-k, step checkpoints.
COMMON = {
    "training.batch_size": 4,
    "training.grad_accum_steps": 2,
    "training.num_epochs": EPOCHS,
    "training.log_every_n_steps": 1,
    "training.ema.enabled": True,
    "training.checkpoint.keep_top_k": 1,
    "training.checkpoint.every_n_steps": 2,
    "model.dropout_rate": 0.2,
    "hardware.device": "cpu",
    "hardware.deterministic": True,
    "hardware.num_threads": 1,  # tiny tensors: one thread is faster and steadier on a shared 2-core box
    "calibration_min_samples": 0,  # tiny validation splits: fit the temperature anyway (its tests read it)
    "eval.score_test_split": False,  # ~0.6 CPU-s a run; tests/test_run_end.py covers it
}


def make_config(base: Path, data: Path, **overrides: Any) -> Config:
    config = Config(base_path=str(base))
    config.data.kind = "folder"
    config.data.root = str(data)
    config.data.num_workers = 0
    config.data.img_size = 32
    for key, value in {**COMMON, **overrides}.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return config


def run_dir_of(base: Path) -> Path:
    (run,) = [p for p in (base / "outputs").glob("*/*") if p.is_dir()]
    return run


def fail_fsync_of(
    monkeypatch: pytest.MonkeyPatch, name: str, error: BaseException, exact: bool = False
) -> None:
    """Make the fsync of any file whose name contains `name` (is `name`, with `exact`) raise `error`: the moment
    a full disk (or a kill) strikes a write, after part of the file is already on disk."""
    real = os.fsync

    def fsync(fd: int) -> None:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        found = Path(target).name
        if found == name if exact else name in found:
            raise error
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
