"""Tracking the monitored validation metric: best-model selection (`Best`, `improved`) and early stopping."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Best:
    """The selected epoch: its monitored value and validation metrics (`None` before any epoch is chosen).

    Stored as a plain mapping in checkpoints (`monitor.best`) and in metrics.json (`best`)."""

    value: float | None = None
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch, "metrics": self.metrics}

    @classmethod
    def from_state_dict(cls, saved: Mapping[str, Any]) -> Best:
        return cls(value=saved["value"], epoch=saved["epoch"], metrics=dict(saved["metrics"]))


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` in direction `mode` (NaN never improves)."""
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class EarlyStopping:
    """Stops after `patience` epochs without an improvement larger than `min_delta`."""

    def __init__(self, monitor: str, mode: str = "max", patience: int = 5, min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.reason: str | None = None

    def step(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record one epoch's metrics; return True when training should stop."""
        if self.monitor not in metrics:
            raise KeyError(
                f"early stopping monitors {self.monitor!r}, which validation does not report; "
                f"available: {', '.join(sorted(metrics))}"
            )
        value = metrics[self.monitor]
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.reason = (
                f"early stopping: {self.monitor} did not improve by more than {self.min_delta} for "
                f"{self.patience} epochs (best {self.best:.4f} at epoch {self.best_epoch})"
            )
            return True
        return False

    @property
    def stopped(self) -> bool:
        """Whether the patience is used up (also true right after restoring a stopped run's state)."""
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
