"""The Trainer's observer list: one more observer is a class and a line, and it sees every event in order."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from deepfake.training.engine import TrainState
from deepfake.training.observers import EpochEnd, Observer, Run
from deepfake.training.runner import Trainer
from tests.conftest import FAST


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_step(self, run: Run, state: TrainState) -> None:
        self.events.append(("step", state.global_step))

    def on_epoch_end(self, run: Run, end: EpochEnd) -> None:
        # Observers before this one have run: the epoch's checkpoint is on disk and records this epoch.
        assert (run.run_dir / "checkpoints" / "last.pt").is_file()
        self.events.append(("epoch", end.epoch, end.global_step, end.improved))

    def on_close(self, run: Run, outcome: str) -> None:
        self.events.append(("close", outcome, run.stop_reason))


@pytest.mark.slow
def test_an_added_observer_sees_each_step_epoch_and_the_close(
    compose_cfg: Any, folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    setup_observers = Trainer._setup_observers

    def with_recorder(self: Trainer, *parts: Any) -> Any:
        built = setup_observers(self, *parts)
        return dataclasses.replace(built, observers=[*built.observers, recorder])

    monkeypatch.setattr(Trainer, "_setup_observers", with_recorder)
    from train import train

    train(compose_cfg([*FAST, "data=folder", f"data.root={folder_dataset}", f"base_path={tmp_path}"]))
    (run,) = (tmp_path / "outputs").glob("*/*")
    metrics = json.loads((run / "metrics.json").read_text())
    steps = metrics["global_step"]
    epochs = metrics["epochs_completed"]
    assert epochs >= 1 and steps >= epochs
    assert [e for e in recorder.events if e[0] == "step"] == [("step", s) for s in range(1, steps + 1)]
    ends = [e for e in recorder.events if e[0] == "epoch"]
    assert [e[1] for e in ends] == list(range(1, epochs + 1))
    assert ends[-1][2] == steps and ends[0][3] is True  # the first validated epoch is the first best
    assert recorder.events[-1] == ("close", "end", "completed")
