"""Videos per second of `predict.py` on videos: each stage alone, then the overlapped pipeline.

    python benchmarks/predict_video.py                      # 8 clips x 60 frames at 320x240, 8 kept per video
    python benchmarks/predict_video.py --clips 16 --keep 32 --architecture efficientnet_b0

Stages, each timed alone over all clips: decode (`read_frames`, seek decode of the kept frames), detect and
crop (MTCNN through `video_crops`, extract.py's code) and classify (`score_crops` through the scorer callable,
an untrained timm model of the given architecture: the cost, not the answer, is measured). The pipeline is
`predict_videos`: decoding in `--workers` threads ahead, detection here, classification in a thread. Its goal
is at least 0.8 of the slowest stage's videos per second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from skimage import data

from deepfake.config import PredictExtractionConfig
from deepfake.evaluation.ensemble import ensemble_of
from deepfake.extraction.pipeline import build_detector
from deepfake.extraction.video import read_frames
from deepfake.models import get_model
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
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = get_model(architecture=args.architecture, pretrained=False, img_size=args.img_size)
    loaded = SimpleNamespace(model=model, img_size=args.img_size, checkpoint={}, path=Path("untrained"))
    overrides = OmegaConf.structured(PredictExtractionConfig)
    overrides.frames_per_video = args.keep
    settings = crop_settings(loaded, overrides)
    detector = build_detector(settings.detector)
    score = ensemble_of([loaded], device, Precision(device.type, None))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp), args.clips, args.frames, 320, 240)
        # Every stage runs with the threads predict.py gives it (on the CPU: the cores the decoder leaves).
        with cpu_threads(detector, settings, args.workers):
            threads = torch.get_num_threads()
            score_crops(np.zeros((2, 256, 256, 3), np.uint8), score, device, 64)  # warm-up
            t0 = time.perf_counter()
            decoded = [read_frames(p, args.keep) for p in paths]
            t_decode = time.perf_counter() - t0
            t0 = time.perf_counter()
            crops = [video_crops(d, settings, detector)[1] for d in decoded]
            t_detect = time.perf_counter() - t0
            t0 = time.perf_counter()
            for c in crops:
                score_crops(c, score, device, 64)
            t_classify = time.perf_counter() - t0
            t0 = time.perf_counter()
            results, stamps = [], []
            for result in predict_videos(
                paths, settings, detector, score, Aggregation(), device, args.workers
            ):
                results.append(result)
                stamps.append(time.perf_counter())
            t_pipeline = stamps[-1] - t0
    n = len(paths)
    faces = sum(len(c) for c in crops)
    print(
        f"{n} clips, {args.keep} frames each, {faces} faces; {args.architecture} at {args.img_size} px on {device}"
    )
    stages = {"decode": t_decode, "detect+crop": t_detect, "classify": t_classify}
    total = sum(stages.values())
    for name, t in stages.items():
        print(
            f"  {name:12s} alone: {n / t:6.2f} videos/s  ({t:6.2f} s, {100 * t / total:4.1f}% of the stages' sum)"
        )
    slowest = max(stages.values())
    print(
        f"  pipeline          : {n / t_pipeline:6.2f} videos/s  ({t_pipeline:6.2f} s, {args.workers} decode worker(s))"
    )
    # The decode pool's start (its server imports the main module: torch and all) is paid once per run.
    steady = (stamps[-1] - stamps[0]) / (n - 1) if n > 1 else t_pipeline
    print(
        f"  pipeline after its first video: {1 / steady:6.2f} videos/s (first video after {stamps[0] - t0:.2f} s)"
    )
    print(f"  torch threads per stage: {threads}; the stages in sequence would take {total:.2f} s")
    print(
        f"  pipeline / slowest stage alone: {slowest / t_pipeline:.2f}; after its first video: {slowest / n / steady:.2f} (goal >= 0.8)"
    )
    assert all(r.status == "ok" for r in results), [(r.path, r.status, r.error) for r in results]


if __name__ == "__main__":
    main()
