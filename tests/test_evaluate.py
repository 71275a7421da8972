"""evaluate.py and train.py's last step: per-set files whose metrics are scikit-learn's on predictions.csv."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from deepfake.data import DataModule
from deepfake.data.samples import Sample
from deepfake.errors import DataError
from deepfake.evaluation.scoring import set_report
from deepfake.reporting.eval_sets import evaluate
from tests.conftest import ROOT, make_flat_test_set, make_folder_dataset, run_cli
from tests.pages import parse


def read_predictions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["path", "video", "label", "method", "prob"]
    return rows


def sklearn_eer(labels: np.ndarray, probs: np.ndarray) -> float:
    """Where FNR = FPR on the full ROC, interpolated between the two points around the crossing."""
    fpr, tpr, _ = roc_curve(labels, probs, drop_intermediate=False)
    gap = (1 - tpr) - fpr
    i = int(np.argmax(gap <= 0))
    return float(np.interp(0.0, [gap[i], gap[i - 1]], [fpr[i], fpr[i - 1]]))


def expected_metrics(rows: list[dict[str, str]], aggregation: str) -> dict:
    """Everything metrics.json reports, recomputed from predictions.csv alone with scikit-learn."""
    labels = np.array([int(r["label"]) for r in rows])
    probs = np.array([float(r["prob"]) for r in rows])
    frame = {
        "auc": roc_auc_score(labels, probs),
        "ap": average_precision_score(labels, probs),
        "eer": sklearn_eer(labels, probs),
        "acc": accuracy_score(labels, probs >= 0.5),
        "balanced_acc": balanced_accuracy_score(labels, probs >= 0.5),
        "loss": log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7)),
    }
    by_video: dict[str, list[float]] = defaultdict(list)
    video_label = {}
    for r in rows:
        by_video[r["video"]].append(float(r["prob"]))
        video_label[r["video"]] = int(r["label"])
    agg = {"mean": np.mean, "max": np.max, "median": np.median}[aggregation]
    v_probs = np.array([agg(by_video[v]) for v in by_video])
    v_labels = np.array([video_label[v] for v in by_video])
    video = {
        "auc": roc_auc_score(v_labels, v_probs),
        "acc": accuracy_score(v_labels, v_probs >= 0.5),
        "eer": sklearn_eer(v_labels, v_probs),
    }
    methods: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        methods[r["method"]].append(i)
    per_method = {m: accuracy_score(labels[idx], probs[idx] >= 0.5) for m, idx in methods.items()}
    return {"frame": frame, "video": video, "per_method": per_method, "videos": len(by_video)}


@pytest.mark.slow
@pytest.mark.cli
def test_evaluate_two_sets_matches_sklearn_on_predictions_csv(trained_run: dict, tmp_path: Path) -> None:
    sets = [trained_run["celebdf"], trained_run["dfdc"]]
    out = tmp_path / "eval"
    args = [
        str(ROOT / "evaluate.py"),
        f"checkpoint={trained_run['run']}",
        f"data.test_sets=[{sets[0]},{sets[1]}]",
        "eval.video_aggregation=max",
        "eval.bootstrap_samples=200",
        "data.num_workers=0",
        f"eval.out_dir={out}",
    ]
    proc = run_cli(args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(tmp_path.glob("outputs")), "evaluate must not create a Hydra run folder"

    for name, n_images in (("celebdf", 18), ("dfdc", 25)):
        metrics = json.loads((out / name / "metrics.json").read_text())
        rows = read_predictions(out / name / "predictions.csv")
        assert len(rows) == metrics["counts"]["images"] == n_images
        assert metrics["checkpoint"] == str(trained_run["run"] / "checkpoints" / "best.pt")
        assert metrics["video_aggregation"] == "max"
        expected = expected_metrics(rows, "max")
        for key, value in expected["frame"].items():
            assert metrics["frame"][key] == pytest.approx(value, abs=1e-12), (name, key)
        for key, value in expected["video"].items():
            assert metrics["video"][key] == pytest.approx(value, abs=1e-12), (name, "video", key)
        assert metrics["counts"]["videos"] == expected["videos"]
        assert {m: v["acc"] for m, v in metrics["per_method"].items()} == pytest.approx(
            expected["per_method"]
        )
        low, high = metrics["frame"]["auc_ci"]
        assert 0.0 <= low <= metrics["frame"]["auc"] <= high <= 1.0
        assert metrics["bootstrap"]["samples"] == 200
        for png in ("roc.png", "pr.png"):
            with Image.open(out / name / png) as im:
                assert im.format == "PNG" and min(im.size) >= 200
        table_row = next(line for line in proc.stdout.splitlines() if line.startswith(f"| {name} "))
        assert f"{metrics['frame']['auc']:.4f}" in table_row and f"{metrics['video']['eer']:.4f}" in table_row
    # The flat set mixes in images drawn as the other class: its metrics are not trivially perfect.
    dfdc = json.loads((out / "dfdc" / "metrics.json").read_text())
    assert 0.0 < dfdc["frame"]["auc"] < 1.0
    assert set(dfdc["per_method"]) == {"real", "Face2Face", "NeuralTextures"}
    # <eval.out_dir>/report.html covers every set this call scored, in order
    report = parse((out / "report.html").read_text())
    assert [r[0] for r in report.tables["verdict-table"][1:3]] == ["celebdf", "dfdc"]
    assert report.tables["verdict-table"][2][3] == f"{dfdc['frame']['auc']:.4f}"

    # train.py's last step scored the same checkpoint with the same code: identical probabilities.
    for name in ("celebdf", "dfdc"):
        at_train = {
            r["path"]: float(r["prob"])
            for r in read_predictions(trained_run["run"] / "eval" / name / "predictions.csv")
        }
        now = {r["path"]: float(r["prob"]) for r in read_predictions(out / name / "predictions.csv")}
        assert at_train == now
        train_metrics = json.loads((trained_run["run"] / "eval" / name / "metrics.json").read_text())
        assert train_metrics["video_aggregation"] == "mean"
        assert train_metrics["frame"]["auc"] == pytest.approx(
            json.loads((out / name / "metrics.json").read_text())["frame"]["auc"]
        )
    assert "| celebdf " in (trained_run["run"] / "train.log").read_text()


@pytest.mark.slow
def test_evaluate_without_test_sets_scores_the_training_test_split(
    trained_run: dict, compose_cfg, tmp_path: Path
) -> None:
    overrides = [
        f"checkpoint={trained_run['run'] / 'checkpoints' / 'last.pt'}",
        "data.num_workers=0",
        "eval.bootstrap_samples=0",
        f"eval.out_dir={tmp_path}",
    ]
    reports = evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)
    assert list(reports) == ["test"]
    report = reports["test"]
    assert report["counts"] == {"images": 24, "real": 12, "fake": 12, "videos": 8}
    assert report["checkpoint"].endswith("last.pt")
    assert np.isnan(report["frame"]["auc_ci"]).all()  # no resamples asked for: no interval
    rows = read_predictions(tmp_path / "test" / "predictions.csv")
    assert all(r["path"].startswith(str(trained_run["data"] / "test")) for r in rows)
    expected = expected_metrics(rows, "mean")
    assert report["frame"]["auc"] == pytest.approx(expected["frame"]["auc"], abs=1e-12)


def test_video_aggregation_on_a_hand_built_set() -> None:
    """Frames per video: A real (.2 .9 .3), B real (.1 .2), C fake (.6 .1 .55), D fake (.45 .48)."""
    frames = {
        "real/A": [0.2, 0.9, 0.3],
        "real/B": [0.1, 0.2],
        "fake/C": [0.6, 0.1, 0.55],
        "fake/D": [0.45, 0.48],
    }
    samples, probs = [], []
    for video, values in frames.items():
        for i, p in enumerate(values):
            label = int(video.startswith("fake"))
            samples.append(Sample(f"{video}/{i}.png", label, video, "fake" if label else "real"))
            probs.append(p)
    probs = np.array(probs)

    def video_metrics(aggregation: str, k: int = 5) -> dict:
        cfg = {"video_aggregation": aggregation, "video_topk": k, "threshold": 0.5, "bootstrap_samples": 0,
               "confidence": 0.95}  # fmt: skip
        return set_report(samples, probs, cfg)["video"]

    # mean: A .467, B .15, C .417, D .465 -> fakes beat B only (AUC 2/4); C and D called real (ACC 2/4).
    assert video_metrics("mean")["auc"] == pytest.approx(0.5)
    assert video_metrics("mean")["acc"] == pytest.approx(0.5)
    # median: A .3, B .15, C .55, D .465 -> every fake above every real (AUC 1, EER 0); D called real.
    median = video_metrics("median")
    assert (median["auc"], median["eer"], median["acc"]) == pytest.approx((1.0, 0.0, 0.75))
    # max: A .9, B .2, C .6, D .48 -> fakes beat B only; A called fake and D called real.
    assert (video_metrics("max")["auc"], video_metrics("max")["acc"]) == pytest.approx((0.5, 0.5))
    # topk, k=2 (eval.video_topk): A .6, B .15, C .575, D .465 -> only C and D's order against A differs from max:
    # fakes beat B only (AUC 2/4); A and C called fake (ACC 2/4). k=1 is max, k=3 is mean for these videos.
    top2 = video_metrics("topk", k=2)
    assert (top2["auc"], top2["acc"]) == pytest.approx((0.5, 0.5))
    assert video_metrics("topk", k=1) == video_metrics("max")
    assert video_metrics("topk", k=3) == video_metrics("mean")


def test_test_sets_accept_both_layouts_and_name_results_after_their_folder(tmp_path: Path) -> None:
    full = make_folder_dataset(tmp_path / "a" / "celebdf", videos=2, frames=2)
    flat = make_flat_test_set(tmp_path / "b" / "celebdf", videos=2, frames=2)
    dm = DataModule(
        kind="folder", root=str(full), test_sets=[str(full), str(flat)], img_size=32, num_workers=0
    )
    assert dm.setup_test_sets() == ["celebdf", "celebdf_2"]
    assert all("/test/" in s.path for s in dm.test_samples["celebdf"])
    assert len(dm.test_samples["celebdf_2"]) == 2 * 2 * 2 + 1
    images, labels, _ = next(iter(dm.test_dataloader("celebdf_2")))
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    assert labels.tolist() == [s.label for s in dm.test_samples["celebdf_2"][: len(labels)]]

    missing = DataModule(kind="folder", root=str(full), test_sets=[str(tmp_path / "nope")])
    with pytest.raises(DataError, match=r"data.test_sets entry .*nope is not a folder"):
        missing.setup_test_sets()


def test_train_fails_before_training_on_a_missing_test_set(
    compose_cfg, folder_dataset: Path, tmp_path: Path
) -> None:
    from train import train

    cfg = compose_cfg(
        ["model=tiny", "data=folder", f"data.root={folder_dataset}", f"base_path={tmp_path}",
         "data.num_workers=0", f"data.test_sets=[{tmp_path / 'typo'}]"]
    )  # fmt: skip
    with pytest.raises(DataError, match="typo is not a folder"):
        train(cfg)
    assert not list(tmp_path.glob("outputs/*/*/checkpoints"))
