"""Training throughput on a busy machine: the default command alone, then beside a fixed CPU load.

Each variant runs `python train.py training.num_epochs=3` twice in a fresh process: once alone, once beside
`--busy` busy-loop processes (bounded in time, and killed as soon as the run ends). Images/s are the run's own
per-epoch figures from its train.log. The `default` variant is the project as shipped (threads chosen from the
cores and loader workers); `torch-default` pins `hardware.num_threads` to the core count, which is what torch
did before (one intra-op thread per core).

    python benchmarks/busy.py                                  # ~4 runs of the default command
    python benchmarks/busy.py --variants default --busy 2 -- data.num_workers=0

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

from deepfake.system.threads import available_cores

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ \|.*\| ([\d.]+) img/s \|")
BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def epoch_rates(base: Path) -> list[float]:
    """Per-epoch images/s from the one run under `base` (its train.log's epoch summary lines)."""
    logs = list(base.glob("outputs/*/*/train.log"))
    if len(logs) != 1:
        raise SystemExit(f"expected one run under {base}, found {len(logs)}")
    return [float(m.group(2)) for m in EPOCH_LINE.finditer(logs[0].read_text())]


def run_train(base: Path, overrides: list[str], busy: int, limit_s: int) -> tuple[list[float], float]:
    """(per-epoch images/s, wall seconds) of one training process, beside `busy` busy loops."""
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=limit_s)]) for _ in range(busy)]
    try:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                f"base_path={base}",
                "logging.progress=plain",
                *overrides,
            ],
            check=True,
            capture_output=True,
            timeout=limit_s,
            cwd=base,
        )
        wall = time.perf_counter() - t0
    finally:
        for p in loops:
            p.kill()
            p.wait()
    return epoch_rates(base), wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the loaded run")
    parser.add_argument("--variants", default="default,torch-default")
    parser.add_argument("--limit-s", type=int, default=900, help="cap on each run and on each busy loop")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (after --)")
    args = parser.parse_args()
    cores = available_cores()
    variants = {"default": [], "torch-default": [f"hardware.num_threads={cores}"]}
    print(f"{cores} core(s) available; load average {os.getloadavg()[0]:.2f} before the first run")
    print(f"{'variant':<14} {'load':<8} {'img/s per epoch':<28} {'median':>8} {'wall s':>7}")
    medians: dict[tuple[str, str], float] = {}
    for name in args.variants.split(","):
        for load, busy in (("quiet", 0), (f"{args.busy} busy", args.busy)):
            overrides = [f"training.num_epochs={args.epochs}", *variants[name], *args.overrides]
            with tempfile.TemporaryDirectory(prefix="busy-") as tmp:
                rates, wall = run_train(Path(tmp), overrides, busy, args.limit_s)
            medians[name, load] = statistics.median(rates)
            shown = ", ".join(f"{r:.0f}" for r in rates)
            print(f"{name:<14} {load:<8} {shown:<28} {medians[name, load]:>8.0f} {wall:>7.1f}", flush=True)
        ratio = medians[name, f"{args.busy} busy"] / medians[name, "quiet"]
        print(f"{name}: busy / quiet = {ratio:.2f} (goal >= 0.6)", flush=True)
    if {"default", "torch-default"} <= set(args.variants.split(",")):
        quiet = medians["default", "quiet"] / medians["torch-default", "quiet"]
        print(f"quiet: default / torch-default = {quiet:.2f} (goal: no loss, ~1.0)")


if __name__ == "__main__":
    main()
