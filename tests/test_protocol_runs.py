"""Protocols end to end on tiny data: a cross-method sweep gives its matrix, a generator-trained run reports every
generator with metrics scikit-learn reproduces from predictions.csv."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from deepfake.sweeps import summarize
from deepfake.training.runner import train
from tests.conftest import FAST, ROOT, run_cli, write_face
from tests.runs import run_dir_of
from tests.test_protocols import make_genimage

QUIET = ["logging.tensorboard=false", "eval.bootstrap_samples=0", "backup.enabled=false"]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sklearn_per_method(predictions: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    """AUC and AP per method from predictions.csv: a method's fakes against its own reals, else against the
    reals of methods without fakes."""
    methods = np.array([r["method"] for r in predictions])
    labels = np.array([int(r["label"]) for r in predictions])
    probs = np.array([float(r["prob"]) for r in predictions])
    with_fakes = {m for m in methods if labels[methods == m].any()}
    shared = (labels == 0) & ~np.isin(methods, list(with_fakes))
    out = {}
    for m in with_fakes:
        own = methods == m
        pool = own if (labels[own] == 0).any() else own | shared
        out[m] = {
            "auc": roc_auc_score(labels[pool], probs[pool]),
            "ap": average_precision_score(labels[pool], probs[pool]),
        }
    return out


def two_method_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for v in range(2):
            for f in range(2):
                write_face(root / split / "real" / f"{split}_r{v}" / f"{f}.png", 0, rng)
                for method in ("Deepfakes", "Face2Face"):
                    write_face(root / split / "fake" / method / f"{split}_{method}{v}" / f"{f}.png", 1, rng)
    return root


@pytest.mark.slow
@pytest.mark.cli
def test_a_two_method_sweep_gives_a_two_by_two_matrix(tmp_path: Path) -> None:
    data = two_method_folder(tmp_path / "ffpp")
    one_epoch = [o.replace("training.num_epochs=2", "training.num_epochs=1") for o in FAST]
    proc = run_cli(
        [str(ROOT / "train.py"), "-m", f"base_path={tmp_path}", "data=folder", f"data.root={data}", *one_epoch,
         *QUIET, "data.train_methods=[Deepfakes],[Face2Face]", "eval.score_test_split=true", "training.batch_size=4"],
        cwd=tmp_path, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next(p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir())
    by_callback = (sweep / "cross_method.csv").read_text()  # the sweep's callback rebuilt it after each job
    assert summarize.main([str(sweep)]) == 0
    assert (sweep / "cross_method.csv").read_text() == by_callback

    rows = read_rows(sweep / "cross_method.csv")
    assert [r["train_methods"] for r in rows] == ["Deepfakes", "Face2Face"]
    assert list(rows[0]) == [
        "train_methods",
        "Deepfakes",
        "Face2Face",
        "mean",
        "mean_unseen",
        "jobs",
        "metric",
    ]
    for job, row in zip(("0", "1"), rows, strict=True):
        expected = sklearn_per_method(read_rows(sweep / job / "eval" / "test" / "predictions.csv"))
        for method in ("Deepfakes", "Face2Face"):
            assert float(row[method]) == pytest.approx(expected[method]["auc"], abs=1e-12), (job, method)
        unseen = "Face2Face" if row["train_methods"] == "Deepfakes" else "Deepfakes"
        assert float(row["mean_unseen"]) == pytest.approx(float(row[unseen]))
        log = (sweep / job / "train.log").read_text()
        assert (
            f"method selection (only {row['train_methods']}), train: 8 images (4 real, 4 fake, 50% fake)"
            in log
        )
    assert (sweep / "cross_method.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_genimage_run_trained_on_one_generator_reports_all_three(
    tmp_path: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    root = make_genimage(tmp_path / "GenImage", {"train": 6, "val": 3})
    cfg = compose_cfg([
        f"base_path={tmp_path}", "data=generators", f"data.root={root}", *FAST, *QUIET, "training.batch_size=4",
        "data.train_methods=[sdv4]", "data.val_fraction=0.34", "eval.score_test_split=true",
    ])  # fmt: skip
    train(cfg)
    run = run_dir_of(tmp_path)
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    predictions = read_rows(run / "eval" / "test" / "predictions.csv")
    per_method = metrics["per_method"]
    assert set(per_method) == {"sdv4", "adm", "biggan"}
    expected = sklearn_per_method(predictions)
    for generator, entry in per_method.items():
        assert (entry["n"], entry["n_real"], entry["n_fake"], entry["reals"]) == (6, 3, 3, "own")
        assert entry["auc"] == pytest.approx(expected[generator]["auc"], abs=1e-12)
        assert entry["ap"] == pytest.approx(expected[generator]["ap"], abs=1e-12)
        own = [r for r in predictions if r["method"] == generator]
        labels, probs = np.array([int(r["label"]) for r in own]), np.array([float(r["prob"]) for r in own])
        assert entry["acc"] == pytest.approx(accuracy_score(labels, probs >= 0.5))
        assert entry["acc_at_val_threshold"] == pytest.approx(
            accuracy_score(labels, probs >= metrics["val_threshold"])
        )

    # The threshold is best.pt's validation choice, moved onto the calibrated probabilities it reports.
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    raw = best["metrics"]["val/threshold"]
    temperature = (best.get("calibration") or {}).get("temperature", 1.0)
    logit = np.log(raw) - np.log1p(-raw)
    assert metrics["val_threshold"] == pytest.approx(1 / (1 + np.exp(-logit / temperature)))
    log = (run / "train.log").read_text()
    assert "its val is the papers' test set" in log and "data.val_fraction=0.34 moved" in log
    assert "| test | biggan " in log  # the per-method block of the results
