"""Exact resume of the recipes: SAM with a frozen backbone that unfreezes (with an LR warm restart) mid-run.

The run is stopped in the frozen epoch (after its last step, before validation) and again in the first
unfrozen epoch, mid-warm-restart; resumed to the end, it must equal an uninterrupted run bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepfake.system.interrupt import TrainingInterrupted
from deepfake.training.runner import train
from tests.conftest import make_folder_dataset
from tests.runs import EPOCHS, STEPS_PER_EPOCH, make_config, run_dir_of
from tests.test_resume import assert_same, interrupt_at

RECIPE = {
    "training.sam.enabled": True,
    "model.freeze_backbone": True,
    "training.unfreeze_at_epoch": 1,
    "training.unfreeze_warmup_epochs": 1.0,
    "training.backbone_lr_scale": 0.5,
}


@pytest.mark.slow
def test_sam_run_resumes_bit_identical_across_an_unfreeze(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = make_folder_dataset(tmp_path / "data")
    train(make_config(tmp_path / "reference", data, **RECIPE))
    expected = torch.load(run_dir_of(tmp_path / "reference") / "checkpoints" / "last.pt", weights_only=True)
    # The backbone did train after the unfreeze: every parameter has optimizer state, at its own rate.
    assert len(expected["optimizer"]["state"]) == sum(
        len(g["params"]) for g in expected["optimizer"]["param_groups"]
    )
    assert {g["part"] for g in expected["optimizer"]["param_groups"]} == {"head", "backbone"}

    run = None
    for stop_after in (STEPS_PER_EPOCH, STEPS_PER_EPOCH + 1):
        with monkeypatch.context() as patch:
            interrupt_at(patch, stop_after)
            resume = {"resume": str(run)} if run else {}
            with pytest.raises(TrainingInterrupted):
                train(make_config(tmp_path / "run", data, **RECIPE, **resume))
        run = run or run_dir_of(tmp_path / "run")
        saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        assert saved["train_state"]["global_step"] == stop_after

    train(make_config(tmp_path / "run", data, **RECIPE, resume=str(run)))
    resumed = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["train_state"]["global_step"] == EPOCHS * STEPS_PER_EPOCH
    for key in ("model", "optimizer", "scheduler", "ema", "rng"):
        assert_same(resumed[key], expected[key], key)
