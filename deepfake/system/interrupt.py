"""Graceful stops on Ctrl-C (SIGINT) and SIGTERM: finish the current step, save, back up, then exit.

The first signal only raises a flag that the training loop polls at step boundaries, so the interrupt
checkpoint is taken at a clean point; a second signal means "stop now" and raises at once. Exit codes
follow the shell convention 128 + signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from deepfake.errors import TrainingInterrupted

log = logging.getLogger("deepfake.interrupt")  # the name train.log has always shown

HANDLED = (signal.SIGINT, signal.SIGTERM)


class GracefulInterrupt:
    """While entered, SIGINT/SIGTERM set `signum` instead of killing; a second signal raises at once.

    Only the main thread can own signal handlers; elsewhere (a training thread in a notebook, say) this is
    a no-op and signals keep their usual meaning.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __call__(self) -> bool:
        """Whether this process was asked to stop (the runner agrees on it across ranks: `AgreedStop`)."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            raise TrainingInterrupted(signum, f"{name} received twice: aborting at once", abort=True)
        self.signum = signum
        log.warning(
            "%s received: stopping after the current step to save a checkpoint and a backup "
            "(send it again to abort at once)",
            name,
        )


def ignore_in_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a terminal's Ctrl-C reaches every process in the group; workers must
    leave the stop to the main process rather than die and break the graceful shutdown."""
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_IGN)


def _kill_daemon_children() -> None:
    """At exit, kill the daemonic children (DataLoader workers) that multiprocessing is about to terminate.

    Its exit hook stops them with SIGTERM, which the workers ignore, then joins them: without this, a
    script that ends on an uncaught error while a loader still has workers would hang forever.
    """
    children = [c for c in multiprocessing.active_children() if c.daemon]
    if children and hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # PyTorch's handler would report each kill as a failure
    for child in children:
        child.kill()


# Registered after multiprocessing's own exit hook (imported above), so it runs before it.
atexit.register(_kill_daemon_children)
