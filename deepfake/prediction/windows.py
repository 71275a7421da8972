"""Inputs to rows in input order, a window at a time, in memory bounded by the window, never by the run.

A window (`WINDOW` inputs) is sorted by content (`inputs.video_kind`); its images go through the ensemble in
batches (`images.image_results`), its videos through the decode -> detect -> score pipeline (`run.VideoRows`,
bounded queues between the stages), and each row is handed out as soon as every earlier input of the window has
its row, so rows reach the output in input order while they are scored. Only the rows waiting for an earlier
video are held (at most a window's).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from deepfake.evaluation.ensemble import Ensemble
from deepfake.extraction.bounds import not_regular
from deepfake.prediction.explanations import Explainer
from deepfake.prediction.images import image_results
from deepfake.prediction.inputs import NOT_A_VIDEO, video_kind
from deepfake.prediction.rows import Scored, image_row
from deepfake.prediction.run import VideoRows
from deepfake.prediction.sources import Entry

WINDOW = 4096  # inputs sorted and scored together: one image loader and one video pipeline per window
#: An image row's error when the checkpoint is a video-level clip model.
CLIP_MODEL_IMAGE = "the checkpoint is a video-level clip model ({frames} frames per clip): it scores videos, not single images"


@dataclass
class Scoring:
    """What scores a window: the ensemble for images, and the run's video half, made when a video first needs
    it (an image-only run builds no face finder)."""

    ensemble: Ensemble
    device: torch.device
    batch_size: int
    workers: int
    threshold: float
    clip: int  # frames per clip of a clip model (1: an image model)
    videos: Callable[[], VideoRows]
    explainer: Explainer | None = None  # explain=gradcam: images explained before their rows are committed
    _videos: VideoRows | None = None

    def video_rows(self) -> VideoRows:
        if self._videos is None:
            self._videos = self.videos().__enter__()
        return self._videos

    def __enter__(self) -> Scoring:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._videos is not None:
            self._videos.__exit__(*exc)


def scored(entries: Iterable[Entry], scoring: Scoring) -> Iterator[tuple[Entry, Scored]]:
    """Each entry with its scored row, in the entries' order."""
    it = iter(entries)
    while window := list(itertools.islice(it, WINDOW)):
        yield from _window(window, scoring)


def _window(window: list[Entry], s: Scoring) -> Iterator[tuple[Entry, Scored]]:
    kinds = [video_kind(e.path) for e in window]
    ready: dict[int, Scored] = {}
    position = 0

    def flush() -> Iterator[tuple[Entry, Scored]]:
        nonlocal position
        while position in ready:
            yield window[position], ready.pop(position)
            position += 1

    for i, kind in enumerate(kinds):
        if kind in ("not_video", "special"):  # special: a FIFO, socket or device, never opened
            why = NOT_A_VIDEO if kind == "not_video" else not_regular(window[i].path)
            row = {**image_row(window[i].path, None, why, s.threshold), "frames_used": 0, "faces_found": 0}
            ready[i] = Scored(row)
        elif kind == "image" and s.clip > 1:
            ready[i] = Scored(
                image_row(window[i].path, None, CLIP_MODEL_IMAGE.format(frames=s.clip), s.threshold)
            )
    yield from flush()
    images = [i for i, kind in enumerate(kinds) if kind == "image" and s.clip == 1]
    if images:
        paths = [window[i].path for i in images]
        results: Iterable[tuple[int, float, str, float]] = image_results(
            s.ensemble, paths, s.device, s.batch_size, s.workers
        )
        if s.explainer is not None:  # the window's images are explained first (their rows then wait)
            results = sorted(results)
            s.explainer.images(paths, [None if e or math.isnan(p) else p for _, p, e, _ in results])
        for j, prob, error, seconds in results:
            prob_or_none = None if error or math.isnan(prob) else prob
            ready[images[j]] = Scored(image_row(paths[j], prob_or_none, error, s.threshold), seconds=seconds)
            yield from flush()
    videos = [i for i, kind in enumerate(kinds) if kind == "video"]
    if videos:
        for i, result in zip(videos, s.video_rows().rows([window[i].path for i in videos]), strict=True):
            ready[i] = result
            yield from flush()
    assert position == len(window), "every input of a window gets its row"
