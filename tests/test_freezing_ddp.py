"""Unfreezing under DDP: DDP registers the parameters that need gradients when it wraps the model, so the runner
rewraps it when the backbone starts training; otherwise the backbone's gradients would never be all-reduced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import CONF, ROOT, make_folder_dataset


@pytest.mark.slow
@pytest.mark.cli
def test_two_processes_that_unfreeze_match_one_process(tmp_path: Path) -> None:
    """2 processes x batch 4 = 1 process x batch 8, through a frozen epoch and an unfrozen one (LayerNorm backbone:
    splitting a batch cannot change the result)."""
    data = make_folder_dataset(tmp_path / "data", videos=4, frames=2)  # 16 training images: 2 steps per epoch
    common = [
        "model=tiny",
        "model.architecture=test_convnext",
        "model.freeze_backbone=true",
        "training.unfreeze_at_epoch=1",
        "training.backbone_lr_scale=0.5",
        "data=folder",
        f"data.root={data}",
        "data.num_workers=0",
        "data.img_size=32",
        "training.num_epochs=2",
        "training.amp=off",
        "training.optimizer._target_=torch.optim.SGD",
        "~training.optimizer.betas",
        "+training.optimizer.momentum=0.9",
        "training.learning_rate=0.05",
        "logging.tensorboard=false",
        "backup.enabled=false",
        "eval.bootstrap_samples=0",
    ]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(ROOT / "train.py"), *common,
         "training.batch_size=4", "training.eval_batch_size=4", f"base_path={tmp_path / 'ddp'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=500, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    (run,) = (tmp_path / "ddp" / "outputs").glob("*/*")
    assert "epoch 2: backbone unfrozen" in (run / "train.log").read_text()

    from train import train

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [*common, "training.batch_size=8", f"base_path={tmp_path / 'single'}"])
    train(cfg)
    (single,) = (tmp_path / "single" / "outputs").glob("*/*")
    ddp_state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    single_state = torch.load(single / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key, value in single_state.items():
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-4, atol=1e-5, msg=key)
