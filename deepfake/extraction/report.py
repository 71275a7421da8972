"""What a person watching an extraction sees: progress with faces/s and an ETA, and the closing summary.

Progress follows the project's convention (deepfake.system.console): rich bars in a terminal or notebook, a plain
timed line in logs, SLURM and CI, nothing with `progress=off`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from deepfake.system.console import ItemProgress, fmt_duration

log = logging.getLogger(__name__)

SLOWEST = 5  # videos named in the summary's slowest list
SHOWN = 10  # rows needing a look named in full


class ExtractProgress(ItemProgress):
    """Videos done of this run's total, faces written per second, and the ETA from the mean video time."""

    def __init__(self, total: int, mode: str = "auto", every_n_seconds: float = 30.0) -> None:
        super().__init__(total, "videos", "faces", mode, every_n_seconds, log)

    def update(self, faces: int) -> None:  # type: ignore[override]
        """One more video finished with `faces` crops."""
        super().update(faces)


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
