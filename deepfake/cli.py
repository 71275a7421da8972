"""Entry-point glue: a user error becomes one message and exit code 2, never a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from deepfake.errors import UserError
from deepfake.interrupt import TrainingInterrupted

log = logging.getLogger("deepfake")


def run_reporting_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn`; on a UserError print `error: <message>` to stderr and exit 2.

    A signal-stopped run has already said what it saved and how to resume: exit 128 + signal number.
    """
    try:
        return fn(*args)
    except UserError as e:
        log.debug("user error", exc_info=True)
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except TrainingInterrupted as e:
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
