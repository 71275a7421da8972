"""What each tracker implements (the run it is told about: `run_info.RunInfo`)."""

from __future__ import annotations

from pathlib import Path

#: One log row: the optimizer step, its scalars, and the wall-clock time they were measured (seconds).
Row = tuple[int, dict[str, float], float]


class Tracker:
    """One tracker backend. `open` runs once on the main thread at the start (and again on the sender's thread
    while its server is unreachable); every other method runs on the tracker's `Sender` thread. Any method may
    raise: `transient` tells a connection problem (keep the call, retry later) from a refusal (drop it, warn)."""

    name = ""

    def where(self) -> str:
        """Where the data goes, for messages (a server address, a folder)."""
        return ""

    def fix(self) -> str:
        """What to do when `where` cannot be reached."""
        return ""

    def open(self) -> None:
        """Create the tracker's run, or continue `RunInfo.resumed`'s, with the params and tags."""

    def log_rows(self, rows: list[Row]) -> None:
        """Scalars of several steps at once (the sender batches what queued since its last send)."""

    def log_files(self, files: list[tuple[Path, str]]) -> None:
        """Files at the end: (local file, folder inside the tracker's run, "" for its root)."""

    def finish(self, outcome: str) -> None:
        """End the tracker's run: `outcome` is end, interrupt, abort or crash (the Trainer's)."""

    def ids(self) -> dict[str, str]:
        """What a resumed run needs to continue this tracker's run (empty until `open` succeeded)."""
        return {}

    def transient(self, error: BaseException) -> bool:
        return False
