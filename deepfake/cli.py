"""Entry-point glue: a user error becomes one message and exit code 2, never a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from deepfake.errors import UserError

log = logging.getLogger("deepfake")


def run_reporting_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Call `fn`; on a UserError print `error: <message>` to stderr and exit 2."""
    try:
        return fn(*args)
    except UserError as e:
        log.debug("user error", exc_info=True)
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
