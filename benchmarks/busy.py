"""Training throughput on a busy machine: the default command alone, then beside a fixed CPU load.

Each variant runs `python train.py training.num_epochs=3` twice in a fresh process: once alone, once beside
`--busy` busy-loop processes (bounded in time, and killed as soon as the run ends). Images/s are the run's own
per-epoch figures from its train.log. The `default` variant is the project as shipped (the thread count timed
over the first steps); `torch-default` pins `hardware.num_threads` to the core count, which is what torch does
by itself (one intra-op thread per core); `adapt` sets `hardware.adapt_threads=true`; `before` is the default
command of `--ref`'s commit. `--late S` starts the busy loops S seconds into each run: load that arrives after
the thread count was chosen.

    python benchmarks/busy.py                                  # ~4 runs of the default command
    python benchmarks/busy.py --variants default --busy 2 -- data.num_workers=0
    python benchmarks/busy.py --ref 3b392c2 --variants before,default   # the default command at that commit too
    python benchmarks/busy.py --variants default,adapt --late 20         # load that arrives after the probe

Goal (issue 19): beside two busy loops, at least 0.6 of the quiet images/s, and no loss when quiet.
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
from pathlib import Path

from refs import ROOT, checkout, project_env

from deepfake.system.threads import available_cores

EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ \|.*\| ([\d.]+) img/s \|")
THREADS_LINE = re.compile(r"CPU threads: (\d+) intra-op")
BUSY_LOOP = "import time\ntime.sleep({delay})\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def epoch_rates(base: Path) -> tuple[list[float], str]:
    """Per-epoch images/s from the one run under `base` (its train.log's epoch summary lines), and the intra-op
    thread counts it logged (the starting count, then each probe's choice)."""
    logs = list(base.glob("outputs/*/*/train.log"))
    if len(logs) != 1:
        raise SystemExit(f"expected one run under {base}, found {len(logs)}")
    text = logs[0].read_text()
    threads = "->".join(THREADS_LINE.findall(text))
    return [float(m.group(2)) for m in EPOCH_LINE.finditer(text)], threads


def run_train(
    base: Path, overrides: list[str], busy: int, limit_s: int, root: Path = ROOT, late: float = 0.0
) -> tuple[list[float], str, float]:
    """(per-epoch images/s, thread counts, wall seconds) of one training process of `root`'s code, beside
    `busy` busy loops that start `late` seconds after it."""
    loop = BUSY_LOOP.format(seconds=limit_s, delay=late)
    loops = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(busy)]
    try:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(root / "train.py"),
                f"base_path={base}",
                "logging.progress=plain",
                *overrides,
            ],
            check=True,
            capture_output=True,
            timeout=limit_s,
            cwd=base,
            env=project_env(root),
        )
        wall = time.perf_counter() - t0
    finally:
        for p in loops:
            p.kill()
            p.wait()
    return *epoch_rates(base), wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the loaded run")
    parser.add_argument(
        "--variants", default="default,torch-default", help="default, torch-default, adapt, before"
    )
    parser.add_argument("--late", type=float, default=0.0, help="start the busy loops this many seconds in")
    parser.add_argument("--ref", help="git commit whose default command is the `before` variant")
    parser.add_argument("--limit-s", type=int, default=900, help="cap on each run and on each busy loop")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = parser.parse_args()
    cores = available_cores()
    variants = {
        "default": [],
        "torch-default": [f"hardware.num_threads={cores}"],
        "adapt": ["hardware.adapt_threads=true"],
        "before": [],
    }
    names = args.variants.split(",")
    if "before" in names and not args.ref:
        raise SystemExit("error: the `before` variant needs --ref <git commit>")
    print(f"{cores} core(s) available; load average {os.getloadavg()[0]:.2f} before the first run")
    print(
        f"{'variant':<14} {'load':<8} {'img/s per epoch':<24} {'median':>7} {'wall s':>7} {'load avg':>8}  threads"
    )
    medians: dict[tuple[str, str], float] = {}
    with checkout(args.ref) as before:
        for name in names:
            for load, busy in (("quiet", 0), (f"{args.busy} busy", args.busy)):
                overrides = [f"training.num_epochs={args.epochs}", *variants[name], *args.overrides]
                with tempfile.TemporaryDirectory(prefix="busy-") as tmp:
                    root = before if name == "before" else ROOT
                    rates, threads, wall = run_train(
                        Path(tmp), overrides, busy, args.limit_s, root, args.late
                    )
                medians[name, load] = statistics.median(rates)
                shown = ", ".join(f"{r:.0f}" for r in rates)
                print(f"{name:<14} {load:<8} {shown:<24} {medians[name, load]:>7.0f} {wall:>7.1f} "
                      f"{os.getloadavg()[0]:>8.1f}  {threads}", flush=True)  # fmt: skip
            ratio = medians[name, f"{args.busy} busy"] / medians[name, "quiet"]
            print(f"{name}: busy / quiet = {ratio:.2f} (goal >= 0.6)", flush=True)
    if {"default", "torch-default"} <= set(args.variants.split(",")):
        quiet = medians["default", "quiet"] / medians["torch-default", "quiet"]
        print(f"quiet: default / torch-default = {quiet:.2f} (goal: no loss, ~1.0)")


if __name__ == "__main__":
    main()
