"""Operating points: TPR at low false-positive rates, and the threshold chosen on validation for a target FPR."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.metrics import tpr_at_fpr
from deepfake.evaluation.operating_point import checked_operating_point, choose, measured_at, threshold_of
from deepfake.prediction.driver import predict
from deepfake.prediction.threshold import resolve_threshold
from deepfake.reporting.results_tables import results_table


def sklearn_tpr_at(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """By the definition, on scikit-learn's own (default, thinned) ROC: the largest TPR with FPR <= target."""
    fpr, tpr, _ = roc_curve(labels, probs)
    return float(tpr[fpr <= target].max())


@pytest.mark.parametrize("seed", range(3))
def test_tpr_at_fpr_equals_scikit_learns_roc_curve(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(1200, int), np.ones(400, int)]
    probs = np.round(np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1), 2)  # rounded: many ties
    got = tpr_at_fpr(labels, probs)
    assert set(got) == {"0.1", "0.01", "0.001"}
    for key, value in got.items():
        assert value == pytest.approx(sklearn_tpr_at(labels, probs, float(key)), abs=1e-12)
    assert 0 < got["0.001"] <= got["0.01"] <= got["0.1"] < 1


def test_tpr_at_fpr_is_null_without_enough_reals_or_a_second_class() -> None:
    """500 reals measure FPR 0.1 and 0.01 (one false alarm in 100) but not 0.001; one class measures nothing."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(500, int), np.ones(500, int)]
    probs = rng.random(1000) * 0.7 + 0.3 * labels
    got = tpr_at_fpr(labels, probs)
    assert got["0.001"] is None and got["0.01"] == pytest.approx(sklearn_tpr_at(labels, probs, 0.01))
    assert tpr_at_fpr(np.ones(50, int), rng.random(50)) == {"0.1": None, "0.01": None, "0.001": None}


def test_validation_threshold_has_the_target_fpr_and_the_largest_tpr_there() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(300, int), np.ones(300, int)]
    logits = rng.normal(2.0 * labels - 1.0, 1.2)
    point = choose(labels, logits, 0.01, tta="flip")
    assert point is not None and (point["target_fpr"], point["tta"], point["reals"]) == (0.01, "flip", 300)
    probs = 1 / (1 + np.exp(-logits))
    at = measured_at(labels, probs, threshold_of(point, None))
    assert (at["fpr"], at["tpr"]) == (pytest.approx(point["fpr"]), pytest.approx(point["tpr"]))
    assert point["fpr"] <= 0.01 and point["tpr"] == pytest.approx(sklearn_tpr_at(labels, logits, 0.01))
    # Halfway between two validation scores: no validation image sits on the threshold.
    assert not np.isclose(logits, point["logit"]).any()


def test_the_threshold_moves_with_the_temperature_and_keeps_the_same_images() -> None:
    """Dividing logits by T keeps their order: sigmoid(z / T) >= threshold_of(point, T) exactly when z >= logit."""
    z = np.linspace(-6, 6, 241)
    point = {"logit": 0.7, "target_fpr": 0.01}
    for temperature in (None, 0.5, 1.0, 2.5):
        probs = 1 / (1 + np.exp(-z / (temperature or 1.0)))
        assert np.array_equal(probs >= threshold_of(point, temperature), z >= 0.7)


def test_too_few_real_validation_images_give_no_threshold(caplog: pytest.LogCaptureFixture) -> None:
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    with caplog.at_level(logging.WARNING, logger="deepfake"):
        assert choose(labels, np.linspace(-1, 1, 80), 0.01) is None
    assert "needs at least 100 real validation images, the split has 40" in caplog.text


@pytest.mark.parametrize(
    "bad",
    [{"logit": "0.3", "target_fpr": 0.01}, {"logit": math.inf, "target_fpr": 0.01}, {"logit": 0.1, "target_fpr": 1.5},
     {"target_fpr": 0.01}, [0.1]],
)  # fmt: skip
def test_a_stored_threshold_must_be_a_finite_logit_with_a_target_in_0_1(bad: object) -> None:
    with pytest.raises(UserError, match="validation threshold"):
        checked_operating_point("best.pt", bad)


def test_a_stored_threshold_keeps_only_known_well_typed_keys() -> None:
    raw = {"logit": 1, "target_fpr": 0.01, "fpr": 0.009, "tpr": "high", "tta": "none", "code": "import os"}
    assert checked_operating_point("best.pt", raw) == {
        "logit": 1.0,
        "target_fpr": 0.01,
        "fpr": 0.009,
        "tta": "none",
    }
    assert checked_operating_point("best.pt", None) is None


def test_threshold_val_fpr_needs_one_checkpoint_with_a_stored_threshold() -> None:
    point = {"logit": 0.4, "target_fpr": 0.01, "tta": "none"}
    one = SimpleNamespace(path=Path("best.pt"), operating_point=point, temperature=2.0)
    assert resolve_threshold(0.3, [one], True, "none") == 0.3
    assert resolve_threshold("val_fpr", [one], True, "none") == pytest.approx(1 / (1 + math.exp(-0.2)))
    assert resolve_threshold("val_fpr", [one], False, "none") == pytest.approx(1 / (1 + math.exp(-0.4)))
    with pytest.raises(ConfigError, match="needs one checkpoint"):
        resolve_threshold("val_fpr", [one, one], True, "none")
    with pytest.raises(UserError, match="holds no validation threshold"):
        resolve_threshold(
            "val_fpr", [SimpleNamespace(path=Path("old.pt"), operating_point=None)], True, "none"
        )
    with pytest.raises(ConfigError, match=r"threshold must be in \[0, 1\], or val_fpr"):
        predict({"checkpoint": "x.pt", "input": "x.png", "threshold": "val"})


def read_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["prob"]) for r in rows])


@pytest.mark.slow
def test_a_run_stores_its_threshold_and_every_set_its_operating_points(trained_run: dict) -> None:
    """The session run (eval.target_fpr=0.1): best.pt and metrics.json hold the validation threshold; each test
    set's metrics.json holds TPR at FPR (scikit-learn's, from its predictions.csv) and the FPR/TPR it measured
    at that threshold; the printed table has the TPR@1% column."""
    run = trained_run["run"]
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True, map_location="cpu")
    point, metrics = state["operating_point"], json.loads((run / "metrics.json").read_text())
    assert point["target_fpr"] == 0.1 and point["fpr"] <= 0.1 and metrics["operating_point"] == point
    temperature = state["calibration"]["temperature"] if "calibration" in state else None
    assert point["threshold"] == pytest.approx(threshold_of(point, temperature))
    reports = {}
    for name in ("celebdf", "dfdc"):
        report = json.loads((run / "eval" / name / "metrics.json").read_text())
        labels, probs = read_rows(run / "eval" / name / "predictions.csv")
        reals = int((labels == 0).sum())
        for key, value in report["frame"]["tpr_at_fpr"].items():
            expected = sklearn_tpr_at(labels, probs, float(key)) if reals * float(key) >= 1 else None
            assert value == (pytest.approx(expected) if expected is not None else None), (name, key)
        assert set(report["video"]["tpr_at_fpr"]) == {"0.1", "0.01", "0.001"}
        at = report["operating_point"]
        assert at["threshold"] == pytest.approx(point["threshold"])
        assert at["fpr"] == pytest.approx(np.mean(probs[labels == 0] >= at["threshold"]))
        assert at["tpr"] == pytest.approx(np.mean(probs[labels == 1] >= at["threshold"]))
        reports[name] = report
    table = results_table(reports)
    header = next(line for line in table.splitlines() if line.startswith("| set"))
    assert [c.strip() for c in header.split("|")][7:11] == ["EER", "TPR@1%", "ACC", "bACC"]


@pytest.mark.slow
def test_predict_with_the_validation_threshold(trained_run: dict, tmp_path: Path) -> None:
    run, out = trained_run["run"], tmp_path / "preds.json"
    images = sorted((trained_run["dfdc"] / "fake").rglob("*.jpg"))[:4]
    rows = predict({"checkpoint": str(run), "input": str(images[0].parent), "output": str(out), "num_workers": 0,
                    "threshold": "val_fpr"})  # fmt: skip
    saved = json.loads(out.read_text())
    point = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["operating_point"]
    assert (
        saved["threshold"] == pytest.approx(point["threshold"]) and saved["threshold_source"] == "validation"
    )
    assert [r["pred"] for r in rows] == ["fake" if r["prob"] >= point["threshold"] else "real" for r in rows]
