"""Cost of monitoring: training steps/s with the hardware sampler, TensorBoard and progress on vs off.

    python benchmarks/monitoring.py [--rounds 5] [--seconds 3] [--device auto]

The variants alternate round by round in one process (off, control, plain, rich, then reversed), so drifts
in machine load hit all of them alike; each round's "on" rate over the same round's "off" rate is a ratio,
and the median ratio is the figure (goal >= 0.99). `control` is a second "off": its ratio is the noise floor
of the machine. Batches are uint8 tensors prepared in memory, so the ratio measures monitoring, not JPEG
decoding. "on" is what a run does by default: sampler every 2 s (hw/ tags to TensorBoard), TensorBoard
scalars every 20 steps, and a progress display (plain lines, or rich bars on a terminal). The per-call
costs printed at the end bound the overhead independently of the noise.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch
from rich.console import Console

from deepfake.model.detector import get_model
from deepfake.reporting.progress import ProgressTracker, fan_out
from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.system.hardware import HardwareManager
from deepfake.training.engine import EpochHooks, LoopConfig, StepContext, TrainState, train_epoch

VARIANTS = ("off", "control", "plain", "rich")


def make_batches(
    n: int, batch_size: int, img_size: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 256, (batch_size, 3, img_size, img_size), dtype=torch.uint8, generator=g),
            torch.randint(0, 2, (batch_size,), generator=g),
            torch.arange(batch_size),
        )
        for _ in range(n)
    ]


class Rate(NamedTuple):
    wall: float  # steps per wall-clock second: the figure that matters
    cpu: float  # steps per CPU second of this process (all threads): robust when other jobs share the CPU


def run_round(variant: str, steps: int, ctx: dict, log_dir: Path) -> Rate:
    """One timed pass of `steps` optimizer steps."""
    hw, model, opt, precision, batches = ctx["hw"], ctx["model"], ctx["opt"], ctx["precision"], ctx["batches"]
    loader = [batches[i % len(batches)] for i in range(steps)]
    state = TrainState()
    loop = LoopConfig(log_every=20)
    if variant in ("off", "control"):
        t0, c0 = time.perf_counter(), time.process_time()
        train_epoch(StepContext(model, opt, precision, hw.device), loader, state, loop, steps)
        _sync(hw.device)
        return Rate(steps / (time.perf_counter() - t0), steps / (time.process_time() - c0))
    tb = TensorBoardLogger(log_dir)
    console = Console(file=io.StringIO(), force_terminal=True, width=120) if variant == "rich" else None
    tracker = ProgressTracker(1, steps, batch_size=len(batches[0][0]), mode=variant, console=console)

    on_log, on_reading = fan_out([tb], tracker, lambda: state.global_step)
    sampler = hw.sampler(on_reading, disk_path=log_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    with tracker, sampler:
        tracker.start_epoch(0)
        hooks = EpochHooks(log=on_log, on_step=tracker.step)
        train_epoch(StepContext(model, opt, precision, hw.device), loader, state, loop, steps, hooks)
        _sync(hw.device)
        rate = Rate(steps / (time.perf_counter() - t0), steps / (time.process_time() - c0))
    tb.close()
    return rate


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="target length of one round (> 2 s: one sample)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    hw = HardwareManager(args.device, sample_every_n_seconds=2.0)
    hw.configure()
    precision = hw.precision("auto")
    model = get_model(args.model, img_size=args.img_size, channels_last=hw.device.type == "cuda").to(
        hw.device
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctx = {"hw": hw, "model": model, "opt": opt, "precision": precision}
    ctx["batches"] = [
        tuple(t.to(hw.device) for t in b) for b in make_batches(8, args.batch_size, args.img_size)
    ]

    with tempfile.TemporaryDirectory() as tmp:
        warm = statistics.median(run_round("off", 30, ctx, Path(tmp)).wall for _ in range(3))  # calibrates
        steps = max(20, int(warm * args.seconds))
        print(f"device {hw.device} ({precision.name}), model {args.model}, batch {args.batch_size} at "
              f"{args.img_size}px; {steps} steps per round, {args.rounds} rounds per variant")  # fmt: skip
        rates: dict[str, list[Rate]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]  # alternate, so no variant always goes first
            for v in order:
                rates[v].append(run_round(v, steps, ctx, Path(tmp) / f"{v}{r}"))

    header = (
        f"{'variant':<9}{'steps/s median':>15}{'min':>8}{'max':>8}{'ratio vs off':>14}{'CPU-time ratio':>16}"
    )
    print(header)
    ratios: dict[str, float] = {}
    for v in VARIANTS:
        wall = [r.wall for r in rates[v]]
        ratio = statistics.median(r.wall / o.wall for r, o in zip(rates[v], rates["off"], strict=True))
        cpu = statistics.median(r.cpu / o.cpu for r, o in zip(rates[v], rates["off"], strict=True))
        ratios[v] = ratio
        print(
            f"{v:<9}{statistics.median(wall):>15.2f}{min(wall):>8.2f}{max(wall):>8.2f}{ratio:>14.4f}{cpu:>16.4f}"
        )
    steps_per_s = statistics.median(r.wall for r in rates["off"])
    print("per call, timed alone (share = ms x calls per second / 1000 ms):")
    for name, ms, per_s in per_call_costs(hw, steps, steps_per_s):
        print(f"  {name:<32}{ms:>9.4f} ms x {per_s:>7.3f}/s = {ms * per_s / 1e3:.4%} of wall time")
    print(
        f"monitoring ratio (on / off steps/s, median of {args.rounds} rounds): plain {ratios['plain']:.3f}, "
        f"rich {ratios['rich']:.3f} (noise floor: control {ratios['control']:.3f})"
    )


def per_call_costs(hw: HardwareManager, steps: int, steps_per_s: float) -> list[tuple[str, float, float]]:
    """Each monitoring call timed alone, with how often a run makes it: a bound that ignores noise."""
    sampler = hw.sampler(lambda r: None)
    reading = sampler.read()
    tracker = ProgressTracker(2, steps, batch_size=32, mode="plain", every_n_seconds=1e9)
    tracker.start_epoch(0)
    tracker.log(1, {"train/loss": 0.5, "train/lr": 1e-3})
    tracker.hardware(reading)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    state = TrainState(batch_in_epoch=1)

    def render() -> None:
        console.print(tracker.render())

    def step() -> None:
        tracker.step(state)

    calls = [
        ("sampler reading (thread, 2 s)", sampler.read, 200, 1 / hw.sample_every_n_seconds),
        ("rich render (refresh thread, 1 s)", render, 50, 1.0),
        ("plain status line (every 30 s)", tracker.status_line, 200, 1 / 30),
        ("tracker.step (loop, every step)", step, 20000, steps_per_s),
    ]
    out = []
    for name, fn, n, per_s in calls:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((name, (time.perf_counter() - t0) / n * 1e3, per_s))
    return out


if __name__ == "__main__":
    main()
