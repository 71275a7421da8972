"""A tracker's own thread: the training loop queues, the thread sends in batches and rides out outages.

The queue is bounded in log rows (`max_rows`): a server that stays away for hours costs the oldest train rows,
never memory or training time. Tasks (opening the run, the end-of-run files, finishing) are few and always
kept, in order with the rows around them. A send that fails for a connection reason is kept and retried with
backoff (1 s doubling to `retry_max_s`), warning once per outage; a refusal (a bad value, a deleted run) is
warned about once per kind and dropped, and a refused `open` ends this tracker for the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from deepfake.tracking.tracker import Row, Tracker

log = logging.getLogger("deepfake.tracking")

#: Rows sent per call at most (MLflow's log_batch takes 1000 metrics; a row holds a handful).
MAX_BATCH_ROWS = 100


@dataclass
class Task:
    what: str  # for messages: "the run's files", ...
    fn: Callable[[], None]
    essential: bool = False  # a refused essential task ends the tracker (nothing else can be sent)


#: What the OS says inside a client's long exception text, said shortly (the first found wins).
_NETWORK = (
    ("Connection refused", "connection refused"),
    ("Name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("timed out", "timed out"),
    ("Connection reset", "connection reset"),
    ("RemoteDisconnected", "the server closed the connection"),
)
#: At the end, a tracker already unreachable gets this long at most (its server has been away for a while).
OUTAGE_CLOSE_S = 10.0


def short(error: BaseException) -> str:
    """An exception in one short line: network failures by what the OS said, others by type and text."""
    seen: BaseException | None = error
    while seen is not None:
        text = str(seen)
        for pattern, says in _NETWORK:
            if pattern in text:
                return says
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


class Sender:
    """Queues a tracker's calls and sends them from its own daemon thread."""

    def __init__(self, tracker: Tracker, max_rows: int = 10_000, retry_max_s: float = 30.0) -> None:
        self.tracker = tracker
        self.max_rows = max_rows
        self.retry_max_s = retry_max_s
        self.dropped = 0  # rows dropped because the queue was full
        self._cond = threading.Condition()
        self._queue: deque[Row | Task] = deque()
        self._rows = 0  # rows in the queue
        self._closing = False
        self._abandoned = False  # close() gave up waiting: exit at the next chance
        self._dead = False  # a refused essential task: nothing more goes to this tracker
        self._wake = False
        self._down_since: float | None = None
        self._sending: str | None = None  # what the thread is sending now, for the give-up message
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name=f"tracker-{tracker.name}", daemon=True)

    # ----- the training side: every call returns at once -----

    def start(self, opened: bool) -> None:
        """Start the thread; `opened=False` (the server was away at the start, already warned about) makes
        opening its first task."""
        if not opened:
            self._queue.appendleft(Task("the run's start", self.tracker.open, essential=True))
            self._down_since = time.monotonic()
        self._thread.start()

    def add_row(self, step: int, values: dict[str, float]) -> None:
        with self._cond:
            if self._dead or self._closing:
                return
            self._queue.append((step, values, time.time()))
            self._rows += 1
            if self._rows > self.max_rows:
                self._drop_oldest_row()
            self._cond.notify()

    def add_task(self, what: str, fn: Callable[[], None]) -> None:
        with self._cond:
            if not self._dead:
                self._queue.append(Task(what, fn))
                self._cond.notify()

    def close(self, timeout: float) -> bool:
        """Send what is queued, waiting at most `timeout` seconds (OUTAGE_CLOSE_S when the tracker is already
        unreachable); False, with a warning naming what was not sent, if it gave up."""
        with self._cond:
            self._closing = self._wake = True
            if self._down_since is not None:
                timeout = min(timeout, OUTAGE_CLOSE_S)
            self._cond.notify_all()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        with self._cond:
            self._abandoned = True
            rows, tasks = self._rows, [e.what for e in self._queue if isinstance(e, Task)]
            sending = self._sending
            self._cond.notify_all()
        if sending is not None and sending.isdigit():
            rows += int(sending)
        elif sending is not None:
            tasks.insert(0, sending)
        t = self.tracker
        log.warning(
            "%s: gave up after %g s; not sent to %s: %d log rows%s. Everything is in the run directory. "
            "Fix: %s (a live but slow server: raise logger.flush_timeout_s)",
            t.name, timeout, t.where(), rows, "".join(f", {what}" for what in tasks), t.fix(),
        )  # fmt: skip
        return False

    @property
    def pending_rows(self) -> int:
        return self._rows

    def _drop_oldest_row(self) -> None:
        for event in self._queue:
            if not isinstance(event, Task):
                self._queue.remove(event)
                self._rows -= 1
                self.dropped += 1
                if self.dropped == 1:
                    log.warning(
                        "%s: more than %d log rows are waiting to be sent; the oldest are dropped from now on",
                        self.tracker.name, self.max_rows,
                    )  # fmt: skip
                return

    # ----- the thread -----

    def _loop(self) -> None:
        while (batch := self._next()) is not None:
            self._send(batch)

    def _next(self) -> list[Row] | Task | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if self._abandoned or self._dead or not self._queue:
                return None
            head = self._queue[0]
            if isinstance(head, Task):
                return self._queue.popleft()  # type: ignore[return-value]
            rows: list[Row] = []
            while self._queue and not isinstance(self._queue[0], Task) and len(rows) < MAX_BATCH_ROWS:
                rows.append(self._queue.popleft())  # type: ignore[arg-type]
            self._rows -= len(rows)
            return rows

    def _send(self, batch: list[Row] | Task) -> None:
        self._sending = batch.what if isinstance(batch, Task) else str(len(batch))
        try:
            self._send_until_done(batch)
        finally:
            self._sending = None

    def _send_until_done(self, batch: list[Row] | Task) -> None:
        delay = min(1.0, self.retry_max_s)
        while True:
            try:
                if isinstance(batch, Task):
                    batch.fn()
                else:
                    self.tracker.log_rows(batch)
            except Exception as e:  # whatever the client raises: classified, never fatal to training
                if not self.tracker.transient(e):
                    self._refused(batch, e)
                    return
                self._outage(e)
                if not self._backoff(delay):
                    return
                delay = min(delay * 2, self.retry_max_s)
                continue
            if self._down_since is not None:
                log.info(
                    "%s: %s is reachable again after %.0f s; sending what was kept",
                    self.tracker.name, self.tracker.where(), time.monotonic() - self._down_since,
                )  # fmt: skip
                self._down_since = None
            return

    def _outage(self, error: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        t = self.tracker
        log.warning(
            "%s: cannot reach %s (%s). Training goes on: what is not sent is kept (up to %d log rows) and "
            "retried in the background. Fix: %s",
            t.name, t.where(), short(error), self.max_rows, t.fix(),
        )  # fmt: skip

    def _refused(self, batch: list[Row] | Task, error: BaseException) -> None:
        what = batch.what if isinstance(batch, Task) else "logging metrics"
        if isinstance(batch, Task) and batch.essential:
            with self._cond:
                self._dead = True
                self._queue.clear()
                self._rows = 0
            log.warning(
                "%s: %s was refused (%s); nothing more is sent to it in this run",
                self.tracker.name,
                what,
                short(error),
            )
        elif what not in self._warned:
            self._warned.add(what)
            log.warning("%s: %s was refused and skipped (%s)", self.tracker.name, what, short(error))

    def _backoff(self, delay: float) -> bool:
        """Wait before a retry; close() cuts the wait short once. False when close() gave up."""
        with self._cond:
            self._cond.wait_for(lambda: self._abandoned or self._wake, timeout=delay)
            self._wake = False
            return not self._abandoned
