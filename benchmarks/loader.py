"""Loader throughput (images/s): the bare decode ceiling, the decode path, and the decoded caches, in one run.

    python benchmarks/loader.py [--images 512] [--workers 2] [--size 224]

Writes face-crop-like 256 px JPEGs (quality 90), then measures, on this machine:
  ceiling     PIL decode + resize to the loader size, one core, no DataLoader
  decode      DataModule, cache=none: decode + resize + crop + flip in `--workers` processes
  cache=ram   the same loader serving pre-decoded crops from shared memory
  cache=disk  the same loader serving pre-decoded crops from the memory-mapped cache, with the workers
              and in the main process (no worker: no copy of each batch through shared memory)
  decode=gpu  (CUDA only) workers read bytes; nvjpeg decodes each batch and augments on the GPU
Each loader is timed over whole epochs after a warm-up epoch (worker start-up and cache build excluded).
The last line gives the ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepfake.data import DataModule
from deepfake.data.decode import decode_file
from deepfake.data.manifest import write_manifest
from deepfake.data.samples import Sample
from deepfake.data.synthetic import generate_synthetic_dataset


def write_jpegs(root: Path, count: int, size: int = 256) -> Path:
    """Synthetic faces rendered small (fast), upscaled and grained so the JPEGs carry photo-like entropy.

    Returns a manifest: every image in train, every 16th also in val (the DataModule needs one).
    """
    small = generate_synthetic_dataset(root / "small", img_size=64, videos_per_split={"train": count // 8},
                                       frames_per_video=8)  # fmt: skip
    rng = np.random.default_rng(0)
    rows = []
    for i, src in enumerate(sorted(small.rglob("*.jpg"))):
        label = int("fake" in src.parts)
        big = np.asarray(Image.open(src).resize((size, size), Image.Resampling.BICUBIC), np.float32)
        big += rng.normal(0, 4, big.shape)
        out = root / "jpegs" / f"{i:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(big.clip(0, 255).astype(np.uint8)).save(out, quality=90)
        rows.append(Sample(str(out), label, f"v{i // 8}", "real", "train"))
        if i % 16 == 0:
            rows.append(Sample(str(out), label, f"v{i // 8}", "real", "val"))
    return write_manifest(rows, root / "manifest.csv")


def ceiling(paths: list[Path], size: int, rounds: int) -> float:
    t0 = time.perf_counter()
    for _ in range(rounds):
        for p in paths:
            decode_file(str(p), size)
    return rounds * len(paths) / (time.perf_counter() - t0)


def loader_rate(manifest: Path, size: int, workers: int, batch: int, epochs: int, **options: object) -> float:
    dm = DataModule(kind="manifest", manifest=str(manifest), img_size=size, num_workers=workers, batch_size=batch,
                    **options)  # type: ignore[arg-type]  # fmt: skip
    dm.setup()
    loader = dm.train_dataloader()
    cuda = torch.cuda.is_available() and options.get("decode") == "gpu"
    seen, t0 = 0, 0.0
    for epoch in range(epochs + 1):  # epoch 0 warms up: workers start, caches fill
        loader.sampler.set_epoch(epoch)
        if epoch == 1:
            t0 = time.perf_counter()
        for images, _, _ in loader:
            seen += len(images) if epoch else 0
        if cuda:
            torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)  # the main process only receives batches; its threads would compete with workers
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        os.environ["DEEPFAKE_CACHE"] = str(tmp_path / "cache")  # a cold, private cache
        manifest = write_jpegs(tmp_path, args.images)
        paths = sorted((tmp_path / "jpegs").iterdir())
        kb = np.mean([q.stat().st_size for q in paths]) / 1024
        print(f"{len(paths)} JPEGs, 256 px, quality 90, {kb:.1f} KB each; loader size {args.size}, "
              f"{args.workers} workers, batch {args.batch_size}, {os.cpu_count()} CPUs")  # fmt: skip
        common = {"size": args.size, "batch": args.batch_size, "epochs": args.epochs}
        w = args.workers
        rates = {
            "ceiling": ceiling(paths, args.size, 2),
            "decode": loader_rate(manifest, workers=w, **common),
            "ram": loader_rate(manifest, workers=w, cache="ram", **common),
            "disk": loader_rate(manifest, workers=w, cache="disk", **common),
            "disk0": loader_rate(manifest, workers=0, cache="disk", **common),
        }
        labels = {
            "ceiling": "ceiling: PIL decode + resize, 1 core",
            "decode": f"decode, cache=none, {w} workers",
            "ram": f"cache=ram, {w} workers",
            "disk": f"cache=disk, {w} workers",
            "disk0": "cache=disk, in the main process (0 workers)",
        }
        if torch.cuda.is_available():
            rates["gpu"] = loader_rate(manifest, workers=w, decode="gpu", **common)
            labels["gpu"] = f"decode=gpu on {torch.cuda.get_device_name()}, {w} workers"
        for key, rate in rates.items():
            print(f"{labels[key]:<52} {rate:>8.0f} img/s")
        d = rates["decode"]
        parts = [
            f"decode/ceiling {d / rates['ceiling']:.2f}x",
            f"cache=disk/decode {rates['disk'] / d:.2f}x ({w} workers), {rates['disk0'] / d:.2f}x (0 workers)",
            f"cache=ram/decode {rates['ram'] / d:.2f}x",
        ]
        if "gpu" in rates:
            parts.append(f"decode=gpu/decode {rates['gpu'] / d:.2f}x")
        print("ratios: " + ", ".join(parts))


if __name__ == "__main__":
    main()
