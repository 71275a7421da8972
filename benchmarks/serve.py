"""Latency and requests per second of serve.py's API on short clips, against predict.py's own per-video time.

    python benchmarks/serve.py                         # 8 clips x 60 frames at 320x240, 8 kept, efficientnet_b0
    python benchmarks/serve.py --requests 16 --architecture test_resnet --img-size 64

An untrained checkpoint of `--architecture` is saved (the cost, not the answer, is measured) and `serve.py` is
started on 127.0.0.1 with it. After `--warmup` requests, `--requests` POSTs to /api/predict are timed at
concurrency 1 and then at concurrency 4 (the clips in turn): requests per second, p50 and p95 latency.
predict.py's per-video time, once warm, is `predict()` over all the clips minus `predict()` over one clip,
divided by the difference in clips (model load and start-up cancel out). Goal: the API's p50 at concurrency 1
within 1.2x of predict.py's per-video time. The machine's load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from predict_video import write_clips

from deepfake.model.detector import get_model
from deepfake.prediction.driver import predict
from deepfake.runs.checkpoint import build_state, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def start_server(
    checkpoint: Path, keep: int, workers: int, max_concurrent: int
) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), f"checkpoint={checkpoint}", "port=0", f"num_workers={workers}",
         f"extraction.frames_per_video={keep}", f"serve.max_concurrent={max_concurrent}", "serve.page=false"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if found := re.search(r"at (http://127\.0\.0\.1:\d+/)", line):
            return proc, found.group(1)
    raise RuntimeError(f"serve.py exited {proc.wait()} before serving")


def post(url: str, clip: str) -> float:
    t0 = time.perf_counter()
    with open(clip, "rb") as f:
        answer = httpx.post(f"{url}api/predict", files={"file": (Path(clip).name, f)}, timeout=600)
    answer.raise_for_status()
    assert answer.json()["status"] == "ok", answer.json()
    return time.perf_counter() - t0


def timed_requests(url: str, clips: list[str], requests: int, concurrency: int) -> tuple[float, np.ndarray]:
    """(requests per second, each request's latency in seconds)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(lambda i: post(url, clips[i % len(clips)]), range(requests)))
    return requests / (time.perf_counter() - t0), np.array(latencies)


def predict_seconds(checkpoint: Path, clips: list[str], folder: Path, keep: int, workers: int) -> float:
    def wall(paths: list[str], name: str) -> float:
        listing = folder / f"{name}.txt"
        listing.write_text("\n".join(paths) + "\n")
        t0 = time.perf_counter()
        predict({"checkpoint": str(checkpoint), "input": str(listing), "output": str(folder / f"{name}.csv"),
                 "num_workers": workers, "progress": "off", "extraction": {"frames_per_video": keep}})  # fmt: skip
        return time.perf_counter() - t0

    one, many = wall(clips[:1], "one"), wall(clips, "all")
    return (many - one) / (len(clips) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument(
        "--keep", type=int, default=8, help="frames kept per video (extraction.frames_per_video)"
    )
    parser.add_argument("--architecture", default="efficientnet_b0")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=1, help="decode threads (num_workers) of both")
    parser.add_argument("--max-concurrent", type=int, default=1, help="the server's serve.max_concurrent")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    model = get_model(architecture=args.architecture, pretrained=False, img_size=args.img_size).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "clips").mkdir()
        clips = write_clips(folder / "clips", args.clips, args.frames, 320, 240)
        checkpoint = save_checkpoint(folder / "untrained.pt", build_state(model=model))
        per_video = predict_seconds(checkpoint, clips, folder, args.keep, args.workers)
        proc, url = start_server(checkpoint, args.keep, args.workers, args.max_concurrent)
        try:
            for i in range(args.warmup):
                post(url, clips[i % len(clips)])
            results = {c: timed_requests(url, clips, args.requests, c) for c in (1, 4)}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"serve: {args.clips} clips ({args.frames} frames at 320x240, {args.keep} kept), {args.architecture} at "
          f"{args.img_size} px on {device}, {args.workers} decode thread(s), serve.max_concurrent="
          f"{args.max_concurrent}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"  predict.py per video, warm: {per_video * 1000:.0f} ms")
    for c, (rate, lat) in results.items():
        p50, p95 = np.percentile(lat, 50), np.percentile(lat, 95)
        print(f"  API concurrency {c}: {rate:.2f} requests/s, p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms "
              f"({p50 / per_video:.2f}x predict.py per video at p50)")  # fmt: skip


if __name__ == "__main__":
    main()
