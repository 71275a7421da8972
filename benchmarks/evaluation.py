"""Evaluation costs: the bootstrap AUC interval on a large test set, and predict throughput from image files.

python benchmarks/evaluation.py                          # CPU-sized defaults, under a minute
python benchmarks/evaluation.py --frames 500000 --images 4096 --model efficientnet_b4 --img-size 380
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake.evaluation.metrics import bootstrap_auc_ci
from deepfake.model.detector import get_model
from deepfake.prediction.driver import predict_paths
from deepfake.system.hardware import HardwareManager


def bench_bootstrap(frames: int, frames_per_video: int, samples: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, frames)
    probs = np.clip(rng.random(frames) * 0.6 + labels * 0.3, 0, 1)
    videos = (np.arange(frames) // frames_per_video).astype(str)
    t = time.perf_counter()
    bootstrap_auc_ci(labels, probs, videos, samples=samples)
    ours = time.perf_counter() - t
    # Reference: scikit-learn's weighted roc_auc_score per resample, timed on a few and scaled up.
    n_ref = max(1, samples // 20)
    weights = rng.integers(0, 3, (n_ref, frames)).astype(float)
    t = time.perf_counter()
    for w in weights:
        roc_auc_score(labels, probs, sample_weight=w)
    sklearn = (time.perf_counter() - t) / n_ref * samples
    print(
        f"bootstrap AUC interval, {frames} frames in {frames // frames_per_video} videos, {samples} resamples:"
    )
    print(
        f"  deepfake.evaluation.metrics.bootstrap_auc_ci {ours:.2f} s; per-resample roc_auc_score ~{sklearn:.2f} s"
    )


def bench_predict(images: int, model_name: str, img_size: int, batch: int, workers: int) -> None:
    hw = HardwareManager()
    hw.configure()
    precision = hw.precision("auto")
    model = get_model(model_name, img_size=img_size).to(hw.device).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(images):
            path = Path(tmp) / f"{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 255, (img_size, img_size, 3), dtype=np.uint8)).save(
                path, quality=90
            )
            paths.append(str(path))
        predict_paths(model, paths[:batch], img_size, precision, hw.device, batch, workers)  # warm-up
        t = time.perf_counter()
        probs, _ = predict_paths(model, paths, img_size, precision, hw.device, batch, workers)
        took = time.perf_counter() - t
    assert np.isfinite(probs).all()
    print(
        f"predict {model_name} @{img_size}px on {hw.device} ({precision.name}), batch {batch}, {workers} workers:"
    )
    print(f"  {images / took:.0f} img/s from JPEG files ({images} images, {took:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--frames-per-video", type=int, default=20)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    bench_bootstrap(args.frames, args.frames_per_video, args.samples)
    bench_predict(args.images, args.model, args.img_size, args.batch, args.workers)


if __name__ == "__main__":
    main()
