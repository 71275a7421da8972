"""The checkpoint files of a training run: last.pt, best.pt and the top-k epochs under `<run dir>/checkpoints`.

Reading and writing one file is `deepfake.runs.checkpoint` (below every room that loads a model); this is
the training side, which decides which files exist and keeps the recorded best epoch consistent with them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from deepfake.runs.checkpoint import save_checkpoint, saved_epoch
from deepfake.runs.fileio import copy_atomic, remove_stale_temps
from deepfake.training.early_stopping import Best

log = logging.getLogger("deepfake.checkpoint")  # the name train.log has always shown


class Checkpointer:
    """The files under `<run dir>/checkpoints`: last.pt (the latest state), best.pt and the top-k epochs.

    The state is serialised once, into best.pt for a new best epoch and otherwise into last.pt; the other
    files are atomic copies of it.
    """

    def __init__(self, folder: Path, keep_top_k: int = 0, mode: str = "max") -> None:
        self.folder = folder
        self.keep_top_k = keep_top_k
        self.mode = mode
        self.top_k: list[dict[str, Any]] = []  # [{"value", "epoch"}], best first; carried in checkpoints
        folder.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_temps(folder):
            log.info("removed %s, left by an interrupted write", p)

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def save_last(self, state: dict[str, Any], as_best: bool = False) -> Path:
        """Save last.pt; for a new best epoch, best.pt first and last.pt as its copy, so no file ever
        records a best epoch (the monitor state inside last.pt) before best.pt is durable."""
        if not as_best:
            return save_checkpoint(self.last, state)
        save_checkpoint(self.best, state)
        copy_atomic(self.best, self.last)
        return self.last

    def reconcile_best(self, best: Best, source: Path, train_state: dict[str, Any]) -> Best:
        """On resume: make the recorded best epoch's best.pt exist in this folder, or forget that best.

        A run killed (or out of disk) between best.pt and last.pt, or a new run started from another run's
        checkpoint, records a best epoch without a matching best.pt here. When the checkpoint resumed from
        is that epoch, it becomes best.pt; otherwise the best is reset and the next validated epoch is it.
        """
        epoch = best.epoch
        if epoch is None or saved_epoch(self.best) == epoch:
            return best
        if train_state.get("epoch") == epoch and train_state.get("batch_in_epoch", 0) == 0:
            copy_atomic(source, self.best)
            log.info("best.pt (epoch %d) written from %s", epoch, source)
            return best
        log.warning(
            "no best.pt for the recorded best epoch %d in %s (the run stopped while writing it); the best is "
            "reset, and the next validated epoch becomes best.pt",
            epoch,
            self.folder,
        )
        return Best()

    def copy_last(self, name: str) -> Path:
        dest = self.folder / name
        copy_atomic(self.last, dest)
        return dest

    def epoch_file(self, epoch: int) -> str:
        return f"epoch_{epoch:03d}.pt"

    def enters_top_k(self, value: float | None, epoch: int) -> bool:
        """Record `value` for `epoch` when it ranks among the k best; the caller then saves it."""
        if self.keep_top_k <= 0 or value is None or math.isnan(value):
            return False
        ranked = sorted(
            [*self.top_k, {"value": float(value), "epoch": epoch}],
            key=lambda e: -e["value"] if self.mode == "max" else e["value"],
        )
        kept = ranked[: self.keep_top_k]
        entered = any(e["epoch"] == epoch for e in kept)
        self.top_k = kept
        return entered

    def prune_top_k(self) -> None:
        """Remove epoch files that fell out of the top k (after the new one is safely written)."""
        keep = {self.epoch_file(e["epoch"]) for e in self.top_k}
        for p in self.folder.glob("epoch_*.pt"):
            if p.name not in keep:
                p.unlink(missing_ok=True)
