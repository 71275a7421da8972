"""Fixed costs of a run: importing train.py, process start to the first step, and the last step to exit.

    python benchmarks/startup.py                          # this checkout, 3 rounds
    python benchmarks/startup.py --root /tmp/old-checkout # the same figures for another checkout (before/after)

Per round: `python -c "import train"` timed alone (and `import torch` for reference), then one
`python train.py training.num_epochs=1 training.log_every_n_steps=1 ...` whose TensorBoard `train/loss` events
carry each step's wall time: the first event is the end of step 1, the last one the end of the last step.
Medians over the rounds are printed last. timm's own train.py is not part of the timm wheel, so the issue's
side-by-side comparison needs a timm source checkout; these are the project's own figures.
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

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], root: Path, cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of a child process; CPU time (user + system) barely moves on a shared machine."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=cwd, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def one_run(root: Path, base: Path, overrides: list[str]) -> tuple[float, float, float]:
    """(start -> first step end, last step end -> exit, whole process) in seconds, for one training run."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [
        sys.executable,
        str(root / "train.py"),
        f"base_path={base}",
        "training.log_every_n_steps=1",
        *overrides,
    ]
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True, cwd=base, env=env)
    end = time.time()
    runs = list(base.glob("outputs/*/*"))
    events = EventAccumulator(str(runs[0]), size_guidance={"scalars": 0})
    events.Reload()
    steps = events.Scalars("train/loss")
    return steps[0].wall_time - start, end - steps[-1].wall_time, end - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=HERE, help="checkout whose train.py is measured")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", default=["training.num_epochs=1"], help="train.py overrides")
    args = parser.parse_args()
    root = args.root.resolve()
    keys = (
        "import torch",
        "import torch CPU",
        "import train",
        "import train CPU",
        "first step",
        "tail",
        "total",
    )
    rows: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
            base = Path(tmp)
            for module, cwd in (("torch", base), ("train", root)):
                wall, cpu = timed([sys.executable, "-c", f"import {module}"], root, cwd)
                rows[f"import {module}"].append(wall)
                rows[f"import {module} CPU"].append(cpu)
            first, tail, total = one_run(root, base, args.overrides)
        rows["first step"].append(first)
        rows["tail"].append(tail)
        rows["total"].append(total)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()), flush=True)
    print(f"{root} (median of {args.rounds}):")
    names = {
        "import torch": "import torch (reference)",
        "import torch CPU": "  its CPU time (user + system)",
        "import train": "import train",
        "import train CPU": "  its CPU time (user + system)",
        "first step": "process start -> end of the first step",
        "tail": "end of the last step -> process exit",
        "total": "whole process",
    }
    for key, label in names.items():
        print(f"  {label:<40} {statistics.median(rows[key]):6.2f} s")


if __name__ == "__main__":
    main()
