"""Checkpoints and exact resume: what a checkpoint holds, bit-identical mid-epoch resume, refused configs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import deepfake.reporting.tensorboard
from deepfake.errors import ConfigError, UserError
from deepfake.runs.checkpoint import save_checkpoint
from deepfake.system.interrupt import TrainingInterrupted
from deepfake.training.runner import train
from tests.runs import EPOCHS, STEPS_PER_EPOCH, make_config, run_dir_of


@pytest.fixture(scope="module")
def reference(data: Path) -> Path:
    """One uninterrupted run that the resumed runs must reproduce bit for bit."""
    base = data.parent / "reference"
    train(make_config(base, data))
    return run_dir_of(base)


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality; tensors must match bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Deliver a real SIGINT to this process right after optimizer step `step` is logged."""
    original = deepfake.reporting.tensorboard.TensorBoardLogger.scalars

    def scalars(self: Any, at: int, values: dict[str, float]) -> None:
        original(self, at, values)
        if at == step and "train/loss" in values:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(deepfake.reporting.tensorboard.TensorBoardLogger, "scalars", scalars)


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_checkpoint_holds_the_whole_training_state(reference: Path) -> None:
    folder = reference / "checkpoints"
    last = torch.load(folder / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "ema", "rng", "config", "version"} <= set(last)
    assert last["optimizer"]["state"] and last["scheduler"]["updates"] == EPOCHS * STEPS_PER_EPOCH
    assert set(last["ema"]) == set(last["model"]) and last["scaler"] is None  # no GradScaler on the CPU
    assert {"python", "numpy", "torch"} <= set(last["rng"])
    ts = last["train_state"]
    assert (ts["epoch"], ts["batch_in_epoch"], ts["global_step"]) == (EPOCHS, 0, EPOCHS * STEPS_PER_EPOCH)
    assert ts["saved_at"] == "epoch" and ts["num_train_samples"] == 24
    monitor = last["monitor"]
    assert set(monitor["early_stopping"]) == {"best", "best_epoch", "bad_epochs"}
    best_epoch = monitor["best"]["epoch"]
    assert monitor["top_k"] == [{"value": monitor["best"]["value"], "epoch": best_epoch}]
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", f"epoch_{best_epoch:03d}.pt", "last.pt"]
    assert "grad_accum_steps: 2" in last["config"] and last["version"]


def test_atomic_save_keeps_the_old_file_when_a_write_dies(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"x": torch.ones(3)})

    class Exploding(dict):
        def __reduce_ex__(self, protocol: Any) -> Any:
            raise RuntimeError("disk gone mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        save_checkpoint(path, {"x": Exploding()})
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


@pytest.mark.slow
def test_interrupted_run_resumes_bit_identical(
    monkeypatch: pytest.MonkeyPatch, data: Path, reference: Path, tmp_path: Path
) -> None:
    """Stopped after epoch 1's last step (before its validation), then mid-epoch 2, then run to the end."""
    run = None
    for stop_after in (STEPS_PER_EPOCH, STEPS_PER_EPOCH + 1):
        with monkeypatch.context() as patch:
            interrupt_at(patch, stop_after)
            resume = {"resume": str(run)} if run else {}
            with pytest.raises(TrainingInterrupted) as stopped:
                train(make_config(tmp_path / "elsewhere" if run else tmp_path, data, **resume))
        run = run or run_dir_of(tmp_path)
        assert stopped.value.exit_code == 130
        assert f"Resume with: python train.py resume={run.resolve()}" in str(stopped.value)
        saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]
        assert saved["saved_at"] == "interrupt" and saved["global_step"] == stop_after
        assert saved["batch_in_epoch"] == 2 * ((stop_after - 1) % STEPS_PER_EPOCH + 1)

    train(make_config(tmp_path / "elsewhere", data, resume=str(run)))
    assert not (tmp_path / "elsewhere").exists()  # a resumed run stays in its own directory
    resumed = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    expected = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "ema", "rng", "monitor"):
        assert_same(resumed[key], expected[key], key)

    events = EventAccumulator(str(run))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))  # one point per step, none rewound
    assert [e.step for e in events.Scalars("val/auc")] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stop_reason"] == "completed" and metrics["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert len(list((run / "backups").glob("*-interrupt.tar.gz"))) == 2


@pytest.mark.slow
def test_resume_refuses_another_architecture_and_accepts_more_epochs(
    data: Path, reference: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"model.architecture=resnet50 but the checkpoint was trained with"):
        train(make_config(tmp_path, data, resume=str(reference), **{"model.architecture": "resnet50"}))
    with pytest.raises(UserError, match=r"no checkpoints/last\.pt"):
        train(make_config(tmp_path, data, resume=str(tmp_path)))

    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "checkpoints" / "last.pt").write_bytes((reference / "checkpoints" / "last.pt").read_bytes())
    train(make_config(tmp_path, data, resume=str(copy), **{"training.num_epochs": EPOCHS + 1}))
    last = torch.load(copy / "checkpoints" / "last.pt", weights_only=True)
    assert last["train_state"]["global_step"] == (EPOCHS + 1) * STEPS_PER_EPOCH
    assert "num_epochs: 3" in last["config"]
    assert "training.num_epochs: 2 -> 3" in (copy / "train.log").read_text()


def test_mid_epoch_checkpoint_refuses_a_new_batch_size(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    state = {
        "train_state": {"epoch": 0, "batch_in_epoch": 2, "global_step": 1},
        "config": "training:\n  batch_size: 4\n",
        "monitor": {},
        "rng": {},
    }
    save_checkpoint(run / "checkpoints" / "last.pt", state)
    with pytest.raises(ConfigError, match=r"training.batch_size=8: the checkpoint stopped mid-epoch"):
        train(make_config(tmp_path, data, resume=str(run), **{"training.batch_size": 8}))
