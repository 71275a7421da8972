"""Fixed costs of a run: importing train.py, process start to the first step, and the last step to exit.

    python benchmarks/startup.py                          # this checkout, 3 rounds
    python benchmarks/startup.py --ref 3b392c2            # before (that commit) and after (this checkout), paired
    python benchmarks/startup.py --root /tmp/old-checkout # another checkout alone

Per round and checkout: `python -c "import train"` timed alone (and `import torch` for reference), then one
`python train.py training.log_every_n_steps=1 ...` (one epoch of the default command unless overrides are
given) whose TensorBoard `train/loss` events carry each step's wall time: the first event is the end of step 1,
the last one the end of the last step. With `--ref`, the two checkouts alternate within each round (before
first in odd rounds), and the last lines give after / before per figure. Each checkout first runs one short
untimed run, which writes the synthetic dataset into the cache they share.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from refs import ROOT, checkout, project_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FIGURES = {
    "import torch": "import torch (reference)",
    "import torch CPU": "  its CPU time (user + system)",
    "import train": "import train",
    "import train CPU": "  its CPU time (user + system)",
    "first step": "process start -> end of the first step",
    "tail": "end of the last step -> process exit",
    "total": "whole process",
    "total CPU": "  its CPU time, loader workers included",
}


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of a child process; CPU time (user + system) barely moves on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=cwd, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def one_run(root: Path, base: Path, overrides: list[str], env: dict[str, str]) -> dict[str, float]:
    """Start -> end of the first step, end of the last step -> exit, and the whole process, for one run."""
    cmd = [
        sys.executable,
        str(root / "train.py"),
        f"base_path={base}",
        "training.log_every_n_steps=1",
        *overrides,
    ]
    start = time.time()
    wall, cpu = timed(cmd, env, base)
    end = start + wall
    (run,) = base.glob("outputs/*/*")
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    steps = events.Scalars("train/loss")
    return {
        "first step": steps[0].wall_time - start,
        "tail": end - steps[-1].wall_time,
        "total": wall,
        "total CPU": cpu,
    }


def one_round(root: Path, overrides: list[str], cache: Path) -> dict[str, float]:
    env = project_env(root, DEEPFAKE_CACHE=str(cache))
    found: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        base = Path(tmp)
        for module, cwd in (("torch", base), ("train", root)):
            wall, cpu = timed([sys.executable, "-c", f"import {module}"], env, cwd)
            found[f"import {module}"], found[f"import {module} CPU"] = wall, cpu
        found.update(one_run(root, base, overrides, env))
    return found


def warm_up(root: Path, cache: Path) -> None:
    """One step and one validation batch, untimed: the synthetic dataset is written once, before any timing."""
    with tempfile.TemporaryDirectory(prefix="startup-warm-") as tmp:
        cmd = [sys.executable, str(root / "train.py"), f"base_path={tmp}", "training.num_epochs=1",
               "debug.limit_train_batches=1", "debug.limit_val_batches=1", "backup.enabled=false"]  # fmt: skip
        subprocess.run(
            cmd, check=True, capture_output=True, cwd=tmp, env=project_env(root, DEEPFAKE_CACHE=str(cache))
        )


def report(name: str, rows: dict[str, list[float]]) -> None:
    print(f"{name} (median of {len(rows['total'])}):")
    for key, label in FIGURES.items():
        print(f"  {label:<42} {statistics.median(rows[key]):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose train.py is measured (after)")
    parser.add_argument("--ref", help="also measure this git commit (before), alternating with --root")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", default=["training.num_epochs=1"], help="train.py overrides")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    with tempfile.TemporaryDirectory(prefix="startup-cache-") as cache, checkout(args.ref) as before:
        roots = {"after": args.root.resolve()}
        if args.ref:
            roots = {"before": before, **roots}
        rows = {name: {k: [] for k in FIGURES} for name in roots}
        for root in roots.values():
            warm_up(root, Path(cache))
        for i in range(args.rounds):
            names = list(roots) if i % 2 == 0 else list(reversed(roots))
            for name in names:
                found = one_round(roots[name], args.overrides, Path(cache))
                for key, value in found.items():
                    rows[name][key].append(value)
                shown = ", ".join(f"{k} {v:.2f}s" for k, v in found.items())
                print(f"round {i + 1}, {name}: {shown}; load {os.getloadavg()[0]:.1f}", flush=True)
    for name, root in roots.items():
        report(f"{name}: {root}" + (f" ({args.ref})" if name == "before" else ""), rows[name])
    if args.ref:
        print("after / before (medians):")
        for key, label in FIGURES.items():
            ratio = statistics.median(rows["after"][key]) / statistics.median(rows["before"][key])
            print(f"  {label:<42} {ratio:6.2f}")


if __name__ == "__main__":
    main()
