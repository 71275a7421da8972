"""Videos per second of `predict.py` on videos: each stage alone, then the overlapped pipeline.

    python benchmarks/predict_video.py                      # 8 clips x 60 frames at 320x240, 8 kept per video
    python benchmarks/predict_video.py --clips 16 --keep 32 --architecture efficientnet_b0

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
import os
import tempfile
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
    """The astronaut's head (a 120-148 px square) drifting across the coffee photo, H.264, keyframe every 30."""
    photo, coffee = data.astronaut(), data.coffee()
    back = np.asarray(Image.fromarray(coffee).resize((width, height)))
    paths = []
    for c in range(clips):
        side = 120 + 4 * c
        face = np.asarray(Image.fromarray(photo[20:300, 100:380]).resize((side, side)))
        path = folder / f"clip_{c:02d}.mp4"
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
    args = parser.parse_args()

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
