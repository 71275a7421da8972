"""Evaluation metrics beyond the training ones: balanced accuracy, per-method results, bootstrap AUC intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from deepfake.evaluation.metrics import binary_metrics, bootstrap_auc_ci, weighted_auc
from deepfake.evaluation.per_method import per_method_metrics


def test_balanced_accuracy_is_sklearns_and_equals_acc_with_one_class() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.2).astype(int)  # imbalanced: where balanced ACC and ACC differ
    probs = np.clip(rng.random(300) * 0.7 + labels * 0.25, 0, 1)
    m = binary_metrics(labels, probs, threshold=0.4)
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, probs >= 0.4), abs=1e-12)
    assert m["balanced_acc"] != pytest.approx(m["acc"])
    single = binary_metrics(np.zeros(4, dtype=int), np.array([0.1, 0.7, 0.2, 0.3]))
    assert single["balanced_acc"] == single["acc"] == pytest.approx(0.75)


def test_per_method_accuracy_and_auc_against_the_reals() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.6, 0.3, 0.9, 0.4, 0.7, 0.25, 0.15])
    methods = ["real"] * 4 + ["Deepfakes", "Deepfakes", "FaceSwap", "FaceSwap", "FaceSwap"]
    videos = [f"v{i}" for i in range(9)]
    m = per_method_metrics(labels, probs, methods, videos)
    assert m["real"]["n"] == 4 and m["real"]["acc"] == 0.75  # 0.6 is called fake
    assert m["real"]["auc"] is m["real"]["ap"] is m["real"]["reals"] is None  # reals get no AUC of their own
    assert m["Deepfakes"]["n"] == 2 and m["Deepfakes"]["acc"] == pytest.approx(0.5)
    assert m["FaceSwap"]["acc"] == pytest.approx(1 / 3)
    for method in ("Deepfakes", "FaceSwap"):
        pick = (labels == 0) | (np.array(methods) == method)
        assert m[method]["reals"] == "shared"
        assert m[method]["auc"] == pytest.approx(roc_auc_score(labels[pick], probs[pick]))
        assert m[method]["video_auc"] == pytest.approx(m[method]["auc"])  # one frame per video


@pytest.mark.parametrize("seed", range(3))
def test_weighted_auc_equals_sklearn_with_sample_weights_and_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    probs = np.round(rng.random(500) * 0.6 + labels * 0.3, 2)  # rounded: many tied scores
    weights = rng.integers(0, 4, 500).astype(float)
    auc = weighted_auc(labels, probs)
    assert auc(weights) == pytest.approx(roc_auc_score(labels, probs, sample_weight=weights), abs=1e-12)
    assert auc(np.ones(500)) == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)


def separable_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n // 2)
    return labels, rng.normal(labels * 1.2, 1.0)


def test_bootstrap_interval_matches_the_analytic_standard_error() -> None:
    """Hanley & McNeil (1982): the AUC's standard error from A and the class sizes; 95% = +-1.96 SE."""
    labels, probs = separable_scores(400, seed=1)
    auc = roc_auc_score(labels, probs)
    n1 = n0 = 200
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n0 * n1))
    low, high = bootstrap_auc_ci(labels, probs, samples=500, seed=0)
    assert low < auc < high
    assert (high - low) / 2 == pytest.approx(1.96 * se, rel=0.25)
    assert bootstrap_auc_ci(labels, probs, samples=500, seed=0) == (low, high)  # seeded: reproducible


def test_bootstrap_resamples_videos_not_frames() -> None:
    """Five identical frames per video carry no more evidence than one: the interval must not shrink."""
    labels, probs = separable_scores(60, seed=2)
    one_frame = bootstrap_auc_ci(labels, probs, samples=300, seed=3)
    videos = np.repeat([f"v{i:03d}" for i in range(60)], 5)
    five_frames = bootstrap_auc_ci(np.repeat(labels, 5), np.repeat(probs, 5), videos, samples=300, seed=3)
    assert five_frames == pytest.approx(one_frame, abs=1e-12)
    naive = bootstrap_auc_ci(np.repeat(labels, 5), np.repeat(probs, 5), None, samples=300, seed=3)
    assert (naive[1] - naive[0]) < (one_frame[1] - one_frame[0]) / 1.5  # frame resampling: falsely narrow


def test_bootstrap_interval_is_nan_when_undefined() -> None:
    labels, probs = separable_scores(20, seed=4)
    assert all(math.isnan(x) for x in bootstrap_auc_ci(labels, probs, samples=0))
    assert all(math.isnan(x) for x in bootstrap_auc_ci(np.ones(5, dtype=int), np.linspace(0, 1, 5)))
