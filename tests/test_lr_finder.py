"""The LR range test (`find_lr=true`): the sweep's schedule, smoothing and early stop, the suggestion rules, and a
sweep on a toy problem that writes its CSV and figure and leaves no checkpoint."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
import torch

from deepfake.errors import ConfigError
from deepfake.training.lr_finder import BETA, ExponentialSweep, Sweep, find_lr, steepest, valley
from tests.conftest import ROOT, run_cli
from tests.runs import make_config, run_dir_of


def test_sweep_is_exponential_and_keeps_the_groups_ratio() -> None:
    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": [weights[0]], "lr": 1e-3}, {"params": [weights[1]], "lr": 1e-4}])
    sweep = ExponentialSweep(optimizer, min_lr=1e-6, max_lr=1e-2, num_steps=5)
    seen = []
    for _ in range(5):
        seen.append([g["lr"] for g in optimizer.param_groups])
        sweep.step_update()
    assert [s[0] for s in seen] == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    assert all(s[1] == pytest.approx(s[0] / 10) for s in seen)


def test_smoothing_is_a_bias_corrected_average_and_divergence_stops() -> None:
    record = Sweep(threshold=4.0)
    for loss in (1.0, 0.5, 0.5):
        record.add(1e-3, loss)
    average = 0.0
    for n, loss in enumerate((1.0, 0.5, 0.5)):
        average = BETA * average + (1 - BETA) * loss
        assert record.smoothed[n] == pytest.approx(average / (1 - BETA ** (n + 1)))
    assert record.stop is None
    record.add(1e-2, 500.0)  # the smoothed loss jumps past 4x its best
    assert record.stop is not None and "passed 4.0 x its best" in record.stop
    nan = Sweep(threshold=None)
    nan.add(1e-3, 1.0)
    nan.add(1e-2, math.nan)
    assert nan.stop == "the loss became nan at learning rate 1.00e-02"


def test_rules_pick_the_descent_not_the_plateau_or_the_blow_up() -> None:
    """Flat for 40 steps, down linearly for 40 (steps 40-79), then up: valley lands in the middle of the
    descent; the steepest-descent rule finds the descent too on a curve with no lag."""
    curve = [1.0] * 40 + [1.0 - 0.02 * (i + 1) for i in range(40)] + [0.2 + 0.1 * (i + 1) for i in range(20)]
    index = valley(curve)
    assert index is not None and 50 <= index <= 70
    assert 40 <= steepest(curve) <= 80
    assert valley([1.0, 0.9]) is None and steepest([1.0] * 5) is None  # too short to judge


def test_train_points_find_lr_to_its_own_command() -> None:
    from train import train

    with pytest.raises(
        ConfigError, match=r"find_lr=true runs the LR range test, not training: use `python train.py"
    ):
        train({"find_lr": True})


@pytest.mark.slow
def test_find_lr_suggests_a_good_rate_for_a_toy_problem(tmp_path: Path, folder_dataset: Path) -> None:
    """The bright-square toy set trains well at 2e-3 (the default); the suggestion lands within 10x of it, the
    sweep's files are written, and nothing is saved to train from."""
    cfg = make_config(
        tmp_path, folder_dataset,
        **{"training.grad_accum_steps": 1, "training.ema.enabled": False, "model.dropout_rate": 0.0},
    )  # fmt: skip
    suggestion = find_lr(cfg)
    assert 2e-4 <= suggestion <= 2e-2
    run = run_dir_of(tmp_path)
    with (run / "lr_find.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    assert float(rows[0]["lr"]) == pytest.approx(1e-8) and 50 <= len(rows) <= 100
    assert any(float(r["lr"]) == pytest.approx(suggestion, rel=1e-4) for r in rows)
    assert (run / "lr_find.png").stat().st_size > 10_000
    assert not (run / "checkpoints").exists() and not (run / "backups").exists()
    assert not (run / "metrics.json").exists()


@pytest.mark.cli
def test_find_lr_from_the_command_line(tmp_path: Path, folder_dataset: Path) -> None:
    args = [
        str(ROOT / "train.py"), "find_lr=true", "lr_finder.num_steps=30", "lr_finder.min_lr=1e-6",
        "model=tiny", "data=folder", f"data.root={folder_dataset}", "data.img_size=32", "data.num_workers=0",
        "training.batch_size=4", "training.amp=off", f"base_path={tmp_path}",
    ]  # fmt: skip
    proc = run_cli(args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(
        r"suggested learning rate: (\S+), by fastai's valley rule on the smoothed loss", proc.stdout
    )
    assert found, proc.stdout[-3000:]
    run = run_dir_of(tmp_path)
    with (run / "lr_find.csv").open() as f:
        rates = [float(row["lr"]) for row in csv.DictReader(f)]
    assert len(rates) <= 30 and rates[0] == pytest.approx(1e-6)
    assert any(r == pytest.approx(float(found[1]), rel=0.01) for r in rates)  # printed to 3 digits
    assert (run / "lr_find.png").is_file() and not (run / "checkpoints").exists()
