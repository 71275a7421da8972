"""This project's `train.py` against timm's own `train.py` on the same data and settings (issue 25).

    python benchmarks/peer_timm.py /path/to/pytorch-image-models/train.py            # 2 rounds x (0, 2) workers
    python benchmarks/peer_timm.py /work/ref/timm/train.py --ref 3b392c2 --pairs 3   # + the project at a commit

Both read one generated ImageFolder (2,400 train and 800 val JPEGs at 64 px: the project's synthetic faces,
flattened to `<split>/{real,fake}/<image>.jpg`) and train `test_resnet` with AdamW at 2e-3 (weight decay 0.05),
a per-step cosine schedule after one warm-up epoch, batch 64, 3 epochs, fp32 on the CPU, gradient norm
clipped at 1, random resized crops of 80-100% of the area and horizontal flips, no colour jitter, no label
smoothing. timm's script is run from its checkout, so it imports that checkout's timm; with 0 workers through a
launcher that drops the `persistent_workers` argument torch refuses without workers (timm's train.py at
aa4b5850 always passes it).

Runs alternate in rounds (project then timm, then timm then project; with `--ref`, the project at that commit
joins each round and the order rotates), for each worker count, so all see the same moments of a shared
machine. Printed per run: the training images/s of each epoch as the run logs
them (timm: 64 / mean update time; the project: images / epoch time), the whole-process wall time, and the
machine's load: the load average and the busy share of all cores during the run, with the part not used by
the run itself ("others"). The summary gives, per worker count, the median over rounds of project / timm for
training images/s (each run's median epoch) and for wall time, and with `--ref` project / before. Goals:
images/s >= 1.0, wall <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from refs import ROOT, checkout, project_env

PROJECT_EPOCH = re.compile(r"epoch (\d+)/\d+ \|.*\| ([\d.]+) img/s \|")
THREADS_LINE = re.compile(r"CPU threads: (\d+) intra-op")
TIMM_LAST_UPDATE = re.compile(r"Train: (\d+) \[\s*\d+/\d+ \(100%\)\].*?\(\s*[\d.]+s,\s*([\d.]+)/s\)")
IMG_SIZE, BATCH, LR, WD, TRAIN_VIDEOS, VAL_VIDEOS, FRAMES = 64, 64, 2e-3, 0.05, 300, 100, 8


@dataclass
class Run:
    rates: list[float]  # training images/s per epoch
    wall: float
    load: float  # 1-minute load average at the run's end
    busy: float  # share of all cores busy during the run
    others: float  # of which not this run's processes
    threads: str = ""  # the project's intra-op counts as logged: the start, then the timed choice


def make_imagefolder(out: Path) -> Path:
    """`out/{train,val}/{real,fake}/<video>_<frame>.jpg`: the synthetic faces as timm's ImageFolder reads them
    (one folder per class: timm names a class after an image's parent folder)."""
    from deepfake.data.synthetic import generate_synthetic_dataset

    src = generate_synthetic_dataset(
        out / "synthetic",
        img_size=IMG_SIZE,
        videos_per_split={"train": TRAIN_VIDEOS, "val": VAL_VIDEOS},
        frames_per_video=FRAMES,
    )
    folder = out / "imagefolder"
    for split in ("train", "val"):
        for label in ("real", "fake"):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for image in sorted((src / split / label).rglob("*.jpg")):
                os.link(image, folder / split / label / f"{image.parent.name}_{image.name}")
    return folder


def project_cmd(root: Path, data: Path, base: Path, workers: int, epochs: int) -> list[str]:
    return [
        sys.executable, str(root / "train.py"), f"base_path={base}", "data=folder", f"data.root={data}",
        "model=tiny", f"data.img_size={IMG_SIZE}", f"data.num_workers={workers}", "data.augment.crop=true",
        "data.augment.crop_scale=[0.8,1.0]", "data.augment.hflip=true", f"training.batch_size={BATCH}",
        f"training.num_epochs={epochs}", f"training.learning_rate={LR}", f"training.weight_decay={WD}",
        "training.amp=off", "training.scheduler.name=cosine", "training.scheduler.warmup_epochs=1",
        "training.grad_clip.max=1.0", "hardware.device=cpu", "logging.progress=plain", "seed=42",
    ]  # fmt: skip


# timm's create_loader always asks for persistent workers, which torch refuses without workers: with
# --workers 0, timm's own train.py runs through this launcher, which drops that one argument.
NO_WORKERS_LAUNCHER = """
import runpy, sys, torch.utils.data as data
init = data.DataLoader.__init__
def without_persistence(self, *args, **kwargs):
    if not kwargs.get("num_workers"):
        kwargs.pop("persistent_workers", None)
    init(self, *args, **kwargs)
data.DataLoader.__init__ = without_persistence
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0].rsplit("/", 1)[0])  # as `python train.py` would: the checkout's own timm
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def timm_cmd(train_py: Path, data: Path, base: Path, workers: int, epochs: int) -> list[str]:
    launcher = [] if workers else ["-c", NO_WORKERS_LAUNCHER]
    return [
        sys.executable, *launcher, str(train_py), "--data-dir", str(data), "--train-split", "train", "--val-split", "val",
        "--model", "test_resnet", "--num-classes", "2", "--img-size", str(IMG_SIZE), "--crop-pct", "1.0",
        "--batch-size", str(BATCH), "--opt", "adamw", "--lr", str(LR), "--weight-decay", str(WD),
        "--sched", "cosine", "--sched-on-updates", "--warmup-epochs", "1", "--warmup-lr", str(LR / 100),
        "--min-lr", "1e-6", "--cooldown-epochs", "0", "--epochs", str(epochs), "--clip-grad", "1.0",
        "--smoothing", "0", "--scale", "0.8", "1.0", "--color-jitter", "0", "--hflip", "0.5",
        "--workers", str(workers), "--device", "cpu", "--log-interval", "50", "--seed", "42",
        "--output", str(base), "--experiment", "timm",
    ]  # fmt: skip


def run_process(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[str, float, float, float]:
    """(log text, wall seconds, machine busy share, share used by this process tree) of one run."""
    cpu0, t0 = psutil.cpu_times(), time.perf_counter()
    child0 = os.times()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu1, child1 = psutil.cpu_times(), os.times()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    total = sum(cpu1) - sum(cpu0)
    idle = (cpu1.idle + getattr(cpu1, "iowait", 0)) - (cpu0.idle + getattr(cpu0, "iowait", 0))
    own = (child1.children_user + child1.children_system) - (child0.children_user + child0.children_system)
    cores = psutil.cpu_count() or 1
    return done.stdout + done.stderr, wall, 1 - idle / max(total, 1e-9), own / max(wall * cores, 1e-9)


def run_project(root: Path, data: Path, workers: int, epochs: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="peer-project-") as tmp:
        env = project_env(root, DEEPFAKE_CACHE=str(Path(tmp) / "cache"))
        _, wall, busy, own = run_process(project_cmd(root, data, Path(tmp), workers, epochs), Path(tmp), env)
        (log,) = Path(tmp).glob("outputs/*/*/train.log")
        text = log.read_text()
    rates = [float(m.group(2)) for m in PROJECT_EPOCH.finditer(text)]
    threads = "->".join(THREADS_LINE.findall(text))
    return Run(rates, wall, os.getloadavg()[0], busy, max(0.0, busy - own), threads)


def run_timm(train_py: Path, data: Path, workers: int, epochs: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="peer-timm-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        text, wall, busy, own = run_process(
            timm_cmd(train_py, data, Path(tmp), workers, epochs), Path(tmp), env
        )
    rates = [float(m.group(2)) for m in TIMM_LAST_UPDATE.finditer(text)]
    return Run(rates, wall, os.getloadavg()[0], busy, max(0.0, busy - own))


def show(name: str, workers: int, run: Run) -> None:
    rates = ", ".join(f"{r:.0f}" for r in run.rates)
    threads = f" | threads {run.threads}" if run.threads else ""
    print(f"  {name:<8} {workers} workers: img/s per epoch {rates:<18} median {statistics.median(run.rates):6.0f}"
          f" | wall {run.wall:6.1f} s | load {run.load:4.1f}, busy {run.busy:4.0%} (others {run.others:4.0%})"
          f"{threads}", flush=True)  # fmt: skip


def rounds(
    roots: dict[str, Path], train_py: Path, data: Path, workers: int, args: argparse.Namespace
) -> dict:
    """`args.pairs` rounds for one worker count, each running the project checkouts in `roots` and timm in a
    rotating order; {name: [(images/s, wall) ratio to timm in each round]}."""
    ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in roots}
    names = [*roots, "timm"]
    for r in range(args.pairs):
        print(f"round {r + 1}, {workers} workers:", flush=True)
        runs: dict[str, Run] = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:
            if name == "timm":
                runs[name] = run_timm(train_py, data, workers, args.epochs)
            else:
                runs[name] = run_project(roots[name], data, workers, args.epochs)
            show(name, workers, runs[name])
        theirs = runs["timm"]
        for name in roots:
            rate = statistics.median(runs[name].rates) / statistics.median(theirs.rates)
            ratios[name].append((rate, runs[name].wall / theirs.wall))
            print(f"  {name} / timm: images/s {rate:.2f}, wall {ratios[name][-1][1]:.2f}", flush=True)
    return ratios


def summary(ratios: dict[str, list[tuple[float, float]]], workers: int) -> None:
    for name, found in ratios.items():
        rates, walls = [p[0] for p in found], [p[1] for p in found]
        print(f"  {workers} workers, {name} / timm: images/s {statistics.median(rates):.2f} "
              f"(rounds {', '.join(f'{r:.2f}' for r in rates)}), wall {statistics.median(walls):.2f} "
              f"(rounds {', '.join(f'{w:.2f}' for w in walls)})")  # fmt: skip
    if "before" in ratios:
        after = statistics.median(r for r, _ in ratios["project"]) / statistics.median(
            r for r, _ in ratios["before"]
        )
        wall = statistics.median(w for _, w in ratios["project"]) / statistics.median(
            w for _, w in ratios["before"]
        )
        print(f"  {workers} workers, project / before: images/s {after:.2f}, wall {wall:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("timm_train", type=Path, help="timm's train.py, in a pytorch-image-models checkout")
    parser.add_argument("--pairs", type=int, default=2, help="rounds per worker count")
    parser.add_argument("--workers", default="0,2", help="loader worker counts, comma-separated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT, help="the project checkout to measure")
    parser.add_argument("--ref", help="also run the project at this git commit (`before`) in every round")
    args = parser.parse_args()
    train_py = args.timm_train.resolve()
    if not train_py.is_file():
        raise SystemExit(f"error: {train_py} is not a file; pass the path of timm's train.py")
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="peer-timm-") as tmp, checkout(args.ref) as before:
        roots = {"project": args.root.resolve(), **({"before": before} if args.ref else {})}
        data = make_imagefolder(Path(tmp))
        shown = ", ".join(f"{name} {root}" for name, root in roots.items())
        print(f"{shown} ({args.ref or 'no ref'}) vs {train_py}; {psutil.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)  # fmt: skip
        found = {workers: rounds(roots, train_py, data, workers, args) for workers in worker_counts}
    print(f"summary, medians over {args.pairs} round(s) (goals: images/s >= 1.0, wall <= 1.05):")
    for workers, ratios in found.items():
        summary(ratios, workers)


if __name__ == "__main__":
    main()
