"""`python -m deepfake.plot <run dir>`: loss and validation curves from TensorBoard events, ROC from predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake.errors import UserError
from deepfake.evaluation.predictions import read_predictions, write_predictions
from deepfake.reporting.plot import load_scalars, main, plot_run
from deepfake.reporting.tensorboard import TensorBoardLogger
from tests.conftest import ROOT, run_cli


def fake_run(run: Path, epochs: int = 3, steps_per_epoch: int = 10) -> None:
    """A run directory as training leaves it: event files, metrics.json and the best epoch's predictions."""
    tb = TensorBoardLogger(run)
    rng = np.random.default_rng(0)
    for step in range(1, epochs * steps_per_epoch + 1):
        tb.scalars(step, {"train/loss": 0.7 * np.exp(-step / 20) + 0.02 * rng.random(), "train/lr": 1e-3})
        if step % steps_per_epoch == 0:
            e = step // steps_per_epoch
            tb.scalars(step, {"val/auc": 0.6 + 0.1 * e, "val/loss": 0.7 - 0.1 * e, "val/eer": 0.4 - 0.1 * e})
    tb.close()
    (run / "metrics.json").write_text(json.dumps({"monitor": "val/auc", "best": {"value": 0.9, "epoch": 3}}))
    labels = np.repeat([0, 1], 20)
    probs = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, 40), 0, 1)
    videos = [f"{'fake' if y else 'real'}/v{i // 4}" for i, y in enumerate(labels)]
    write_predictions(run / "val_predictions.csv", [f"/d/{i}.png" for i in range(40)], videos, labels, probs)


@pytest.mark.cli
def test_cli_writes_valid_pngs_of_plausible_size(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fake_run(run)
    proc = run_cli(["-m", "deepfake.plot", str(run)], cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = {
        "loss.png": (900, 500),
        "val_metrics.png": (900, 500),
        "roc.png": (600, 600),
    }  # legends beside
    assert proc.stdout.split() == [str(run / "plots" / name) for name in expected]
    for name, size in expected.items():
        with Image.open(run / "plots" / name) as im:
            im.verify()  # a complete, uncorrupted PNG
        with Image.open(run / "plots" / name) as im:
            assert im.format == "PNG" and im.size == size
            pixels = np.asarray(im.convert("L"))
            assert pixels.std() > 5 and (pixels < 128).mean() > 0.005  # axes, text and curves were drawn


def test_scalars_keep_every_point_and_the_latest_value_per_step(tmp_path: Path) -> None:
    fake_run(tmp_path, epochs=3, steps_per_epoch=10)
    tb = TensorBoardLogger(tmp_path)  # a resumed run appends a second events file and rewrites step 30
    tb.scalars(30, {"val/auc": 0.95})
    tb.close()
    series = load_scalars(tmp_path)
    steps, _ = series["train/loss"]
    assert steps.tolist() == list(range(1, 31))
    assert series["val/auc"][0].tolist() == [10, 20, 30]
    assert series["val/auc"][1] == pytest.approx([0.7, 0.8, 0.95])


def test_predictions_round_trip(tmp_path: Path) -> None:
    path = write_predictions(
        tmp_path / "p.csv", ["a,b.png", "c.png"], ["v1", "v2"], np.array([0, 1]), [0.25, 0.75]
    )
    pred = read_predictions(path)
    assert pred["path"].tolist() == ["a,b.png", "c.png"] and pred["label"].tolist() == [0, 1]
    assert pred["prob"].tolist() == [0.25, 0.75]


def test_nothing_to_plot_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserError, match=r"nothing to plot in .*logging.tensorboard=false"):
        plot_run(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: run directory {tmp_path / 'missing'} does not exist")
