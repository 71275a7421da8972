"""The bounds on what a user's files and flags can make decoding cost, and the one check before a file is
opened: only regular files are read. No PyAV, no torch: settings, config checks and prediction's input
listing import these without loading a decoder (`import train` stays light).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["MAX_FRAMES", "MAX_SIDE", "TIMEOUT_S", "not_regular"]

MAX_FRAMES = 1024  # most frames_per_video: a video's kept frames are held in memory together
MAX_SIDE = 4096  # default cap on a decoded frame's longer side (extract.py's decode_max_side)
TIMEOUT_S = 300.0  # default time limit for decoding one file (extract.py's timeout_s)
#: Not regular files, by kind: opening one for reading can block forever (a FIFO without a writer) or read
#: without end (a character device).
_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISDIR, "a folder"))  # fmt: skip


def not_regular(path: str | Path) -> str:
    """Why `path` (links resolved) is no regular file to read, or "" when it is one (or cannot be statted:
    its reader then reports the OSError)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISREG(mode):
        return ""
    kind = next((name for test, name in _SPECIAL if test(mode)), "not a regular file")
    return f"not a regular file: {kind}; only regular files are read"
