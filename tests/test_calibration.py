"""Temperature scaling and ECE: the fit on synthetic logits, ECE by hand, checks on the stored temperature, and a
tiny run whose best.pt and metrics.json carry the temperature and the before/after numbers."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from deepfake.data.dataset import FaceDataset
from deepfake.data.samples import Sample
from deepfake.data.transforms import eval_transform
from deepfake.errors import UserError
from deepfake.evaluation.calibration import (
    calibrate,
    checked_temperature,
    expected_calibration_error,
    fit_temperature,
    log_loss,
)
from deepfake.evaluation.inference import load_detector
from deepfake.evaluation.predictions import VAL_PREDICTIONS, read_predictions
from deepfake.runs.restore import read_archive
from tests.conftest import make_folder_dataset
from tests.runs import make_config, run_dir_of


def overconfident(n: int = 2000, scale: float = 4.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), and the logits of a model that reports scale * z: over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return scale * z, labels


def test_temperature_lowers_the_log_loss_of_an_overconfident_model_and_keeps_its_auc() -> None:
    logits, labels = overconfident()
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(4.0, rel=0.15)  # it undoes the over-confidence
    assert log_loss(labels, logits / temperature) < 0.8 * log_loss(labels, logits)
    # the minimum: nearby temperatures do worse
    for nearby in (0.9 * temperature, 1.1 * temperature):
        assert log_loss(labels, logits / temperature) < log_loss(labels, logits / nearby)
    assert roc_auc_score(labels, logits / temperature) == roc_auc_score(labels, logits)
    result = calibrate(logits, labels, "none")
    assert result is not None and result["temperature"] == pytest.approx(temperature)
    assert result["after"]["ece"] < result["before"]["ece"]
    assert result["images"] == len(labels) and result["fitted_on"] == "validation"


def test_an_underconfident_model_gets_a_temperature_below_one() -> None:
    logits, labels = overconfident(scale=0.25, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(0.25, rel=0.15)


def test_log_loss_from_saturated_logits_is_exact() -> None:
    """A probability would round to 1 at logit 40; the loss from the logit stays finite and right."""
    assert log_loss(np.array([0]), np.array([40.0])) == pytest.approx(40.0)


def test_ece_against_a_hand_computation() -> None:
    """15 bins of width 1/15: 0.05 -> bin 0, 0.1 -> 1, 0.5 -> 7, 0.55 -> 8, 0.95 and 1.0 -> 14.
    ECE = (|0 - .05| + |1 - .1| + |1 - .5| + |0 - .55| + |2 - 1.95|) / 6."""
    probs = np.array([0.05, 0.1, 0.5, 0.55, 0.95, 1.0])
    labels = np.array([0, 1, 1, 0, 1, 1])
    assert expected_calibration_error(labels, probs) == pytest.approx(2.05 / 6)
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -2.0, "warm", True, None, [1.0], 1e-300, 1e300])
def test_a_stored_temperature_must_be_a_number_in_the_fitted_range(bad: object) -> None:
    """1e-300 was accepted and turned every probability into 0 or 1."""
    with pytest.raises(
        UserError,
        match=r"^/x/best\.pt: its calibration temperature .* is not a number in \[0\.0001, 10000\];",
    ):
        checked_temperature("/x/best.pt", {"temperature": bad})


@pytest.mark.parametrize("bad", [5, "5", [2.0], True])
def test_a_calibration_that_is_not_a_mapping_is_refused(bad: object) -> None:
    """`calibration: 5` was read as a temperature of 5 instead of being refused as damage."""
    with pytest.raises(
        UserError, match=r"^/x/best\.pt: its 'calibration' .* is not a mapping with a temperature"
    ):
        checked_temperature("/x/best.pt", bad)


def test_a_checkpoint_without_calibration_has_no_temperature() -> None:
    assert checked_temperature("/x/best.pt", None) is None
    assert checked_temperature("/x/best.pt", {"temperature": 2.5}) == 2.5


def test_one_class_gets_no_temperature(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="deepfake"):
        assert calibrate(np.array([1.0, 2.0]), np.array([1, 1]), "none") is None
    assert "no temperature fitted" in caplog.text


def test_the_fit_reuses_the_best_epochs_logits_and_predicts_only_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's best epoch was validated from best.pt's very weights: no second pass over the split."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from deepfake.runs.checkpoint import save_checkpoint
    from deepfake.training.calibration import CalibrationObserver

    best = tmp_path / "checkpoints" / "best.pt"
    save_checkpoint(best, {"train_state": {"epoch": 2}, "model": {}})
    logits, labels = overconfident(400)
    run = SimpleNamespace(
        cfg=OmegaConf.create(
            {"calibration": "temperature", "calibration_min_samples": 100, "eval": {"tta": "none"}}
        ),
        ddp=SimpleNamespace(barrier=lambda: None, is_main=True),
        run_dir=tmp_path, best_logits=(2, labels, logits), calibration=None,
    )  # fmt: skip
    observer = CalibrationObserver(torch.nn.Identity(), [], None, torch.device("cpu"), best)  # type: ignore[arg-type]
    predicted: list[int] = []
    monkeypatch.setattr(
        observer,
        "_predict",
        lambda run, state: predicted.append(state["train_state"]["epoch"]) or (labels, logits),
    )
    observer.on_close(run, "end")  # type: ignore[arg-type]
    expected = calibrate(logits, labels, "none")
    assert expected is not None and predicted == []
    assert torch.load(best, weights_only=True)["calibration"]["temperature"] == expected["temperature"]
    run.best_logits = (1, labels, logits)  # an older epoch's (a resumed run's best came before it): predict
    observer.on_close(run, "end")  # type: ignore[arg-type]
    assert predicted == [2]


@pytest.mark.slow
def test_a_run_stores_its_temperature_in_best_pt_and_the_numbers_in_metrics_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepfake.training.calibration import CalibrationObserver
    from train import train

    data = make_folder_dataset(tmp_path / "data")
    once = {"training.num_epochs": 1, "training.ema.enabled": False, "training.amp": "off"}
    monkeypatch.setattr(CalibrationObserver, "_predict", lambda *a: pytest.fail("validated twice"))
    train(make_config(tmp_path, data, **once, **{"eval.tta": "flip"}))
    run = run_dir_of(tmp_path)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    calibration = best["calibration"]
    assert calibration["temperature"] > 0 and calibration["fitted_on"] == "validation"
    assert calibration["tta"] == "flip" and calibration["images"] == 24  # the val split: 8 videos of 3 frames
    # validation scored with flip TTA: the mean of each image's and its mirror's probabilities
    val = read_predictions(run / VAL_PREDICTIONS)
    model = load_detector(run).model
    dataset = FaceDataset(
        [Sample(str(p), 0, str(p), "") for p in val["path"]], eval_transform(32), decode_size=32
    )
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        manual = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1)))) / 2
    np.testing.assert_allclose(val["prob"], manual.numpy(), rtol=0, atol=1e-6)
    # the before/after numbers are those of these validation probabilities, raw and divided by T in logit space
    logits = np.log(val["prob"] / (1 - val["prob"]))
    assert calibration["before"]["log_loss"] == pytest.approx(log_loss(val["label"], logits), abs=1e-5)
    after = log_loss(val["label"], logits / calibration["temperature"])
    assert calibration["after"]["log_loss"] == pytest.approx(after, abs=1e-5)
    assert calibration["after"]["log_loss"] <= calibration["before"]["log_loss"]
    assert "calibration" not in torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == pytest.approx(calibration["temperature"])
    assert set(metrics["calibration"]["before"]) == {"log_loss", "ece"}
    assert metrics["calibration"]["after"] == pytest.approx(calibration["after"])
    assert (run / "plots" / "reliability.png").is_file()

    # calibration=none: no temperature anywhere
    other = tmp_path / "none"
    train(make_config(other, data, **once, calibration="none"))
    run = run_dir_of(other)
    assert "calibration" not in torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert "calibration" not in json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_a_failed_temperature_write_keeps_best_pt_and_the_metrics_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk while storing the temperature: best.pt stays as trained, metrics.json is still written."""
    from train import train

    def disk_full(path: Path, state: dict) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("deepfake.training.calibration.save_checkpoint", disk_full)
    data = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    with caplog.at_level(logging.WARNING, logger="deepfake"):
        train(make_config(tmp_path, data, **{"training.num_epochs": 1, "training.ema.enabled": False}))
    run = run_dir_of(tmp_path)
    assert "could not store the temperature in" in caplog.text and "No space left on device" in caplog.text
    assert "calibration" not in torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stop_reason"] == "completed" and "calibration" not in metrics


@pytest.mark.slow
def test_the_newest_backup_holds_best_pt_with_its_temperature(tmp_path: Path) -> None:
    """`backup.every_n_epochs` backs up the last epoch before the temperature is fitted: the exit backup must
    still follow, so the archive (and the mirror) hold the calibrated best.pt."""
    from train import train

    data = make_folder_dataset(tmp_path / "data", videos=2, frames=2)
    settings = {"training.ema.enabled": False, "backup.every_n_epochs": 1, "backup.keep_last": 5}
    train(make_config(tmp_path, data, **settings))
    run = run_dir_of(tmp_path)
    archives = sorted((run / "backups").glob("*.tar.gz"))
    assert [a.name.rsplit("-", 1)[1] for a in archives] == ["epoch.tar.gz", "epoch.tar.gz", "end.tar.gz"]
    restored = tmp_path / "restored"
    read_archive(archives[-1], restored)
    kept = torch.load(restored / "checkpoints" / "best.pt", weights_only=True)["calibration"]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["calibration"]
    assert kept["temperature"] == best["temperature"] > 0
    assert json.loads((restored / "metrics.json").read_text())["stop_reason"] == "completed"
