"""Videos per second of `predict.py` on videos: each stage alone, then the overlapped pipeline; or a bulk run.

    python benchmarks/predict_video.py                      # 8 clips x 60 frames at 320x240, 8 kept per video
    python benchmarks/predict_video.py --clips 16 --keep 32 --architecture efficientnet_b0
    python benchmarks/predict_video.py --bulk 200           # predict.py's whole driver over a folder of 200 clips

`--bulk N` runs `predict()` itself (folder source, windows, rows committed to a .jsonl as they come) over N clips
and reports videos/s (over the whole call, and between the first and the last row) and the process's memory
(RSS, sampled every 0.2 s against the rows written): the peak in the first, middle and last third of the rows,
so a run whose memory grows with the rows shows it.

Stages, each timed alone over all clips: decode (`read_frames`, seek decode of the kept frames), detect and
crop (MTCNN through `video_crops`, extract.py's code) and classify (`score_crops` through the scorer callable,
an untrained timm model of the given architecture: the cost, not the answer, is measured). The pipeline is
`predict_videos`: decoding in `--workers` threads ahead, detection here, classification in a thread. Its goal
is at least 0.8 of the slowest stage's videos per second.

`--rounds` rounds each time every stage alone and then the pipeline, so both see the same moment of a shared
machine; each round's line gives the cores the process used and the machine's idle share, and the summary takes
the best round of each (other processes only ever add time).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import psutil
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from skimage import data

from deepfake.config import PredictExtractionConfig
from deepfake.evaluation.ensemble import Ensemble, ensemble_of
from deepfake.extraction.face_finder import FaceFinder, build_finder
from deepfake.extraction.video import read_frames
from deepfake.model.detector import get_model
from deepfake.prediction.run import cpu_threads
from deepfake.prediction.settings import crop_settings
from deepfake.prediction.videos import Aggregation, predict_videos, score_crops, video_crops
from deepfake.system.precision import Precision


def write_clips(folder: Path, clips: int, frames: int, width: int, height: int) -> list[str]:
    """The astronaut's head (a 120-180 px square) drifting across the coffee photo, H.264, keyframe every 30."""
    photo, coffee = data.astronaut(), data.coffee()
    back = np.asarray(Image.fromarray(coffee).resize((width, height)))
    paths = []
    for c in range(clips):
        side = 120 + 4 * (c % 16)  # 120-180 px: any clip count fits the 240 px frame
        face = np.asarray(Image.fromarray(photo[20:300, 100:380]).resize((side, side)))
        path = folder / f"clip_{c:03d}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"g": "30", "crf": "23", "preset": "veryfast"}
            for i in range(frames):
                image = back.copy()
                x = int((width - side) * i / max(1, frames - 1))
                image[(height - side) // 2 : (height - side) // 2 + side, x : x + side] = face
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(str(path))
    return paths


@dataclass
class Timed:
    """One timed phase: wall seconds, the cores this process used, and the share of the machine left idle."""

    wall: float = 0.0
    cores: float = 0.0
    idle: float = 0.0


@contextmanager
def timed() -> Iterator[Timed]:
    """Time the block; `cores` below the stages' thread count with `idle` near 0 means other processes (other
    sessions: Linux's autogroup shares the CPU per session, not per thread) held the rest of the CPU."""
    out = Timed()
    t0, c0, m0 = time.perf_counter(), time.process_time(), psutil.cpu_times()
    yield out
    out.wall = time.perf_counter() - t0
    out.cores = (time.process_time() - c0) / out.wall
    m1 = psutil.cpu_times()
    total = sum(m1) - sum(m0)
    out.idle = 100 * (m1.idle - m0.idle) / total if total > 0 else 0.0


def one_round(
    paths: list[str], keep: int, settings: DictConfig, detector: FaceFinder, score: Ensemble, workers: int
) -> tuple[dict[str, Timed], Timed, int]:
    """Each stage alone, then the pipeline: their timings and the faces classified."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    stages = {}
    with timed() as stages["decode"]:
        decoded = [read_frames(p, keep) for p in paths]
    with timed() as stages["detect+crop"]:
        crops = [video_crops(d, settings, detector)[1] for d in decoded]
    with timed() as stages["classify"]:
        for c in crops:
            score_crops(c, score, device, 64)
    with timed() as pipeline:
        results = list(predict_videos(paths, settings, detector, score, Aggregation(), device, workers))
    assert all(r.status == "ok" for r in results), [(r.path, r.status, r.error) for r in results]
    return stages, pipeline, sum(len(c) for c in crops)


def bulk_run(args: argparse.Namespace) -> None:
    """predict() over a folder of `args.bulk` clips with an untrained checkpoint; videos/s and the memory trace."""
    from deepfake.prediction.driver import predict
    from deepfake.runs.checkpoint import build_state, save_checkpoint

    logging.basicConfig(level=logging.INFO, format="  | %(message)s")  # predict's plan, progress and summary

    model = get_model(architecture=args.architecture, pretrained=False, img_size=args.img_size).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        write_clips(folder, args.bulk, args.frames, 320, 240)
        checkpoint = save_checkpoint(Path(tmp) / "untrained.pt", build_state(model=model))
        output = Path(tmp) / "preds.jsonl"
        trace: list[tuple[float, int, float]] = []  # (seconds, rows written, RSS MB)
        stop = threading.Event()

        def sample() -> None:
            process = psutil.Process()
            while not stop.wait(0.2):
                rows = output.read_bytes().count(b"\n") if output.is_file() else 0
                trace.append((time.perf_counter(), rows, process.memory_info().rss / 2**20))

        sampler = threading.Thread(target=sample, daemon=True)
        cfg = {"checkpoint": str(checkpoint), "input": str(folder), "output": str(output), "progress": "plain",
               "every_n_seconds": 15, "num_workers": args.workers, "extraction": {"frames_per_video": args.keep}}  # fmt: skip
        rss0 = psutil.Process().memory_info().rss / 2**20
        t0 = time.perf_counter()
        sampler.start()
        done = predict(cfg)
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
    statuses = dict(done.summary.counts)
    writing = [(t, n) for t, n, _ in trace if n > 0]
    steady = (
        (writing[-1][1] - writing[0][1]) / (writing[-1][0] - writing[0][0])
        if len(writing) > 1
        else float("nan")
    )
    print(f"bulk: {args.bulk} clips ({args.frames} frames at 320x240, {args.keep} kept), {args.architecture} at "
          f"{args.img_size} px on {'cuda' if torch.cuda.is_available() else 'cpu'}, {args.workers} decode worker(s); "
          f"load average {os.getloadavg()[0]:.2f}; statuses {statuses}")  # fmt: skip
    print(f"  {args.bulk / wall:.2f} videos/s over the whole call ({wall:.1f} s, model load and start-up included); "
          f"{steady:.2f} videos/s from the first row to the last")  # fmt: skip
    thirds = [(0, args.bulk / 3), (args.bulk / 3, 2 * args.bulk / 3), (2 * args.bulk / 3, args.bulk + 1)]
    peaks = [max((m for _, n, m in trace if lo <= n < hi), default=float("nan")) for lo, hi in thirds]
    print(f"  RSS before the call {rss0:.0f} MB; peak while rows 0-{args.bulk // 3} were written {peaks[0]:.0f} MB, "
          f"middle third {peaks[1]:.0f} MB, last third {peaks[2]:.0f} MB")  # fmt: skip
    for pct in (10, 25, 50, 75, 90):
        at = next(((n, m) for _, n, m in trace if n >= args.bulk * pct / 100), None)
        if at is not None:
            print(f"  RSS at {pct:3d}% ({at[0]} rows): {at[1]:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--keep", type=int, default=8, help="frames per video")
    parser.add_argument("--architecture", default="efficientnet_b0")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=1, help="decode threads of the pipeline")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of (each stage alone, then the pipeline)"
    )
    parser.add_argument("--bulk", type=int, default=0, help="N > 0: predict.py's driver over N clips instead")
    args = parser.parse_args()
    if args.bulk:
        bulk_run(args)
        return

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = get_model(architecture=args.architecture, pretrained=False, img_size=args.img_size).eval()
    loaded = SimpleNamespace(
        model=model, img_size=args.img_size, checkpoint={}, path=Path("untrained"), temperature=None
    )
    overrides = OmegaConf.structured(PredictExtractionConfig)
    overrides.frames_per_video = args.keep
    settings = crop_settings(loaded, overrides)
    detector = build_finder(settings.detector)
    score = ensemble_of([loaded], device, Precision(device.type, None))
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp), args.clips, args.frames, 320, 240)
        # Every stage runs with the threads predict.py gives it (on the CPU: the cores the decoder leaves).
        with cpu_threads(detector, settings, args.workers):
            threads = torch.get_num_threads()
            score_crops(np.zeros((2, 256, 256, 3), np.uint8), score, device, 64)  # warm-up
            for _ in range(args.rounds):
                rounds.append(one_round(paths, args.keep, settings, detector, score, args.workers))
    report(rounds, len(paths), args, device, threads)


def report(
    rounds: list[tuple[dict[str, Timed], Timed, int]],
    n: int,
    args: argparse.Namespace,
    device: torch.device,
    threads: int,
) -> None:
    """Each round's line, then the best of the rounds (the least disturbed by other processes) per stage."""
    print(f"{n} clips, {args.keep} frames each, {rounds[0][2]} faces; {args.architecture} at {args.img_size} px "
          f"on {device}; torch threads per stage: {threads}; {args.workers} decode worker(s); "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    for i, (stages, pipeline, _) in enumerate(rounds, 1):
        parts = [f"{name} {t.wall:5.2f} s ({t.cores:.2f} cores)" for name, t in stages.items()]
        ratio = max(t.wall for t in stages.values()) / pipeline.wall
        print(f"  round {i}: " + ", ".join(parts) + f" | pipeline {pipeline.wall:5.2f} s ({pipeline.cores:.2f} "
              f"cores, machine idle {pipeline.idle:.0f}%) | pipeline / slowest stage {ratio:.2f}")  # fmt: skip
    best = {name: min(r[0][name].wall for r in rounds) for name in rounds[0][0]}
    total = sum(best.values())
    for name, t in best.items():
        print(
            f"  {name:12s} alone: {n / t:6.2f} videos/s  ({t:6.2f} s, {100 * t / total:4.1f}% of the stages' sum)"
        )
    t_pipeline = min(r[1].wall for r in rounds)
    print(f"  pipeline          : {n / t_pipeline:6.2f} videos/s  ({t_pipeline:6.2f} s; the stages in sequence: "
          f"{total:.2f} s)")  # fmt: skip
    print(f"  pipeline / slowest stage alone (best of {len(rounds)} each): {max(best.values()) / t_pipeline:.2f} "
          "(goal >= 0.8)")  # fmt: skip


if __name__ == "__main__":
    main()
