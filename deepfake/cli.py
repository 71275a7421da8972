"""Entry-point glue: a user error becomes one message and exit code 2, never a traceback."""

from __future__ import annotations

import atexit
import errno
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from deepfake.errors import UserError
from deepfake.system.interrupt import TrainingInterrupted

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


def run_hydra(main: Callable[[], Any]) -> None:
    """Call a `@hydra.main` entry point so that a composition error is one `error:` line and exit 2.

    Hydra prints its own multi-line report and exits 1 for a bad override (`training.batch_size=abc`, an
    unknown key, `model=doesnotexist`). With HYDRA_FULL_ERROR set it raises instead, which lets this
    wrapper report it as every other user error. The task's own errors are handled inside the task
    (`run_reporting_errors`), so anything else that escapes is a bug and keeps its traceback.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (HydraException, OmegaConfBaseException) as e:
        report(composition_message(e))
        raise SystemExit(2) from None
    except OSError as e:  # e.g. Hydra cannot create the run directory under a read-only base_path
        message = os_error_message(e)
        if message is None:
            raise
        report(message)
        raise SystemExit(2) from None
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def run_and_leave(main: Callable[[], Any]) -> NoReturn:
    """The command-line entry points: `run_hydra(main)`, then `leave` with its exit status. A bug's traceback
    (any other exception) still ends the process the ordinary way."""
    try:
        run_hydra(main)
    except SystemExit as e:
        leave(e.code)
    leave(0)


def leave(code: object = 0) -> NoReturn:
    """End the process as `sys.exit(code)` would, without finalising the interpreter module by module.

    Tearing down torch, timm, scikit-learn and matplotlib took 0.5-2 s on a quiet 2-core machine (7 s on a
    loaded one) after a run's last line, and nothing a run writes depends on it: every file is written and
    closed (atomically) before this point. What a normal exit does that matters still happens here, in its
    order: other non-daemon threads are joined, the atexit handlers run (logging flushes and closes its
    files, loader workers are stopped, trackers finish their runs), and stdout and stderr are flushed.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


#: Lines of Hydra's and OmegaConf's reports that say where, not what: dropped from the one-line message.
_HYDRA_NOISE = ("full_key:", "reference_type=", "object_type=", "Config search path", "provider=")


def composition_message(e: BaseException) -> str:
    """Hydra's message and its OmegaConf cause, joined into one line, with where to look for valid keys."""
    parts = [str(e)]
    if e.__cause__ is not None and str(e.__cause__) not in parts[0]:
        parts.append(str(e.__cause__))
    lines = [line.strip() for part in parts for line in part.splitlines()]
    text = " ".join(line for line in lines if line and not line.startswith(_HYDRA_NOISE))
    return f"{text} (see the valid keys and groups with --help or --cfg job)"
