"""On the CPU, `amp=auto` scores at full precision even where bf16 autocast is available (issue 19, item 9)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from deepfake.evaluation.inference import load_detector
from deepfake.prediction.driver import predict, predict_paths
from deepfake.reporting.eval_sets import evaluate
from deepfake.system.hardware import HardwareManager
from deepfake.system.precision import Precision
from deepfake.training.runner import train
from tests.conftest import make_folder_dataset
from tests.runs import make_config, run_dir_of


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("precision")
    data = make_folder_dataset(base / "data", videos=3, frames=3)
    once = {
        "training.num_epochs": 1,
        "training.ema.enabled": False,
        "training.checkpoint.every_n_steps": None,
    }
    train(make_config(base, data, **once))
    return {"run": run_dir_of(base), "data": data}


@pytest.fixture
def cpu_with_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU whose native bf16 makes `amp=auto` pick bf16 autocast (AVX512-BF16/AMX)."""
    monkeypatch.setattr(HardwareManager, "_bf16_supported", lambda self: True)
    assert HardwareManager(device="cpu").precision("auto").dtype == torch.bfloat16


def forward(run: dict, paths: list[str], dtype: torch.dtype | None) -> np.ndarray:
    loaded = load_detector(run["run"])
    probs, _ = predict_paths(
        loaded.model, paths, loaded.img_size, Precision("cpu", dtype), torch.device("cpu")
    )
    return probs


def assert_fp32(run: dict, paths: list[str], probs: np.ndarray) -> None:
    fp32, bf16 = forward(run, paths, None), forward(run, paths, torch.bfloat16)
    assert np.abs(bf16 - fp32).max() > 1e-4, "bf16 would not be told apart here"
    np.testing.assert_allclose(probs, fp32, rtol=0, atol=1e-6)
    assert len(np.unique(probs)) == len(probs)


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_evaluate_scores_in_fp32_on_the_cpu(
    run: dict, tmp_path: Path, compose_cfg: Any, cpu_with_bf16: None
) -> None:
    overrides = [
        f"checkpoint={run['run']}",
        "data.num_workers=0",
        f"eval.out_dir={tmp_path}",
        "hardware.device=cpu",
        "eval.calibrated=false",  # the raw probabilities, as `forward` computes them
    ]
    evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)
    with open(tmp_path / "test" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert_fp32(run, [r["path"] for r in rows], np.array([float(r["prob"]) for r in rows]))


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_predict_scores_in_fp32_on_the_cpu(run: dict, tmp_path: Path, cpu_with_bf16: None) -> None:
    cfg = {
        "checkpoint": str(run["run"]),
        "input": str(run["data"] / "test"),
        "output": str(tmp_path / "p.csv"),
    }
    rows = predict(
        OmegaConf.create({**cfg, "num_workers": 0, "hardware": {"device": "cpu"}, "calibrated": False})
    )
    assert_fp32(run, [r["path"] for r in rows], np.array([r["prob"] for r in rows]))
