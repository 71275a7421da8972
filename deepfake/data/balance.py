"""Class balance and per-video frame caps (`data.balance`, `data.frames_per_video`).

FF++-style sets give hundreds of near-identical frames per video and four to six fakes per real video;
capping frames evens out videos, and weighted sampling or a positive-class weight evens out the classes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from deepfake.data.samples import Sample
from deepfake.errors import DataError


def cap_frames_per_video(samples: Sequence[Sample], cap: int | None) -> list[Sample]:
    """Keep at most `cap` frames of each video, evenly spaced over its frames in path order."""
    if not cap:
        return list(samples)
    by_video: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_video[(s.split, s.video)].append(i)
    keep: list[int] = []
    for indices in by_video.values():
        indices.sort(key=lambda i: samples[i].path)
        if len(indices) > cap:
            picks = np.linspace(0, len(indices) - 1, cap).round().astype(int)
            indices = [indices[p] for p in picks]
        keep.extend(indices)
    return [samples[i] for i in sorted(keep)]


def class_counts(labels: np.ndarray) -> tuple[int, int]:
    fake = int(labels.sum())
    return len(labels) - fake, fake


def sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights that make each class equally likely in a weighted sampler."""
    real, fake = class_counts(labels)
    if not real or not fake:
        raise DataError(
            f"data.balance=weighted_sampler needs both classes in the train split (found {real} real, "
            f"{fake} fake)"
        )
    return np.where(labels == 1, 0.5 / fake, 0.5 / real)


def pos_weight(labels: np.ndarray) -> float:
    """BCE weight of the fake class: real/fake, so both classes carry the same total loss."""
    real, fake = class_counts(labels)
    if not real or not fake:
        raise DataError(
            f"data.balance=pos_weight needs both classes in the train split (found {real} real, {fake} fake)"
        )
    return real / fake
