"""What a person watching an extraction sees: progress with faces/s and an ETA, and the closing summary.

Progress follows the project's convention (deepfake.system.console): rich bars in a terminal or notebook, a plain
timed line in logs, SLURM and CI, nothing with `progress=off`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deepfake.system.console import fmt_duration, resolve_mode

log = logging.getLogger(__name__)

SLOWEST = 5  # videos named in the summary's slowest list
SHOWN = 10  # rows needing a look named in full


class ExtractProgress:
    """Videos done of this run's total, faces written per second, and the ETA from the mean video time."""

    def __init__(self, total: int, mode: str = "auto", every_n_seconds: float = 30.0) -> None:
        self.total, self.done, self.faces = total, 0, 0
        self.every = every_n_seconds
        self.mode = resolve_mode(mode, Console())
        self._t0 = self._last = time.perf_counter()
        self._bars: Progress | None = None
        self._task = None

    def __enter__(self) -> ExtractProgress:
        if self.mode == "rich":
            self._bars = Progress(
                TextColumn("videos"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"), TimeRemainingColumn(), refresh_per_second=2,
            )  # fmt: skip
            self._bars.start()
            self._task = self._bars.add_task("extract", total=self.total, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def rate(self, now: float) -> float:
        return self.faces / max(now - self._t0, 1e-9)

    def line(self, now: float) -> str:
        eta = (now - self._t0) / self.done * (self.total - self.done) if self.done else None
        pct = 100.0 * self.done / max(self.total, 1)
        return (
            f"videos {self.done}/{self.total} ({pct:.0f}%) | {self.faces} faces, {self.rate(now):.1f} faces/s | "
            f"elapsed {fmt_duration(now - self._t0)} | ETA {'--' if eta is None else fmt_duration(eta)}"
        )

    def update(self, faces: int) -> None:
        """One more video finished with `faces` crops."""
        self.done += 1
        self.faces += faces
        now = time.perf_counter()
        if self._bars is not None:
            self._bars.update(self._task, completed=self.done, rate=f"{self.rate(now):.1f} faces/s")
        elif self.mode == "plain" and (now - self._last >= self.every or self.done == self.total):
            self._last = now
            log.info(self.line(now))


def needs_a_look(row: Mapping[str, str]) -> str:
    """Why a videos.csv row deserves a person's eye, or '' (faces in under half the frames counts)."""
    if row["status"] != "ok":
        return row["status"] + (f": {row['error']}" if row.get("error") else "")
    if row.get("error"):
        return row["error"]
    decoded, with_face = int(row["frames_decoded"]), int(row["frames_with_face"])
    if with_face * 2 < decoded:
        return f"a face in only {with_face} of {decoded} frames"
    return ""


def summary(rows: Sequence[Mapping[str, str]], skipped: int, seconds: float) -> list[str]:
    """The closing lines: counts per status, the slowest videos, and the rows that need a look."""
    counts = Counter(r["status"] for r in rows)
    faces = sum(int(r["faces"]) for r in rows)
    lines = [
        f"extracted {len(rows)} video(s) in {fmt_duration(seconds)} ({skipped} already done, skipped): "
        + ", ".join(f"{s} {counts[s]}" for s in ("ok", "short", "no_face", "error") if counts[s])
        + f"; {faces} face crops"
    ]
    slow = sorted(rows, key=lambda r: -float(r["seconds"]))[:SLOWEST]
    if slow:
        lines.append("slowest: " + ", ".join(f"{r['source']} {float(r['seconds']):.2f}s" for r in slow))
    look = [(r["source"], why) for r in rows if (why := needs_a_look(r))]
    if look:
        more = f" and {len(look) - SHOWN} more (see videos.csv)" if len(look) > SHOWN else ""
        lines.append(
            f"{len(look)} video(s) need a look: " + "; ".join(f"{s} ({w})" for s, w in look[:SHOWN]) + more
        )
    return lines
