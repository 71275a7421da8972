"""What a person at the console sees, whichever room draws it: the progress mode and how durations read.

Training (`deepfake.reporting.progress`) and extraction (`deepfake.extraction.report`) follow one convention:
rich bars where a person watches, plain timed lines in logs, SLURM and CI, nothing with `progress=off`.
"""

from __future__ import annotations

from rich.console import Console

from deepfake.choices import PROGRESS

MODES = PROGRESS


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def resolve_mode(mode: str, console: Console) -> str:
    """`auto`: bars where a person watches (a terminal or a notebook), plain lines in logs, SLURM and CI."""
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    live_ok = (console.is_terminal and not console.is_dumb_terminal) or console.is_jupyter
    return "rich" if live_ok else "plain"
