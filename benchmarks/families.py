"""What each detector family costs: training images/s through the project's loop against the plain backbone.

Every family trains the same backbone on the same in-memory uint8 batches (the mask head's batches carry the
mask channel a `data.fake_synthesis=sbi` loader adds) with the same precision; the families alternate round by
round and each family's figure is the median over rounds of its images/s divided by the plain backbone's in the
same round.

    python benchmarks/families.py                      # CPU-sized defaults (tiny @ 64 px), a few minutes
    python benchmarks/families.py --model efficientnet_b0 --img-size 224 --batch 128 --steps 30   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from deepfake.model.detector import get_model
from deepfake.system.hardware import HardwareManager
from deepfake.training.engine import LoopConfig, StepContext, TrainState, train_epoch

#: Family name -> get_model options (and whether its batches carry masks).
FAMILIES: dict[str, dict[str, Any]] = {
    "plain": {},
    "srm early": {"streams": ["rgb", "srm"]},
    "dct early": {"streams": ["rgb", "dct"]},
    "srm+dct early": {"streams": ["rgb", "srm", "dct"]},
    "srm late": {"streams": ["rgb", "srm"], "fusion": "late"},
    "dct late": {"streams": ["rgb", "dct"], "fusion": "late"},
    "srm+dct late": {"streams": ["rgb", "srm", "dct"], "fusion": "late"},
    "mask head": {"mask_head": True},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(args: argparse.Namespace, device: torch.device, masks: bool) -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    size = args.img_size
    images = torch.randint(0, 256, (args.batch, 3, size, size), generator=g, dtype=torch.uint8)
    if masks:  # an ellipse-ish blob on the fakes, empty on the reals, as SBI batches have
        mask = torch.zeros(args.batch, 1, size, size, dtype=torch.uint8)
        mask[args.batch // 2 :, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 254
        images = torch.cat([images, mask], 1)
    labels = (torch.arange(args.batch) >= args.batch // 2).long()
    return [(images.to(device), labels.to(device), torch.arange(args.batch))] * args.steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto")
    p.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    args = p.parse_args()

    hw = HardwareManager(device=args.device)
    hw.configure()
    device, precision = hw.device, hw.precision(args.amp)
    names = ["plain", *(n for n in args.families if n != "plain")]
    runs = {}
    for name in names:
        options = FAMILIES[name]
        model = get_model(args.model, img_size=args.img_size, channels_last=device.type == "cuda", **options)
        model = model.to(device)
        ctx = StepContext(model, torch.optim.AdamW(model.parameters(), lr=1e-4), precision, device)
        data = batches(args, device, bool(options.get("mask_head")))
        params = sum(q.numel() for q in model.parameters()) / 1e6
        runs[name] = (ctx, data, params)
    print(f"device {device} ({hw.reason}), precision {precision.name}, model {args.model} @ {args.img_size}px, "
          f"batch {args.batch}, {args.steps} steps x {args.rounds} rounds")  # fmt: skip

    def rate(name: str) -> float:
        ctx, data, _ = runs[name]
        sync(device)
        t0 = time.perf_counter()
        train_epoch(ctx, data, TrainState(), LoopConfig(), len(data))
        sync(device)
        return args.steps * args.batch / (time.perf_counter() - t0)

    for name in names:  # warm-up: allocator, cuDNN autotuning, the DCT tables
        rate(name)
    rates: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        measured = {n: rate(n) for n in order}
        for n in names:
            rates[n].append(measured[n])
            ratios[n].append(measured[n] / measured["plain"])
    print(f"{'family':<15} {'params (M)':>10} {'img/s (median)':>15} {'vs plain':>9}")
    for n in names:
        print(f"{n:<15} {runs[n][2]:>10.2f} {statistics.median(rates[n]):>15.0f} "
              f"{statistics.median(ratios[n]):>9.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
