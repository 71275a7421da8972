"""How a command ends: a problem the user can fix is one `error:` line and exit code 2, never a traceback.

The ground floor, so every room with a `python -m` entry (data.convert, runs.restore, runs.clean, ...) can
report its errors without importing the Hydra entry helpers in `deepfake.cli`.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from deepfake.errors import TrainingInterrupted, UserError

log = logging.getLogger("deepfake")


def run_reporting_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn`; on a UserError or an OS error the user can fix (full disk, no permission, bad path) print
    `error: <message>` to stderr (and train.log) and exit 2.

    A signal-stopped run has already said what it saved and how to resume: exit 128 + signal number.
    """
    try:
        return fn(*args)
    except (UserError, OSError) as e:
        message = error_message(e)
        if message is None:
            raise
        log.debug("user error", exc_info=True)
        report(message)
        raise SystemExit(getattr(e, "exit_code", 2)) from None  # a failed check (debug=overfit) exits 1
    except TrainingInterrupted as e:
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def error_message(e: BaseException) -> str | None:
    """The `error:` text for a problem the user can fix; None for anything else (a bug keeps its traceback)."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError):
        return os_error_message(e)
    return None


def log_to_files(message: str, handlers: Sequence[logging.Handler] | None = None) -> None:
    """Write the `error:` line into the log files (train.log) only: the console gets it on stderr."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (message,), None)
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def report(message: str) -> None:
    """The one `error:` line: on stderr, and in the run's log (train.log) when a run directory logs."""
    log_to_files(message)
    print(f"error: {message}", file=sys.stderr, flush=True)


#: Errors of the environment, not of the program: each has a fix the user can make.
_FIXES = {
    errno.ENOSPC: "free space on that disk or write elsewhere (e.g. base_path=/other/disk)",
    errno.EDQUOT: "free space within your quota or write elsewhere (e.g. base_path=/other/disk)",
    errno.EACCES: "make it writable or write elsewhere (e.g. base_path=/writable/folder)",
    errno.EPERM: "make it writable or write elsewhere (e.g. base_path=/writable/folder)",
    errno.EROFS: "the file system is read-only: write elsewhere (e.g. base_path=/writable/folder)",
    errno.ENOENT: "check that the path exists, or that its folder can be created",
    errno.ENOTDIR: "a part of that path is a file, not a folder: pick another path",
}


def os_error_message(e: OSError) -> str | None:
    """`<path>: <reason>; <fix>` for a disk-full, permission or bad-path error; None for any other (a bug)."""
    fix = _FIXES.get(e.errno or 0)
    if fix is None:
        return None
    path = e.filename if e.filename is not None else "a file"
    return f"cannot use {path}: {e.strerror or os.strerror(e.errno or 0)}; {fix}"
