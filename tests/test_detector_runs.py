"""Each detector family through whole runs: exact mid-epoch resume on the CPU, export to safetensors rebuilt
by predict/evaluate (`deepfake.evaluation.inference` reads `model.streams/fusion/mask_head`), and DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deepfake.evaluation.export import export
from deepfake.evaluation.inference import load_detector
from deepfake.system.interrupt import TrainingInterrupted
from deepfake.training.runner import train
from tests.conftest import ROOT
from tests.runs import STEPS_PER_EPOCH, make_config, run_dir_of
from tests.test_resume import assert_same, interrupt_at

FAMILIES: dict[str, dict[str, Any]] = {
    "srm_dct_early": {"model.streams": ["rgb", "srm", "dct"]},
    "dct_late": {"model.streams": ["rgb", "dct"], "model.fusion": "late"},
    "mask_head_sbi": {
        "model.streams": ["rgb", "srm"],
        "model.mask_head": True,
        "data.fake_synthesis": "sbi",
        "training.mask_loss": "dice",
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_resumes_bit_identical_and_exports(
    monkeypatch: pytest.MonkeyPatch, data: Path, tmp_path: Path, family: str
) -> None:
    options = FAMILIES[family]
    train(make_config(tmp_path / "reference", data, **options))
    reference = run_dir_of(tmp_path / "reference")
    with monkeypatch.context() as patch:
        interrupt_at(patch, STEPS_PER_EPOCH + 1)  # mid-epoch 2
        with pytest.raises(TrainingInterrupted):
            train(make_config(tmp_path / "stopped", data, **options))
    run = run_dir_of(tmp_path / "stopped")
    train(make_config(tmp_path / "elsewhere", data, resume=str(run), **options))
    resumed = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    expected = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "ema", "rng"):
        assert_same(resumed[key], expected[key], key)

    exported = load_detector(export(reference, "safetensors"))
    original = load_detector(reference / "checkpoints" / "best.pt")
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(exported.model(images), original.model(images), rtol=0, atol=0)
    stems = [k for k in exported.model.state_dict() if ".stems." in k]
    assert len(stems) == 5 * (len(options["model.streams"]) - 1)  # BatchNorm: weight, bias, 3 running stats
    mask_head = bool(options.get("model.mask_head"))
    assert (exported.model.mask_decoder is not None) == mask_head
    events = EventAccumulator(str(reference))
    events.Reload()
    grids = [e.step for e in events.Images("val/blend_masks")] if mask_head else []
    steps = expected["train_state"]["global_step"]  # 2 epochs (SBI fakes add steps)
    assert grids == ([steps // 2, steps] if mask_head else [])


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.parametrize(
    "options",
    [
        ["model.streams=[rgb,srm,dct]", "model.mask_head=true", "data.fake_synthesis=sbi"],
        ["model.streams=[rgb,dct]", "model.fusion=late"],
    ],
)
def test_families_train_under_torchrun_on_two_cpu_processes(
    data: Path, tmp_path: Path, options: list[str]
) -> None:
    """DDP: every parameter (stems, widened conv, mask decoder) gets a gradient each step, so DDP's reducer
    needs no unused-parameter search, and rank 0 alone writes the run, masks grid included."""
    args = [
        "model=tiny", "data=folder", f"data.root={data}", "data.num_workers=0", "data.img_size=32",
        "training.num_epochs=1", "training.batch_size=4", f"base_path={tmp_path}", *options,
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(ROOT / "train.py"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=400, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir_of(tmp_path)
    assert "distributed: 2 processes, backend gloo" in (run / "train.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stop_reason"] == "completed" and 0.0 <= metrics["final"]["val/auc"] <= 1.0
    events = EventAccumulator(str(run))
    events.Reload()
    assert ("val/blend_masks" in events.Tags()["images"]) == ("model.mask_head=true" in options)
