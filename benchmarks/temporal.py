"""Cost of the video-level temporal model: training images/s and clips/s against the plain backbone.

Both train the same backbone on the same in-memory uint8 frames with the bare AMP step: the plain model on
batches of B images, the clip model (`model.frames=T`) on B/T clips of T frames, so each step feeds the
backbone the same B images and the difference is the temporal transformer (and its backward). The two
alternate; the figure is the median over repeats.

    python benchmarks/temporal.py                                               # CPU defaults, ~1 minute
    python benchmarks/temporal.py --model efficientnet_b0 --img-size 224 --batch 128 --steps 30   # a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bare_step import bare_step
from torch.utils.flop_counter import FlopCounterMode

from deepfake.model.detector import get_model
from deepfake.system.hardware import HardwareManager


def images_per_second(model: torch.nn.Module, batch: torch.Tensor, steps: int, hw: HardwareManager) -> float:
    """Frames through the backbone per second over `steps` bare training steps (after one warm-up step)."""
    precision = hw.precision("auto")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    labels = torch.randint(0, 2, (batch.shape[0],), device=hw.device)
    bare_step(model, opt, batch, labels, precision)
    if hw.device.type == "cuda":
        torch.cuda.synchronize(hw.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        bare_step(model, opt, batch, labels, precision)
    if hw.device.type == "cuda":
        torch.cuda.synchronize(hw.device)
    frames = batch.shape[0] * (batch.shape[1] if batch.ndim == 5 else 1)
    return steps * frames / (time.perf_counter() - t0)


def forward_flops(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """Forward FLOPs of one batch (torch's counter): the load-independent side of the cost."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(batch)
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64, help="images (frames) per step")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    hw = HardwareManager(device=args.device)
    size, t = args.img_size, args.frames
    plain = get_model(args.model, img_size=size).to(hw.device)
    clip = get_model(args.model, img_size=size, frames=t, temporal_layers=args.layers).to(hw.device)
    images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8, device=hw.device)
    clips = images[: args.batch // t * t].view(args.batch // t, t, 3, size, size)
    rates: dict[str, list[float]] = {"plain": [], "temporal": []}
    for _ in range(args.repeats):
        rates["plain"].append(images_per_second(plain, images, args.steps, hw))
        rates["temporal"].append(images_per_second(clip, clips, args.steps, hw))
    base, ours = (statistics.median(rates[k]) for k in ("plain", "temporal"))
    extra = sum(q.numel() for q in clip.head.parameters()) - sum(q.numel() for q in plain.head.parameters())
    print(
        f"{args.model} {size}px on {hw.device}, {args.batch} images per step, T={t}, {args.layers} layer(s)"
    )
    print(f"plain backbone : {base:8.1f} images/s")
    print(f"temporal model : {ours:8.1f} images/s = {ours / t:.1f} clips/s ({ours / base:.0%} of plain)")
    print(f"temporal head  : {extra / 1e6:.2f}M extra parameters")
    one_clip = clips[:1]
    plain_flops, clip_flops = forward_flops(plain, one_clip[0]), forward_flops(clip, one_clip)
    print(
        f"forward FLOPs per clip of {t} frames: plain {plain_flops / 1e6:.1f}M, temporal {clip_flops / 1e6:.1f}M "
        f"(+{clip_flops / plain_flops - 1:.1%})"
    )


if __name__ == "__main__":
    main()
