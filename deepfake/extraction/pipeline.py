"""`extract(cfg)`: list the videos, take this shard's slice, skip the done ones, then decode, detect, crop.

Decoding and the conversion of kept frames to RGB run in worker processes, a video each; detection runs batched
in the main process, on the GPU when there is one. Videos are
handled in a fixed order, so an FF++ original is on disk before the fakes that reuse its boxes.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import closing
from pathlib import Path

import torch
from omegaconf import DictConfig

from deepfake.errors import ConfigError, DataError, UserError
from deepfake.extraction.config import validate
from deepfake.extraction.decode_pool import decoded_videos
from deepfake.extraction.face_finder import (
    Detection,
    FaceFinder,
    build_finder,
    detect_downscaled,
    detector_threads,
)
from deepfake.extraction.faces import VideoFaces, read_boxes, save_crops
from deepfake.extraction.masks import mask_frames
from deepfake.extraction.perturbed_frames import perturbation_of
from deepfake.extraction.report import ExtractProgress, summary
from deepfake.extraction.settings import changed_settings, read_settings, settings_of, write_settings
from deepfake.extraction.sources import Job, list_videos, shard_slice
from deepfake.extraction.video import Decoded
from deepfake.extraction.writer import (
    ShardWriter,
    assemble,
    clear,
    done_videos,
    faces_dir,
    forget,
    shard_name,
    stale_videos,
)
from deepfake.system.thread_probe import paced

log = logging.getLogger(__name__)

#: Test hook: seconds to sleep after a video's crops are written and before they are moved into place, so a
#: test can `kill -9` an extraction in the middle of a video.
PAUSE_ENV = "DEEPFAKE_EXTRACT_TEST_PAUSE"


def _status(decoded: Decoded, crops: int, frames_per_video: int) -> str:
    if not decoded.frames:
        return "error"
    if crops == 0:
        return "no_face"
    return "short" if len(decoded.frames) < frames_per_video else "ok"


def _detections(
    job: Job, decoded: Decoded, cfg: DictConfig, detector: FaceFinder, out: Path
) -> list[list[Detection]]:
    """The FF++ original's boxes for a fake that reuses them (when the original has any), else detection."""
    reused = read_boxes(out / faces_dir(job.box_source)) if job.box_source else {}
    if reused:
        return [reused.get(i, []) for i, _ in decoded.frames]
    d = cfg.detector
    return detect_downscaled(
        detector, [f for _, f in decoded.frames], d.max_side, d.min_face_size, d.batch_size
    )


def _manifest_rows(job: Job, saved: VideoFaces, masks: bool) -> list[list[object]]:
    """The video's manifest rows (paths relative to the output folder); with `masks`, each crop's mask or ""."""
    s, folder = job.sample, faces_dir(job.rel)
    rows: list[list[object]] = [
        [f"{folder}/{name}", s.label, s.split, s.video, s.method, s.identity] for name in saved.files
    ]
    if masks:
        names = saved.masks or [""] * len(rows)
        rows = [[*r, f"{folder}/{m}" if m else ""] for r, m in zip(rows, names, strict=True)]
    return rows


def extract_video(
    job: Job, decoded: Decoded, seconds: float, cfg: DictConfig, detector: FaceFinder, writer: ShardWriter
) -> dict[str, object]:
    """Detect, crop and commit one decoded video; returns its videos.csv row."""
    t0 = time.perf_counter()
    s = job.sample
    row: dict[str, object] = {"source": job.rel, "video": s.video, "label": s.label, "split": s.split,
                              "method": s.method, "frames_decoded": len(decoded.frames),
                              "perturb": perturb_name(cfg)}  # fmt: skip
    if decoded.info is not None:
        info = decoded.info
        row.update(frames_total=info.frames, width=info.width, height=info.height, fps=round(info.fps, 3),
                   rotation=info.rotation, scale=round(info.scale, 6))  # fmt: skip
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
        masks = None
        if job.mask_video is not None:  # FF++'s mask frames at the fake's indices, cropped with its boxes
            masks = mask_frames(Path(job.mask_video), cfg.frames_per_video, {i for i, _ in decoded.frames},
                                cfg.decode_max_side, cfg.timeout_s)  # fmt: skip
        saved = save_crops(decoded.frames, detections, cfg.faces, tmp, masks)
        crops, with_face = len(saved.files), saved.frames_with_face
        manifest = _manifest_rows(job, saved, writer.masks)
    pause = float(os.environ.get(PAUSE_ENV, "0"))  # tests: a window to interrupt in before each commit
    if pause:
        time.sleep(pause)
    row.update(status=_status(decoded, crops, cfg.frames_per_video), frames_with_face=with_face, faces=crops,
               error=decoded.error)  # fmt: skip
    row["seconds"] = round(seconds + time.perf_counter() - t0, 3)
    writer.commit(job.rel, tmp, manifest, row)
    return row


def perturb_name(cfg: DictConfig) -> str:
    """The videos.csv `perturb` cell: `<TYPE>-<level>`, empty for an ordinary extraction."""
    return f"{cfg.perturb.type}-{cfg.perturb.level}" if cfg.perturb.type else ""


def _extract_videos(todo: list[Job], cfg: DictConfig, out: Path) -> list[dict[str, object]]:
    """Decode in workers, detect here; on the CPU the detector gets the cores the decoders leave (MTCNN's many
    small per-box ops run faster on one thread than on threads that wait for a busy core)."""
    detector = build_finder(cfg.detector)
    writer = ShardWriter(out, shard_name(cfg.shard.index, cfg.shard.count), masks=cfg.dataset.masks)
    workers = cfg.num_workers if cfg.num_workers >= 0 else max(1, (os.cpu_count() or 2) - 1)
    workers = min(workers, len(todo))
    threads = torch.get_num_threads()
    tuner = detector_threads(detector, cfg.detector.threads, workers)
    rows: list[dict[str, object]] = []
    decoded = decoded_videos([j.sample.path for j in todo], cfg.frames_per_video, workers,
                             max_side=cfg.decode_max_side, timeout_s=cfg.timeout_s, reader=perturbation_of(cfg))  # fmt: skip
    try:
        # closing(): an interrupt stops the pool and frees the frames decoded ahead now, not whenever the
        # traceback that holds the generator is dropped (after the resource tracker has warned of leaks).
        with ExtractProgress(len(todo), cfg.progress, cfg.every_n_seconds) as progress, closing(decoded):
            videos = paced(
                zip(todo, decoded, strict=True), tuner, units=lambda v: max(1, len(v[1][0].frames))
            )
            for job, (video, seconds) in videos:
                rows.append(extract_video(job, video, seconds, cfg, detector, writer))
                progress.update(int(rows[-1]["faces"]))
    finally:
        torch.set_num_threads(threads)
    writer.close()
    return rows


def _check_rerun(out: Path, cfg: DictConfig) -> None:
    """A rerun into an output with finished videos must use its settings: crops of two sizes (or detectors) in
    one manifest would train on a mix. `overwrite=true` deletes the earlier crops and starts over."""
    changes = changed_settings(out, cfg)
    done = done_videos(out)
    if not changes or not done:
        return
    if not cfg.overwrite:
        raise ConfigError(
            f"{out} holds {len(done)} video(s) extracted with other settings ({'; '.join(changes)}); extract "
            "into another folder (out=/other/folder), or pass overwrite=true to delete its crops and start over"
        )
    log.warning("overwrite=true: deleting the %d video(s) extracted into %s with other settings (%s)",
                len(done), out, "; ".join(changes))  # fmt: skip
    clear(out)


def require_same_perturbation(out: Path, cfg: DictConfig) -> None:
    """A rerun into `out` resumes it: refuse one whose robustness perturbation differs from the videos there."""
    saved = read_settings(out)
    if saved is None or not done_videos(out):
        return
    mine = settings_of(cfg)["perturb"]
    if saved["perturb"] != mine:

        def name(p: dict | None) -> str:
            return "none" if p is None else f"{p['type']}-{p['level']} (seed {p['seed']})"

        raise UserError(
            f"{out} holds videos extracted with perturbation {name(saved['perturb'])}, but this run asks for "
            f"{name(mine)}; give each setting its own out=, e.g. out=/data/robust/${{perturb.type}}-${{perturb.level}}"
        )


def extract(cfg: DictConfig) -> Path | None:
    """Run one shard of an extraction; returns manifest.csv once every video is done (else None)."""
    cfg = validate(cfg)
    t0 = time.perf_counter()
    root, out = Path(cfg.root).expanduser().resolve(), Path(cfg.out).expanduser().resolve()
    jobs, notes = list_videos(cfg.dataset, root)
    for note in notes:
        log.warning(note)
    if cfg.splits is not None:
        jobs = [j for j in jobs if j.sample.split in cfg.splits]
        if not jobs:
            raise DataError(
                f"no video of {root} is in splits={list(cfg.splits)}; the layout's splits are train, val, test"
            )
    mine = shard_slice(jobs, cfg.shard.index, cfg.shard.count)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.overwrite:
        require_same_perturbation(out, cfg)  # the one setting with its own advice: an out= per setting
    _check_rerun(out, cfg)
    write_settings(out, cfg)  # what predict.py needs to crop as this extraction did (via the checkpoint)
    stale = stale_videos(out, [j.rel for j in mine])
    if stale:
        log.warning("%d finished video(s) have crops missing on disk, so they are extracted again: %s",
                    len(stale), ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else ""))  # fmt: skip
        forget(out, stale)
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
