"""What a person sees of a predict.py run: the plan, a progress bar with rate and ETA, and the closing summary.

The summary keeps counts, the slowest few inputs and the first few that need a look, never the rows, so it
costs the same for ten inputs and a million. Progress follows the project's convention
(`deepfake.system.console.ItemProgress`): a rich bar in a terminal, plain timed lines in logs and SLURM.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from deepfake.prediction.plan import Plan
from deepfake.prediction.rows import STATUSES
from deepfake.system.console import fmt_duration

log = logging.getLogger("deepfake")

SLOWEST = 5  # inputs named in the summary's slowest list
SHOWN = 10  # inputs needing a look named in full


def needs_a_look(row: Mapping[str, Any], frames_decoded: int | None = None) -> str:
    """Why a row deserves a person's eye, or '': an error, no face, or a face in under half the frames."""
    if row["status"] == "error":
        return f"error: {row['error']}"
    if row["status"] == "no_face":
        return "no face found"
    used = row.get("frames_used")
    if frames_decoded and used is not None and used * 2 < frames_decoded:
        return f"a face in only {used} of {frames_decoded} frames"
    return ""


class Summary:
    """Counts per status and verdict, the slowest inputs, and the inputs that need a look."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.fake = self.real = 0
        self._slow: list[tuple[float, str]] = []  # a min-heap of the SLOWEST largest
        self.look: list[tuple[str, str]] = []
        self.looks = 0
        self.last: Mapping[str, Any] | None = None

    def add(self, row: Mapping[str, Any], seconds: float, frames_decoded: int | None = None) -> None:
        self.counts[row["status"]] += 1
        self.fake += row["pred"] == "fake"
        self.real += row["pred"] == "real"
        item = (seconds, row["path"])
        if len(self._slow) < SLOWEST:
            heapq.heappush(self._slow, item)
        elif item > self._slow[0]:
            heapq.heapreplace(self._slow, item)
        why = needs_a_look(row, frames_decoded)
        if why:
            self.looks += 1
            if len(self.look) < SHOWN:
                self.look.append((row["path"], why))
        self.last = row

    @property
    def scored(self) -> int:
        return sum(self.counts.values())

    def lines(self, plan: Plan, seconds: float, output: str, threshold: float) -> list[str]:
        rate = f", {self.scored / seconds:.1f}/s" if seconds > 0 and self.scored else ""
        statuses = ", ".join(f"{s} {self.counts[s]}" for s in STATUSES if self.counts[s]) or "nothing new"
        lines = [
            f"scored {self.scored} input(s) in {fmt_duration(seconds)}{rate}: {statuses}; {plan.done} already "
            f"in {output}, skipped; {self.fake} fake, {self.real} real at threshold {threshold:g}"
        ]
        if plan.duplicates:
            lines.append(f"{plan.duplicates} repeated input(s) scored once: " + "; ".join(plan.examples)
                         + (" ..." if plan.duplicates > len(plan.examples) else ""))  # fmt: skip
        slow = sorted(self._slow, reverse=True)
        if slow and self.scored > 1:
            lines.append("slowest: " + ", ".join(f"{path} {t:.2f}s" for t, path in slow))
        if self.looks:
            more = (
                f" and {self.looks - len(self.look)} more (see {output})"
                if self.looks > len(self.look)
                else ""
            )
            lines.append(
                f"{self.looks} input(s) need a look: " + "; ".join(f"{p} ({w})" for p, w in self.look) + more
            )
        return lines


def plan_line(plan: Plan, source: str, index: int, count: int) -> str:
    shard = f"; shard {index} of {count} has {plan.mine}" if count > 1 else ""
    return f"{plan.inputs} input(s) in {source}{shard}: {plan.done} already scored, {plan.todo} to score"


def answer(row: Mapping[str, Any]) -> str:
    """A single input's one line: `clip.mp4: 0.9312 fake (ok)`."""
    prob = "" if row["prob"] is None else f"{row['prob']:.4f} "
    return f"{row['path']}: {prob}{row['pred'] or ''} ({row['status']})".replace("  ", " ")
