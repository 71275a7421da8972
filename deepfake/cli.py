"""Hydra entry glue: a composition error (bad override, unknown key or group) becomes one `error:` line and exit 2.

The task's own errors are reported by `deepfake.exits.run_reporting_errors`, on the ground floor.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from deepfake.exits import os_error_message, report


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
    except (
        AssertionError,
        ValueError,
    ) as e:  # Hydra's own, for a key under an unchosen option or `group=null`
        message = option_override_message(e, sys.argv[1:])
        if message is None:
            raise
        report(message)
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
    # What the interpreter's own exit does first: threading's exit callbacks (concurrent.futures and joblib's
    # loky stop their executors' manager threads there), then a join of every non-daemon thread. Joining
    # without the callbacks waited forever on a process pool's manager thread (the joblib launcher).
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def option_override_message(e: BaseException, argv: Sequence[str]) -> str | None:
    """Two Hydra slips that surface as bare exceptions: a key of a `logger` tracker that was not chosen
    (`logger.mlflow.tracking_uri=...` without `logger=mlflow`), and `group=null` for a group with a default."""
    text = str(e)
    if "Unexpected type for root: NoneType" in text:
        for arg in argv:
            parts = arg.lstrip("+~").split("=", 1)[0].split(".")
            if len(parts) > 2 and parts[0] == "logger":
                return (
                    f"{arg} sets the {parts[1]} tracker, which is not chosen: add logger={parts[1]} "
                    f"(or a list, e.g. logger=[tensorboard,{parts[1]}])"
                )
        return None
    if "Config group override must be a string or a list. Got NoneType" in text:
        group = next(
            (a.split("=")[0] for a in argv if a.endswith("=null") and "." not in a.split("=")[0]), "group"
        )
        return f"{group}=null is not an option: for none, pass {group}=[] (or ~{group})"
    return None


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
