"""Runner overhead: the project's training loop against a bare PyTorch AMP loop on the same tensors.

Both loops train the same model on the same in-memory uint8 batches with the same precision and clipping;
they alternate, and the reported figure is the median over pairs of (project steps/s) / (bare steps/s).

    python benchmarks/overhead.py                      # CPU-sized defaults, under 2 minutes
    python benchmarks/overhead.py --model resnet50 --img-size 224 --batch 128 --steps 50   # on a GPU
    python benchmarks/overhead.py --ref 3b392c2        # that commit's own overhead.py first, then this one
    python benchmarks/overhead.py --threads 1          # both loops on one intra-op thread: steadier when shared
    python benchmarks/overhead.py --logger mlflow --tracking-uri http://127.0.0.1:5000      # + an MLflow tracker

The project's side includes the per-step work of the thread chooser in its costliest mode (adapt_threads
watching the step time) with a single candidate, so the count stays the bare loop's.

With `--logger mlflow` the project loop also feeds a live MLflow run (opened once, before timing) through the
trackers' background sender, as `logger=[tensorboard,mlflow]` does in a run.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bare_step import bare_step
from omegaconf import OmegaConf
from refs import checkout, project_env

from deepfake.config import LoggerConfig, MlflowLoggerConfig
from deepfake.model.detector import get_model
from deepfake.reporting.progress import ProgressTracker, fan_out
from deepfake.reporting.tensorboard import TensorBoardLogger
from deepfake.system.hardware import HardwareManager
from deepfake.system.thread_probe import ThreadChooser, ThreadTuner
from deepfake.tracking.run_info import RunInfo
from deepfake.tracking.trackers import Trackers, open_trackers
from deepfake.training.engine import EpochHooks, LoopConfig, StepContext, TrainState, train_epoch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model, batches, precision, device) -> None:
    """The reference: what a hand-written AMP loop does per step, nothing more."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for images, labels, _ in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        bare_step(model, opt, images, labels, precision)


def project_loop(
    model, batches, precision, device, logdir: str, hw: HardwareManager, trackers: Trackers, log_every: int
) -> None:
    """The project's `train_epoch` as a run drives it: TensorBoard (and the trackers) every `log_every` steps,
    progress, hardware sampler."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tb = TensorBoardLogger(logdir)
    state = TrainState()
    progress = ProgressTracker(
        1, len(batches), batch_size=batches[0][0].shape[0], mode="auto", every_n_seconds=30
    )

    on_log, on_reading = fan_out([tb, trackers], progress, lambda: state.global_step)
    sampler = hw.sampler(on_reading, disk_path=logdir)
    progress.start()
    sampler.start()
    progress.start_epoch(0)
    count = torch.get_num_threads()
    tuner = ThreadTuner(ThreadChooser([count], count, adapt=True))

    def on_step(s: TrainState) -> None:
        tuner.after_step()
        progress.step(s)

    hooks = EpochHooks(log=on_log, on_step=on_step)
    loop = LoopConfig(log_every=log_every)
    train_epoch(StepContext(model, opt, precision, device), batches, state, loop, len(batches), hooks)
    sampler.stop()
    progress.close()
    tb.close()


def timed(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """Wall seconds and CPU seconds of the whole process (every thread: the sampler's, TensorBoard's, the
    trackers' senders), so the CPU figure counts work moved off the loop too and barely moves with other jobs."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto")
    p.add_argument(
        "--threads", type=int, help="intra-op threads of both loops (1 is steadier on a shared CPU)"
    )
    p.add_argument("--ref", help="first run this benchmark as it was at that git commit, then this one")
    p.add_argument("--log-every", type=int, default=20, help="training.log_every_n_steps of the project loop")
    p.add_argument(
        "--logger", choices=("none", "mlflow"), default="none", help="a tracker beside TensorBoard"
    )
    p.add_argument(
        "--tracking-uri", default="http://127.0.0.1:5000", help="the MLflow server for --logger mlflow"
    )
    args = p.parse_args()
    if args.ref:
        skip = {"--ref", args.ref, "--threads", str(args.threads)}
        own = [a for a in sys.argv[1:] if a not in skip and not a.startswith(("--ref=", "--threads="))]
        # That commit's script may have no --threads: torch's own count is OMP_NUM_THREADS, its ceiling.
        threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
        with checkout(args.ref) as root:
            print(f"--- {args.ref}:", flush=True)
            script = root / "benchmarks" / "overhead.py"
            subprocess.run([sys.executable, str(script), *own], env=project_env(root, **threads))
        print("--- this checkout:", flush=True)

    hw = HardwareManager(device=args.device, num_threads=args.threads)
    hw.configure()
    device, precision = hw.device, hw.precision(args.amp)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (args.batch, 3, args.img_size, args.img_size), generator=g, dtype=torch.uint8
    )
    labels = torch.randint(0, 2, (args.batch,), generator=g)
    batches = [(images.to(device), labels.to(device), torch.arange(args.batch))] * args.steps
    base = get_model(args.model, img_size=args.img_size, channels_last=device.type == "cuda").to(device)
    models = {"bare": copy.deepcopy(base), "project": copy.deepcopy(base)}
    print(f"device {device} ({hw.reason}), precision {precision.name}, model {args.model} @ {args.img_size}px, "
          f"batch {args.batch}, {args.steps} steps x {args.pairs} pairs")  # fmt: skip

    with tempfile.TemporaryDirectory() as logdir:
        trackers = open_tracker(args, Path(logdir)) if args.logger == "mlflow" else Trackers([])
        runs = {
            "bare": lambda: bare_loop(models["bare"], batches, precision, device),
            "project": lambda: project_loop(
                models["project"], batches, precision, device, logdir, hw, trackers, args.log_every
            ),
        }
        for fn in runs.values():  # warm-up: allocator, cuDNN autotuning, first TensorBoard file
            fn()
        ratios, cpu_ratios = [], []
        for i in range(args.pairs):
            order = ("bare", "project") if i % 2 == 0 else ("project", "bare")
            times = {name: timed(runs[name], device) for name in order}
            rate = {name: args.steps / wall for name, (wall, _) in times.items()}
            ratios.append(rate["project"] / rate["bare"])
            cpu_ratios.append(times["bare"][1] / times["project"][1])
            print(f"pair {i + 1}: bare {rate['bare']:.1f} steps/s, project {rate['project']:.1f} steps/s, "
                  f"ratio {ratios[-1]:.3f}, CPU-time ratio {cpu_ratios[-1]:.3f}")  # fmt: skip
        trackers.close("end")
        sent = ", ".join(f"{s.tracker.name}: {s.dropped} rows dropped" for s in trackers.senders)
    print(
        f"overhead ratio (project / bare steps/s, median of {args.pairs} pairs): {statistics.median(ratios):.3f}; "
        f"CPU-time ratio (bare / project CPU s): {statistics.median(cpu_ratios):.3f}"
        + (f" [{sent}]" if sent else "")
    )


def open_tracker(args: argparse.Namespace, folder: Path) -> Trackers:
    """A live MLflow run for the project loop, opened (and its params sent) before anything is timed."""
    cfg = OmegaConf.structured(
        LoggerConfig(
            tensorboard=None,
            mlflow=MlflowLoggerConfig(tracking_uri=args.tracking_uri, experiment_name="overhead"),
        )
    )
    info = RunInfo(run_dir=folder, name="overhead", config=vars(args), tags={"benchmark": "overhead"})
    return open_trackers(cfg, info)


if __name__ == "__main__":
    main()
