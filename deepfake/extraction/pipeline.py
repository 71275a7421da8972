"""`extract(cfg)`: list the videos, take this shard's slice, skip the done ones, then decode, detect, crop.

Decoding and the conversion of kept frames to RGB run in worker processes, a video each; detection runs batched
in the main process, on the GPU when there is one. Videos are
handled in a fixed order, so an FF++ original is on disk before the fakes that reuse its boxes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import torch
from omegaconf import DictConfig

from deepfake.extraction.config import validate
from deepfake.extraction.detectors import (
    Detection,
    FaceDetector,
    MtcnnDetector,
    YunetDetector,
    detect_downscaled,
)
from deepfake.extraction.faces import read_boxes, save_crops
from deepfake.extraction.report import ExtractProgress, summary
from deepfake.extraction.settings import write_settings
from deepfake.extraction.sources import Job, list_videos, shard_slice
from deepfake.extraction.video import Decoded, exit_with, timed_read
from deepfake.extraction.writer import ShardWriter, assemble, done_videos, faces_dir, shard_name
from deepfake.system.thread_probe import ThreadChooser, ThreadTuner, candidate_counts, paced
from deepfake.system.threads import available_cores

log = logging.getLogger(__name__)

#: Test hook: seconds to sleep after a video's crops are written and before they are moved into place, so a
#: test can `kill -9` an extraction in the middle of a video.
PAUSE_ENV = "DEEPFAKE_EXTRACT_TEST_PAUSE"
MAX_FRAMES_AHEAD = 1024  # decoded frames waiting for the detector, at most (about 6 GB of 1080p frames)


def detector_threads(detector: FaceDetector, pinned: int | None, workers: int) -> ThreadTuner:
    """The detecting thread's intra-op count: on the CPU MTCNN starts with the cores the decoders leave and
    then times the candidate counts over the first videos (its many small per-box ops often run faster on
    fewer threads); `detector.threads` pins it. Elsewhere (a GPU, YuNet's OpenCV) torch's count is left alone."""
    if not (isinstance(detector, MtcnnDetector) and detector.device.type == "cpu"):
        return ThreadTuner(None, "video", "frame")
    cores = available_cores()
    start = pinned or max(1, cores - workers)
    torch.set_num_threads(start)
    candidates = candidate_counts(cores, None, start)
    if pinned or len(candidates) < 2:
        log.info(
            "CPU threads for detection: %d (%s)",
            start,
            f"detector.threads={pinned}" if pinned else "one core",
        )
        return ThreadTuner(None, "video", "frame")
    log.info("CPU threads for detection: %d to start (%d core(s) - %d decode worker(s)), then timed against %s",
             start, cores, workers, ", ".join(map(str, candidates)))  # fmt: skip
    return ThreadTuner(ThreadChooser(candidates, start), "video", "frame")


def build_detector(cfg: DictConfig) -> FaceDetector:
    if cfg.kind == "yunet":
        return YunetDetector(cfg.model, cfg.score_threshold)
    return MtcnnDetector(cfg.device, list(cfg.thresholds))


def decoded_videos(
    paths: list[str], frames_per_video: int, workers: int, threads: bool = False
) -> Iterator[tuple[Decoded, float]]:
    """Decoded videos in `paths` order; with workers > 0 up to 2 per worker are decoded ahead, and no more than
    MAX_FRAMES_AHEAD frames (decoded frames wait in memory at full size: 6 MB each at 1080p). Workers are
    processes, or with `threads` threads of this process (no start-up: FFmpeg decodes without the GIL)."""
    if workers == 0:
        for path in paths:
            yield timed_read(path, frames_per_video)
        return
    if threads:
        pool: Executor = ThreadPoolExecutor(workers, thread_name_prefix="decode")
    else:
        # forkserver, not fork: the parent holds torch (and rich) threads, whose locks a fork would copy. Its
        # server imports the main module once and forks each worker from it, where spawn would import it per worker.
        ctx = multiprocessing.get_context("forkserver")
        pool = ProcessPoolExecutor(workers, ctx, initializer=exit_with, initargs=(os.getpid(),))
    with pool:
        pending: deque[Future] = deque()
        queue = iter(paths)
        ahead = max(1, min(2 * workers, MAX_FRAMES_AHEAD // frames_per_video))
        for path in queue:
            pending.append(pool.submit(timed_read, path, frames_per_video))
            if len(pending) >= ahead:
                break
        while pending:
            result = pending.popleft().result()
            path = next(queue, None)
            if path is not None:
                pending.append(pool.submit(timed_read, path, frames_per_video))
            yield result


def _status(decoded: Decoded, crops: int, frames_per_video: int) -> str:
    if not decoded.frames:
        return "error"
    if crops == 0:
        return "no_face"
    return "short" if len(decoded.frames) < frames_per_video else "ok"


def _detections(
    job: Job, decoded: Decoded, cfg: DictConfig, detector: FaceDetector, out: Path
) -> list[list[Detection]]:
    """The FF++ original's boxes for a fake that reuses them (when the original has any), else detection."""
    reused = read_boxes(out / faces_dir(job.box_source)) if job.box_source else {}
    if reused:
        return [reused.get(i, []) for i, _ in decoded.frames]
    d = cfg.detector
    return detect_downscaled(
        detector, [f for _, f in decoded.frames], d.max_side, d.min_face_size, d.batch_size
    )


def extract_video(
    job: Job, decoded: Decoded, seconds: float, cfg: DictConfig, detector: FaceDetector, writer: ShardWriter
) -> dict[str, object]:
    """Detect, crop and commit one decoded video; returns its videos.csv row."""
    t0 = time.perf_counter()
    s = job.sample
    row: dict[str, object] = {"source": job.rel, "video": s.video, "label": s.label, "split": s.split,
                              "method": s.method, "frames_decoded": len(decoded.frames)}  # fmt: skip
    if decoded.info is not None:
        info = decoded.info
        row.update(frames_total=info.frames, width=info.width, height=info.height, fps=round(info.fps, 3),
                   rotation=info.rotation)  # fmt: skip
    tmp, manifest, crops, with_face = None, [], 0, 0
    if decoded.frames:
        try:
            detections = _detections(job, decoded, cfg, detector, writer.out)
        except (
            RuntimeError,
            ValueError,
        ) as e:  # a detector failing on this video's frames: a row, not a crash
            decoded.error = f"face detection failed: {type(e).__name__}: {e}"
            decoded.frames = []
    if decoded.frames:
        tmp = writer.temp_dir(job.rel)
        saved = save_crops(decoded.frames, detections, cfg.faces, tmp)
        crops, with_face = len(saved.files), saved.frames_with_face
        folder = faces_dir(job.rel)
        manifest = [
            [f"{folder}/{name}", s.label, s.split, s.video, s.method, s.identity] for name in saved.files
        ]
        pause = float(os.environ.get(PAUSE_ENV, "0"))
        if pause:
            time.sleep(pause)
    row.update(status=_status(decoded, crops, cfg.frames_per_video), frames_with_face=with_face, faces=crops,
               error=decoded.error)  # fmt: skip
    row["seconds"] = round(seconds + time.perf_counter() - t0, 3)
    writer.commit(job.rel, tmp, manifest, row)
    return row


def _extract_videos(todo: list[Job], cfg: DictConfig, out: Path) -> list[dict[str, object]]:
    """Decode in workers, detect here; on the CPU the detector gets the cores the decoders leave (MTCNN's many
    small per-box ops run faster on one thread than on threads that wait for a busy core)."""
    detector = build_detector(cfg.detector)
    writer = ShardWriter(out, shard_name(cfg.shard.index, cfg.shard.count))
    workers = cfg.num_workers if cfg.num_workers >= 0 else max(1, (os.cpu_count() or 2) - 1)
    workers = min(workers, len(todo))
    threads = torch.get_num_threads()
    tuner = detector_threads(detector, cfg.detector.threads, workers)
    rows: list[dict[str, object]] = []
    try:
        with ExtractProgress(len(todo), cfg.progress, cfg.every_n_seconds) as progress:
            videos = zip(
                todo,
                decoded_videos([j.sample.path for j in todo], cfg.frames_per_video, workers),
                strict=True,
            )
            for job, (decoded, seconds) in paced(videos, tuner, units=lambda v: max(1, len(v[1][0].frames))):
                rows.append(extract_video(job, decoded, seconds, cfg, detector, writer))
                progress.update(int(rows[-1]["faces"]))
    finally:
        torch.set_num_threads(threads)
    writer.close()
    return rows


def extract(cfg: DictConfig) -> Path | None:
    """Run one shard of an extraction; returns manifest.csv once every video is done (else None)."""
    cfg = validate(cfg)
    t0 = time.perf_counter()
    root, out = Path(cfg.root).expanduser().resolve(), Path(cfg.out).expanduser().resolve()
    jobs, notes = list_videos(cfg.dataset, root)
    for note in notes:
        log.warning(note)
    mine = shard_slice(jobs, cfg.shard.index, cfg.shard.count)
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out, cfg)  # what predict.py needs to crop as this extraction did (via the checkpoint)
    done = done_videos(out)
    todo = [j for j in mine if j.rel not in done]
    log.info("%d video(s) in %s; shard %d/%d has %d, %d already done, %d to extract", len(jobs), root,
             cfg.shard.index, cfg.shard.count, len(mine), len(mine) - len(todo), len(todo))  # fmt: skip
    rows = _extract_videos(todo, cfg, out) if todo else []
    for line in summary([{k: str(v) for k, v in r.items()} for r in rows], len(mine) - len(todo),
                        time.perf_counter() - t0):  # fmt: skip
        log.info(line)
    missing = assemble(out, [j.rel for j in jobs], cfg.val_fraction)
    if missing:
        log.info("%d video(s) of the dataset are not done yet (other shards?); manifest.csv is written when "
                 "all are: rerun any shard after they finish", len(missing))  # fmt: skip
        return None
    log.info("wrote %s and %s", out / "manifest.csv", out / "videos.csv")
    return out / "manifest.csv"
