"""predict.py's video half: settings, detector and scorer once, then each video to its row (and its extras)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from deepfake.evaluation.inference import LoadedDetector
from deepfake.extraction.detectors import FaceDetector
from deepfake.extraction.pipeline import build_detector, detector_threads
from deepfake.prediction.preview import overlay_masks, preview_dir, sheet_name, write_preview
from deepfake.prediction.rows import FRAME_COLUMNS, frame_rows, frames_path, video_row, write_csv
from deepfake.prediction.score import Scorer, clip_scorer
from deepfake.prediction.settings import crop_settings
from deepfake.prediction.videos import Aggregation, predict_videos
from deepfake.system.thread_probe import ThreadTuner, paced

log = logging.getLogger("deepfake")


@contextlib.contextmanager
def cpu_threads(detector: FaceDetector, settings: DictConfig, workers: int) -> Iterator[ThreadTuner]:
    """As extract.py: a CPU MTCNN starts with the cores the decoders leave and times the counts over the first
    videos (`detector_threads`); the classifying thread starts with the count it first sees. Restored after."""
    threads = torch.get_num_threads()
    try:
        yield detector_threads(detector, settings.detector.threads, workers)
    finally:
        torch.set_num_threads(threads)


def video_rows(
    paths: list[str],
    cfg: DictConfig,
    loaded: LoadedDetector,
    score: Scorer,
    clip: int,
    device: torch.device,
    workers: int,
    output: Path,
) -> list[dict[str, Any]]:
    """Rows of `paths` (all videos by content) in order; writes the per-frame CSV and previews when asked.

    `clip` > 1: `score` is a clip model's, and each video's crops are scored together as one clip.
    """
    settings = crop_settings(loaded, cfg.extraction)
    f = settings.faces
    log.info("cropping videos as extracted: %d frames, %s detector, margin %g, %d px, align %s, %s face(s)",
             settings.frames_per_video, settings.detector.kind, f.margin, f.size, f.align, f.policy)  # fmt: skip
    detector = build_detector(settings.detector)
    agg = Aggregation(cfg.aggregation.faces, cfg.aggregation.frames, cfg.aggregation.k)
    workers = min(workers, len(paths))
    batch_size = cfg.batch_size
    if clip > 1:
        score, batch_size = clip_scorer(score, clip), sys.maxsize  # all of a video's crops in one call
    rows, per_frame, taken = [], [], set()
    with cpu_threads(detector, settings, workers) as tuner:
        results = predict_videos(paths, settings, detector, score, agg, device, workers, batch_size)
        for result in paced(results, tuner, units=lambda r: max(1, r.frames_decoded)):
            rows.append(video_row(result, cfg.threshold, cfg.no_face_prob))
            per_frame.extend(frame_rows(result))
            if cfg.preview and result.status != "error":
                overlay_masks(result, loaded.model, device)
                sheet = write_preview(
                    result, preview_dir(output), sheet_name(result.path, taken), cfg.threshold
                )
                log.info("preview of %s: %s", result.path, sheet)
    if cfg.per_frame:
        write_csv(frames_path(output), FRAME_COLUMNS, per_frame)
    return rows
