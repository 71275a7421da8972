"""What a person at the console sees, whichever room draws it: the progress mode, how durations read, and how
to type the project's other commands.

Training (`deepfake.reporting.progress`) and extraction (`deepfake.extraction.report`) follow one convention:
rich bars where a person watches, plain timed lines in logs, SLURM and CI, nothing with `progress=off`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

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


def command_for(script: str) -> str:
    """How to start another of the project's commands (train, evaluate, predict, extract) the way this process
    was started: `python <dir>/evaluate.py` beside a repository script run by Hydra, else the console script
    the package installs (`deepfake-evaluate`), which works from any directory."""
    from hydra.core.hydra_config import HydraConfig

    here = Path(sys.argv[0])
    sibling = here.with_name(f"{script}.py")
    if HydraConfig.initialized() and here.suffix == ".py" and sibling.is_file():
        return f"python {shlex.quote(str(sibling))}"
    return f"deepfake-{script}"
