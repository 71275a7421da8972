"""The shared aggregation rules against hand computations, and evaluate's video scores going through them."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake.evaluation.aggregate import confident, over_faces, over_frames
from deepfake.evaluation.metrics import video_scores

FRAMES = [0.1, 0.9, 0.4, 0.7, 0.3]


def test_faces_max_and_mean() -> None:
    assert over_faces([0.2, 0.8, 0.5]) == 0.8
    assert over_faces([0.2, 0.8, 0.5], "mean") == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("mode", "k", "expected"),
    [
        ("mean", 5, (0.1 + 0.9 + 0.4 + 0.7 + 0.3) / 5),
        ("max", 5, 0.9),
        ("median", 5, 0.4),
        ("topk", 2, (0.9 + 0.7) / 2),
        ("topk", 3, (0.9 + 0.7 + 0.4) / 3),
        ("topk", 10, (0.1 + 0.9 + 0.4 + 0.7 + 0.3) / 5),  # k beyond the frames: all of them
    ],
)
def test_frame_modes(mode: str, k: int, expected: float) -> None:
    assert over_frames(FRAMES, mode, k) == pytest.approx(expected)


def test_confident_takes_the_confident_fakes_when_there_are_enough() -> None:
    # 32 frames, 14 above 0.8 (> 32 // 2.5 = 12 and > 11): the mean of those 14 alone
    fakes = [0.85] * 7 + [0.95] * 7
    p = np.array(fakes + [0.5] * 18)
    assert confident(p) == pytest.approx(0.9)
    assert over_frames(p, "confident") == pytest.approx(0.9)


def test_confident_needs_more_than_eleven_fakes() -> None:
    # 12 fakes of 20 frames (> 20 // 2.5 = 8, but 12 > 11 holds): taken; with 11 they are not
    assert confident(np.array([0.9] * 12 + [0.5] * 8)) == pytest.approx(0.9)
    few = np.array([0.9] * 11 + [0.5] * 9)
    assert confident(few) == pytest.approx(few.mean())


def test_confident_real_side_needs_over_ninety_percent() -> None:
    p = np.array([0.1] * 19 + [0.6])  # 95% below 0.2: the mean of those
    assert confident(p) == pytest.approx(0.1)
    q = np.array([0.1] * 9 + [0.6])  # 90% exactly is not more than 90%: the plain mean
    assert confident(q) == pytest.approx(q.mean())


def test_bad_mode_or_empty_input_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of mean, max, median, topk, confident"):
        over_frames(FRAMES, "mode")
    with pytest.raises(ValueError, match="nothing to aggregate"):
        over_faces([])
    with pytest.raises(ValueError, match="k > 0"):
        over_frames(FRAMES, "topk", 0)


@pytest.mark.parametrize("mode", ["topk", "confident"])
def test_evaluate_video_scores_use_the_same_rules(mode: str) -> None:
    probs = np.array([*FRAMES, 0.2, 0.6])
    labels = np.array([1] * 5 + [0, 0])
    videos = ["a"] * 5 + ["b"] * 2
    v_labels, v_probs = video_scores(labels, probs, videos, mode, k=2)
    assert v_labels.tolist() == [1, 0]
    assert v_probs.tolist() == pytest.approx([over_frames(FRAMES, mode, 2), over_frames([0.2, 0.6], mode, 2)])
