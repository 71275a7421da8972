import itertools

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score, roc_curve

from deepfake.evaluation.metrics import binary_metrics, detection_metrics, equal_error_rate, video_scores


def brute_force_eer(labels: np.ndarray, probs: np.ndarray) -> float:
    """EER by definition, without scikit-learn: sweep every threshold from above all scores to below them,
    and where FNR - FPR changes sign between two neighbouring thresholds, intersect the segment joining them."""
    points = []
    for t in np.concatenate([[np.inf], np.sort(np.unique(probs))[::-1]]):
        pred = probs >= t
        points.append((np.mean(pred[labels == 0]), 1 - np.mean(pred[labels == 1])))
    for (f0, n0), (f1, n1) in itertools.pairwise(points):
        if n0 - f0 > 0 >= n1 - f1:
            # fpr = f0 + s (f1 - f0), fnr = n0 + s (n1 - n0): equal at s = (n0 - f0) / ((n0 - f0) - (n1 - f1))
            s = (n0 - f0) / ((n0 - f0) - (n1 - f1))
            return float(f0 + s * (f1 - f0))
    raise AssertionError("FNR - FPR never changed sign")


def deepfakebench_eer(labels: np.ndarray, probs: np.ndarray) -> float:
    """DeepfakeBench's formula (training/metrics/utils.py): the FPR of the ROC point nearest FNR = FPR."""
    fpr, tpr, _ = roc_curve(labels, probs)
    return float(fpr[np.nanargmin(np.abs((1 - tpr) - fpr))])


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
    # At threshold 0.7: FPR = 1/4, TPR = 3/4 -> FNR = 1/4: equal at a ROC point, nothing to interpolate.
    assert equal_error_rate(labels, probs) == pytest.approx(0.25)
    fpr, tpr, _ = roc_curve(labels, probs)
    assert np.any(np.isclose(fpr, 0.25) & np.isclose(1 - tpr, 0.25))


def test_eer_of_constant_predictions_is_one_half() -> None:
    """One threshold: the ROC is (0, 0) -> (1, 1), FNR = 1 - FPR along it, equal at 0.5 (DeepfakeBench: 0)."""
    labels = np.array([0, 1] * 50)
    probs = np.full(100, 0.3)
    assert equal_error_rate(labels, probs) == pytest.approx(0.5, abs=1e-12)
    assert binary_metrics(labels, probs)["eer"] == pytest.approx(0.5, abs=1e-12)
    assert deepfakebench_eer(labels, probs) == 0.0


def test_eer_on_a_coarse_tied_roc_by_hand() -> None:
    """50 reals and 45 fakes at 0.3, 5 fakes at 0.9. ROC points (FPR, FNR): (0, 1) above 0.9, (0, 0.9) at 0.9,
    (1, 0) at 0.3. On the last segment FPR = s, FNR = 0.9 (1 - s): equal at s = 0.9 / 1.9 = 9/19 = 0.47368."""
    labels = np.array([0] * 50 + [1] * 50)
    probs = np.full(100, 0.3)
    probs[-5:] = 0.9
    assert equal_error_rate(labels, probs) == pytest.approx(9 / 19, abs=1e-12)
    assert deepfakebench_eer(labels, probs) == 0.0  # the corner (0, 0.9): |0.9 - 0| < |0 - 1|


def test_eer_interpolates_between_ties_of_both_classes() -> None:
    """Reals 0.1, 0.5, 0.5, 0.9; fakes 0.5, 0.5, 0.8, 0.95. Points (FPR, FNR): (0, 1), (0, .75) at 0.95,
    (.25, .75) at 0.9, (.25, .5) at 0.8, (.75, 0) at 0.5, (1, 0) at 0.1. FNR - FPR goes .25 -> -.75 on
    (.25, .5) -> (.75, 0): s = .25 / 1 = 1/4, so FPR = .25 + .25 * .5 = 0.375 = FNR = .5 - .25 * .5."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.5, 0.5, 0.9, 0.5, 0.5, 0.8, 0.95])
    assert equal_error_rate(labels, probs) == pytest.approx(0.375, abs=1e-12)
    assert brute_force_eer(labels, probs) == pytest.approx(0.375, abs=1e-12)


def test_video_eer_uses_the_interpolated_crossing() -> None:
    """Two real and two fake videos, all at 0.5: the video ROC is one segment, EER 0.5 (was 0.0)."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.full(6, 0.5)
    m = detection_metrics(labels, probs, ["r1", "r1", "r2", "f1", "f2", "f2"])
    assert m["val/eer"] == pytest.approx(0.5) and m["val/video_eer"] == pytest.approx(0.5)


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
