"""The chosen trackers of one run: built and opened at the start, fed by the Trainer, closed at the end.

`open_trackers` imports only the chosen backends, so a missing package is one error naming its extra. Each
tracker then opens once on the main thread, before any training: a refusal (a bad URI, no login, a deleted
experiment) is a `UserError`; an unreachable server is a warning, and its sender keeps trying in the
background. The ids of the trackers' runs go to `<run dir>/trackers.json` as soon as they exist, and into every
checkpoint (`Trackers.state_dict`), so a resumed run continues the same tracker runs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepfake.errors import UserError
from deepfake.runs.fileio import atomic_write
from deepfake.tracking.run_info import RunInfo
from deepfake.tracking.sender import Sender, short
from deepfake.tracking.tracker import Tracker

log = logging.getLogger("deepfake.tracking")

IDS_FILE = "trackers.json"
#: The trackers this room runs, in the order they open; TensorBoard is `reporting.tensorboard`.
NAMES = ("csv", "mlflow", "wandb")
#: Run files sent at the end, when they exist: (path in the run dir, or a glob; folder in the tracker's run).
RUN_FILES = (
    ("metrics.json", ""),
    ("model_summary.json", ""),
    ("hardware.json", ""),
    ("report.html", ""),
    ("MODEL_CARD.md", ""),
    ("train.log", ""),
    ("plots/*.png", "plots"),
    ("eval/*/metrics.json", "eval/{set}"),
    ("eval/*/*.png", "eval/{set}"),
)


#: The package each tracker imports, and the extra that installs it.
PACKAGES = {"mlflow": ("mlflow", "deepfake[mlflow]"), "wandb": ("wandb", "deepfake[wandb]")}


def check_trackers(logger_cfg: Any) -> None:
    """What can be refused before anything is built: a chosen tracker's missing package (naming its extra) and
    an MLflow tracking URI MLflow would misread. Nothing is imported or contacted."""
    for name, (module, extra) in PACKAGES.items():
        if logger_cfg.get(name) is not None and importlib.util.find_spec(module) is None:
            raise UserError(
                f"logger={name} needs the {module} package, which is not installed: pip install '{extra}'"
            )
    if logger_cfg.get("mlflow") is not None and logger_cfg.mlflow.tracking_uri:
        from deepfake.tracking.mlflow_tracker import check_uri

        check_uri(logger_cfg.mlflow.tracking_uri)


def _backend(name: str) -> Callable[[Any, RunInfo], Tracker]:
    if name == "csv":
        from deepfake.tracking.csv_tracker import CsvTracker

        return CsvTracker
    if name == "mlflow":
        from deepfake.tracking.mlflow_tracker import MlflowTracker

        return MlflowTracker
    from deepfake.tracking.wandb_tracker import WandbTracker

    return WandbTracker


class Trackers:
    """What the Trainer holds: every method queues and returns at once; `close` waits (bounded) at the end."""

    def __init__(
        self,
        senders: list[Sender],
        run_dir: Path | None = None,
        log_model: bool = False,
        flush_timeout_s: float = 60.0,
    ) -> None:
        self.senders = senders
        self.run_dir = run_dir
        self.log_model = log_model
        self.flush_timeout_s = flush_timeout_s
        self._lock = threading.Lock()
        self._closed = False

    @property
    def names(self) -> list[str]:
        return [s.tracker.name for s in self.senders]

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """A log step's train scalars or a hardware reading (the loop's and the sampler's `fan_out` sink)."""
        for sender in self.senders:
            sender.add_row(step, dict(values))

    def epoch(self, epoch: int, step: int, values: dict[str, float]) -> None:
        """An epoch's validation metrics (and its train summary), at the step it ended."""
        for sender in self.senders:
            sender.add_row(step, {**values, "epoch": float(epoch)})

    def state_dict(self) -> dict[str, dict[str, str]]:
        """The trackers' run ids, saved in every checkpoint."""
        return {s.tracker.name: ids for s in self.senders if (ids := s.tracker.ids())}

    def write_ids(self) -> None:
        if self.run_dir is None:
            return
        with self._lock:
            ids = self.state_dict()
            if ids:
                text = json.dumps(ids, indent=2)
                atomic_write(self.run_dir / IDS_FILE, lambda f: f.write(text.encode()))

    def close(self, outcome: str, send_files: bool = True) -> None:
        """Send the run's files, end every tracker's run and wait for it, `logger.flush_timeout_s` at most."""
        if self._closed or not self.senders:
            return
        self._closed = True
        files = run_files(self.run_dir, self.log_model) if send_files and self.run_dir is not None else []
        for sender in self.senders:
            tracker = sender.tracker
            if files:
                sender.add_task("the run's files", lambda t=tracker: t.log_files(files))
            sender.add_task("the run's end", lambda t=tracker: t.finish(outcome))
        deadline = time.monotonic() + self.flush_timeout_s
        for sender in self.senders:
            sender.close(max(deadline - time.monotonic(), 0.0))


def run_files(run_dir: Path, log_model: bool) -> list[tuple[Path, str]]:
    """The files a tracker gets at the end: what exists of RUN_FILES, and best.pt when asked."""
    found: list[tuple[Path, str]] = []
    for pattern, folder in RUN_FILES:
        for path in sorted(run_dir.glob(pattern)):
            if path.is_file():
                found.append((path, folder.format(set=path.parent.name)))
    best = run_dir / "checkpoints" / "best.pt"
    if log_model and best.is_file():
        found.append((best, "checkpoints"))
    return found


def saved_ids(run_dir: Path, checkpoint: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """The tracker runs a resumed run continues: `trackers.json` (runs made after the checkpoint included),
    overlaid by the checkpoint's own record."""
    ids: dict[str, dict[str, str]] = {}
    path = run_dir / IDS_FILE
    try:
        loaded = json.loads(path.read_text()) if path.is_file() else {}
        if isinstance(loaded, dict):
            ids.update({k: v for k, v in loaded.items() if isinstance(v, dict)})
    except (OSError, ValueError) as e:
        log.warning("could not read %s (%s); trackers start new runs", path, e)
    saved = (checkpoint or {}).get("trackers")
    if isinstance(saved, dict):
        ids.update({k: v for k, v in saved.items() if isinstance(v, dict)})
    return {k: {str(a): str(b) for a, b in v.items()} for k, v in ids.items()}


def open_trackers(logger_cfg: Any, info: RunInfo) -> Trackers:
    """Build and open the chosen trackers; UserError (with the others ended) when one refuses."""
    trackers = [_backend(name)(logger_cfg[name], info) for name in NAMES if logger_cfg.get(name) is not None]
    result = Trackers([], info.run_dir, logger_cfg.log_model, logger_cfg.flush_timeout_s)
    try:
        for tracker in trackers:
            opened = _open(tracker)
            sender = Sender(tracker)
            result.senders.append(sender)
            sender.start(opened)
            if opened:
                result.write_ids()
            else:  # the thread opens it later: record the ids then
                sender.add_task("the run id", result.write_ids)
    except UserError:
        result.close("abort", send_files=False)  # the ones already opened are marked failed
        raise
    if result.senders:
        log.info("trackers: %s", ", ".join(f"{s.tracker.name} ({s.tracker.where()})" for s in result.senders))
    return result


def _open(tracker: Tracker) -> bool:
    """Open on the main thread: True when opened, False when its server is away (the sender retries)."""
    try:
        tracker.open()
        return True
    except UserError:
        raise
    except Exception as e:  # the backend's own error types: a connection problem, or a refusal
        if tracker.transient(e):
            log.warning(
                "%s: cannot reach %s at the start (%s). Training goes on and the run is created in the "
                "background once it answers. Fix: %s",
                tracker.name, tracker.where(), short(e), tracker.fix(),
            )  # fmt: skip
            return False
        raise UserError(f"logger={tracker.name}: {tracker.where()} refused the run: {short(e)}") from None
