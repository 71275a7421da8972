"""Sampled frames per second of `extract.py` against a DeepfakeBench-style baseline, on the same clips.

    python benchmarks/extract.py                         # 20 clips x 300 frames at 640x360, 32 kept per video
    python benchmarks/extract.py --clips 4 --keep 300    # the second figure: every frame kept

The clips are written here (H.264, keyframe every `--gop` frames): scikit-image's astronaut moving over its
coffee photo. The baseline does what DeepfakeBench's preprocessing does per video: `cv2.VideoCapture` reads
every frame and keeps `--keep` evenly spaced ones; each kept frame goes through dlib's HOG detector with one
upsampling (`face_detector(rgb, 1)`), the largest face is cropped (square x 1.3, 256 px; DeepfakeBench aligns
with its 81-landmark model, a manual download, so this crop skips the landmarks), the crop is detected again
(its verification step) and written as PNG. This pipeline is `python extract.py` in a subprocess, start-up
included (decode worker processes, batched MTCNN, PNG crops and landmarks). Needs `pip install 'deepfake[bench]'`.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import cv2
import dlib
import numpy as np
import torch
from PIL import Image
from skimage import data

from deepfake.extraction.video import read_frames

ROOT = Path(__file__).resolve().parents[1]


def write_clips(folder: Path, clips: int, frames: int, width: int, height: int, gop: int) -> list[Path]:
    """Each clip: the astronaut's head and shoulders (a 200-280 px square) drifting across a coffee photo."""
    import av

    photo, coffee = data.astronaut(), data.coffee()
    paths = []
    for c in range(clips):
        side = 200 + 4 * c
        face = np.asarray(Image.fromarray(photo[20:300, 100:380]).resize((side, side)))
        if c % 2:
            face = face[:, ::-1]
        back = np.asarray(Image.fromarray(np.roll(coffee, 37 * c, axis=1)).resize((width, height)))
        path = folder / "real" / f"clip_{c:02d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"g": str(gop), "crf": "23", "preset": "veryfast"}
            for i in range(frames):
                image = back.copy()
                x = int((width - side) * i / max(1, frames - 1))
                y = (height - side) // 2 + int(10 * np.sin(i / 15))
                image[y : y + side, x : x + side] = face
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def square_crop(image: np.ndarray, rect: dlib.rectangle, margin: float = 1.3, size: int = 256) -> np.ndarray:
    """FF++'s get_boundingbox: the box's longer side x margin, a square clamped to the frame."""
    h, w = image.shape[:2]
    side = int(max(rect.width(), rect.height()) * margin)
    cx, cy = (rect.left() + rect.right()) // 2, (rect.top() + rect.bottom()) // 2
    x0, y0 = max(0, min(cx - side // 2, w - side)), max(0, min(cy - side // 2, h - side))
    return cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (size, size))


def baseline(paths: list[Path], keep: int, out: Path) -> tuple[int, int]:
    """DeepfakeBench-style: (frames kept, faces written)."""
    detector = dlib.get_frontal_face_detector()
    kept = faces = 0
    for path in paths:
        cap = cv2.VideoCapture(str(path))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, total - 1, keep, endpoint=True, dtype=int).tolist())
        folder = out / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(total):
            ok, frame = cap.read()  # every frame is decoded and converted to BGR
            if not ok:
                break
            if index not in wanted:
                continue
            kept += 1
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            found = detector(rgb, 1)
            if not len(found):
                continue
            crop = square_crop(rgb, max(found, key=lambda r: r.width() * r.height()))
            if len(detector(crop, 1)):  # DeepfakeBench re-detects on the crop for its landmarks
                faces += 1
                cv2.imwrite(str(folder / f"{index:04d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        cap.release()
    return kept, faces


def ours(root: Path, out: Path, keep: int, workers: int, device: str) -> tuple[int, int, float]:
    """`python extract.py` as a user runs it: (frames kept, faces, seconds from its first log line to its last,
    i.e. without the interpreter's start-up and the torch/torchvision imports)."""
    args = [f"root={root}", f"out={out}", f"frames_per_video={keep}", f"num_workers={workers}",
            f"detector.device={device}", "progress=off"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(ROOT / "extract.py"), *args], check=True, capture_output=True, text=True
    )
    stamps = [
        datetime.strptime(m, "%Y-%m-%d %H:%M:%S,%f")
        for m in re.findall(r"^\[([^]]+)\]", proc.stdout + proc.stderr, re.M)
    ]
    with (out / "videos.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept, faces = sum(int(r["frames_decoded"]) for r in rows), sum(int(r["faces"]) for r in rows)
    return kept, faces, (max(stamps) - min(stamps)).total_seconds()


def decode_only(paths: list[Path], keep: int) -> tuple[float, float]:
    """Seconds per video: PyAV seeking to the kept frames, and cv2 reading every frame."""
    t0 = time.perf_counter()
    for p in paths:
        read_frames(p, keep)
    t1 = time.perf_counter()
    for p in paths:
        cap = cv2.VideoCapture(str(p))
        while cap.read()[0]:
            pass
        cap.release()
    t2 = time.perf_counter()
    return (t1 - t0) / len(paths), (t2 - t1) / len(paths)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--frames", type=int, default=300, help="frames per clip")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--gop", type=int, default=250, help="keyframe interval (x264's default is 250)")
    p.add_argument("--keep", type=int, default=32, help="frames kept per video")
    p.add_argument("--workers", type=int, default=-1, help="extract.py num_workers")
    p.add_argument("--device", default="auto", help="detector.device for this pipeline")
    args = p.parse_args()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        paths = write_clips(work / "clips", args.clips, args.frames, args.width, args.height, args.gop)
        dec_ours, dec_cv2 = decode_only(paths, args.keep)
        t0 = time.perf_counter()
        kept_o, faces_o, t_run = ours(work / "clips", work / "ours", args.keep, args.workers, args.device)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        kept_b, faces_b = baseline(paths, args.keep, work / "baseline")
        t_base = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    print(f"{args.clips} clips x {args.frames} frames at {args.width}x{args.height} (gop {args.gop}), "
          f"{args.keep} kept per video; detector device {device}; {os.cpu_count()} CPUs, load average "
          f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print(f"decode only, s/video: PyAV seek {dec_ours:.3f} | cv2 every frame {dec_cv2:.3f}")
    print(
        f"this pipeline: {kept_o} frames, {faces_o} faces in {t_ours:.1f}s = {kept_o / t_ours:.2f} frames/s"
    )
    print(
        f"baseline:      {kept_b} frames, {faces_b} faces in {t_base:.1f}s = {kept_b / t_base:.2f} frames/s"
    )
    base = kept_b / t_base
    print(
        f"ratio: {kept_o / t_ours / base:.2f}x the baseline's frames/s ({kept_o / t_run / base:.2f}x without start-up)"
    )


if __name__ == "__main__":
    main()
