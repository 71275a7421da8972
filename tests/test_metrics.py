import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score, roc_curve

from deepfake.evaluation.metrics import binary_metrics, detection_metrics, equal_error_rate, video_scores


def brute_force_eer(labels: np.ndarray, probs: np.ndarray) -> float:
    """EER by definition: over every threshold, the FPR where |FPR - FNR| is smallest."""
    best, best_gap = None, np.inf
    for t in np.concatenate([[np.inf], np.sort(np.unique(probs))[::-1]]):
        pred = probs >= t
        fpr = np.mean(pred[labels == 0])
        fnr = 1 - np.mean(pred[labels == 1])
        if abs(fnr - fpr) < best_gap:
            best, best_gap = fpr, abs(fnr - fpr)
    return float(best)


@pytest.mark.parametrize("seed", range(5))
def test_frame_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(rng.random(200) * 0.6 + labels * 0.3, 0, 1)
    m = binary_metrics(labels, probs)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)
    assert m["ap"] == pytest.approx(average_precision_score(labels, probs), abs=1e-12)
    assert m["loss"] == pytest.approx(log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7)), abs=1e-12)
    assert m["acc"] == pytest.approx(np.mean((probs >= 0.5) == labels))
    assert m["eer"] == pytest.approx(brute_force_eer(labels, probs), abs=1e-12)


def test_eer_on_a_known_case() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.8, 0.9, 0.95])
    # At threshold 0.7: FPR = 1/4, TPR = 3/4 -> FNR = 1/4: equal.
    assert equal_error_rate(labels, probs) == pytest.approx(0.25)
    fpr, tpr, _ = roc_curve(labels, probs)
    assert np.any(np.isclose(fpr, 0.25) & np.isclose(1 - tpr, 0.25))


def test_video_level_metrics_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.2, 0.4, 0.9, 0.6, 0.8, 0.3, 0.1])
    videos = ["real/a", "real/a", "real/b", "fake/c", "fake/c", "fake/d", "fake/d"]
    v_labels, v_probs = video_scores(labels, probs, videos)
    # Sorted keys: fake/c, fake/d, real/a, real/b
    assert v_labels.tolist() == [1, 1, 0, 0]
    assert v_probs.tolist() == pytest.approx([0.7, 0.2, 0.3, 0.9])
    m = detection_metrics(labels, probs, videos)
    # Pairs (fake, real): (0.7>0.3) (0.7<0.9) (0.2<0.3) (0.2<0.9) -> AUC 1/4; ACC@0.5: c right, d wrong, a right, b wrong
    assert m["val/video_auc"] == pytest.approx(0.25)
    assert m["val/video_acc"] == pytest.approx(0.5)
    assert m["val/auc"] == pytest.approx(roc_auc_score(labels, probs))


def test_video_aggregation_max_and_median() -> None:
    labels = np.array([1, 1, 1])
    probs = np.array([0.1, 0.5, 0.9])
    assert video_scores(labels, probs, ["v"] * 3, "max")[1].tolist() == [0.9]
    assert video_scores(labels, probs, ["v"] * 3, "median")[1].tolist() == [0.5]


def test_single_class_gives_nan_not_an_exception() -> None:
    m = binary_metrics(np.ones(4, dtype=int), np.array([0.9, 0.8, 0.2, 0.7]))
    assert np.isnan(m["auc"]) and np.isnan(m["eer"])
    assert m["acc"] == pytest.approx(0.75)
