"""Videos to scored faces: decode ahead in worker threads, detect, crop and score here, aggregate.

The decode of the next videos overlaps the detection and scoring of the current one
(`deepfake.extraction.decode_pool.decoded_videos`, the pool extract.py uses); detection and crops are
extract.py's own code, so a video's crops match the training crops pixel for pixel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig

from deepfake.evaluation.aggregate import over_faces, over_frames
from deepfake.extraction.crops import crop_face, select_faces
from deepfake.extraction.decode_pool import decoded_videos
from deepfake.extraction.face_finder import FaceFinder, detect_downscaled
from deepfake.extraction.video import Decoded
from deepfake.prediction.score import Scorer

PREVIEW_FACES = 8  # most suspicious crops a video keeps for its contact sheet
#: (video path, face keys, uint8 crops (N, S, S, 3), probabilities (N,)) -> overlays of the explained faces by
#: index: `deepfake.prediction.explanations.Explainer.video`, whose overlays then stand in the contact sheet.
FaceExplainer = Callable[[str, Sequence[tuple[int, int]], np.ndarray, np.ndarray], dict[int, np.ndarray]]


@dataclass(frozen=True)
class Aggregation:
    faces: str = "max"  # over the faces of a frame
    frames: str = "mean"  # over the frames of a video
    k: int = 5  # frames averaged by frames=topk


@dataclass
class VideoResult:
    """One video's outcome: status ok | no_face | error, its probability (None until aggregated or without a
    face), and the per-frame and per-face probabilities behind it."""

    path: str
    status: str = "ok"
    error: str = ""
    prob: float | None = None
    frames_decoded: int = 0
    frames_seen: list[int] = field(default_factory=list)  # indices of the decoded frames, with a face or not
    seconds: float = 0.0  # decode, detection and scoring of this video (each stage's own time)
    frame_probs: list[tuple[int, float]] = field(
        default_factory=list
    )  # (frame index, prob), frames with faces
    face_probs: list[tuple[int, int, float]] = field(default_factory=list)  # (frame index, face index, prob)
    top_faces: list[tuple[np.ndarray, float, int]] = field(default_factory=list)  # (crop, prob, frame index)

    @property
    def frames_used(self) -> int:
        return len(self.frame_probs)

    @property
    def faces_found(self) -> int:
        return len(self.face_probs)


def video_crops(
    decoded: Decoded, settings: DictConfig, detector: FaceFinder
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(frame index, face index) of each selected face and its crop (N, S, S, 3 uint8), made as extract.py
    makes them (`faces.save_crops`: select_faces, then crop_face with the same settings)."""
    d, f = settings.detector, settings.faces
    frames = [frame for _, frame in decoded.frames]
    detections = detect_downscaled(detector, frames, d.max_side, d.min_face_size, d.batch_size)
    keys, crops = [], []
    for (index, frame), found in zip(decoded.frames, detections, strict=True):
        for k, det in enumerate(select_faces(found, f.policy, f.min_size, f.min_score)):
            keys.append((index, k))
            crops.append(crop_face(frame, det, f.margin, f.size, f.align).image)
    empty = np.zeros((0, f.size, f.size, 3), np.uint8)
    return keys, np.stack(crops) if crops else empty


def score_crops(crops: np.ndarray, score: Scorer, device: torch.device, batch_size: int) -> np.ndarray:
    """Probabilities of `crops` (uint8 until the device; one transfer back per video)."""
    out = []
    for i in range(0, len(crops), batch_size):
        batch = torch.from_numpy(crops[i : i + batch_size]).to(device, non_blocking=True)
        out.append(score(batch.permute(0, 3, 1, 2)))
    return torch.cat(out).double().cpu().numpy()


def detect_video(
    decoded: Decoded, settings: DictConfig, detector: FaceFinder
) -> tuple[VideoResult, list[tuple[int, int]], np.ndarray]:
    """The detection half: a result (final when the video failed or has no face), its face keys and crops."""
    result = VideoResult(
        decoded.path,
        error=decoded.error,
        frames_decoded=len(decoded.frames),
        frames_seen=[index for index, _ in decoded.frames],
    )
    empty = np.zeros((0, 1, 1, 3), np.uint8)
    if not decoded.frames:
        result.status = "error"
        result.error = decoded.error or "no frame could be decoded"
        return result, [], empty
    try:
        keys, crops = video_crops(decoded, settings, detector)
    except (RuntimeError, ValueError) as e:  # a detector failing on this video's frames: its row says so
        result.status, result.error = "error", f"face detection failed: {type(e).__name__}: {e}"
        return result, [], empty
    if not keys:
        result.status = "no_face"
    return result, keys, crops


def classify_video(
    result: VideoResult,
    keys: list[tuple[int, int]],
    crops: np.ndarray,
    score: Scorer,
    agg: Aggregation,
    device: torch.device,
    batch_size: int = 64,
    explain: FaceExplainer | None = None,
) -> VideoResult:
    """The scoring half: face, frame and video probabilities (nothing to do without faces); `explain` writes
    the faces' explanations, and their overlays replace the crops the contact sheet shows."""
    if not keys:
        return result
    t0 = time.perf_counter()
    probs = score_crops(crops, score, device, batch_size)
    result.face_probs = [(frame, face, float(p)) for (frame, face), p in zip(keys, probs, strict=True)]
    by_frame: dict[int, list[float]] = {}
    for frame, _, p in result.face_probs:
        by_frame.setdefault(frame, []).append(p)
    result.frame_probs = [(frame, over_faces(ps, agg.faces)) for frame, ps in by_frame.items()]
    result.prob = over_frames([p for _, p in result.frame_probs], agg.frames, agg.k)
    order = np.argsort(-probs, kind="stable")[:PREVIEW_FACES]
    shown = explain(result.path, keys, crops, probs) if explain is not None else {}
    result.top_faces = [(shown.get(i, crops[i]).copy(), float(probs[i]), keys[i][0]) for i in order]
    result.seconds += time.perf_counter() - t0
    return result


def predict_videos(
    paths: Sequence[str],
    settings: DictConfig,
    detector: FaceFinder,
    score: Scorer,
    agg: Aggregation,
    device: torch.device,
    workers: int,
    batch_size: int = 64,
    explain: FaceExplainer | None = None,
) -> Iterator[VideoResult]:
    """Each video's result in `paths` order. Three stages overlap: up to 2 videos per worker are decoded
    ahead in threads, and one video's crops are classified in a thread while the next one is detected."""
    # Decode threads, not processes: a process pool's start (each worker imports the main module, torch
    # included) costs more than decoding a few videos, and FFmpeg decodes without the GIL.
    decoded = decoded_videos(paths, int(settings.frames_per_video), min(workers, len(paths)), threads=True,
                             max_side=settings.decode_max_side, timeout_s=settings.timeout_s)  # fmt: skip
    with ThreadPoolExecutor(1, thread_name_prefix="classify") as pool:
        pending: Future[VideoResult] | None = None
        for video, decode_seconds in decoded:
            t0 = time.perf_counter()
            staged = detect_video(video, settings, detector)
            staged[0].seconds = decode_seconds + time.perf_counter() - t0
            submitted = pool.submit(classify_video, *staged, score, agg, device, batch_size, explain)
            if pending is not None:
                yield pending.result()
            pending = submitted
        if pending is not None:
            yield pending.result()
