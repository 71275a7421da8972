"""A run whose intra-op thread count is chosen by timing resumes bit-identical: from a checkpoint taken during
the probe (the same counts replayed for the same steps, then the same choice) and from one taken after it (the
chosen count restored)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from deepfake.system.interrupt import TrainingInterrupted
from deepfake.system.thread_probe import BLOCK, ROUNDS, ThreadChooser
from deepfake.training.runner import train
from tests.conftest import make_folder_dataset
from tests.runs import make_config, run_dir_of
from tests.test_resume import assert_same, interrupt_at

STEPS = 16  # 32 training images, batch 2: the probe (1 warm-up + 12 steps) ends inside the epoch
PROBING = {
    "training.num_epochs": 1,
    "training.batch_size": 2,
    "training.grad_accum_steps": 1,
    "hardware.deterministic": False,  # deterministic mode keeps one count
    "hardware.num_threads": None,
    "training.checkpoint.every_n_steps": None,  # the interrupts make the checkpoints under test
    "backup.enabled": False,
    "calibration": "none",
}
COSTS = {1: 0.05, 2: 0.03}  # seconds per step at each count, on the chooser's clock


@pytest.fixture
def timed_by_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cores, and a clock on which a step takes COSTS[the count it ran at]: every run chooses alike."""
    now = [0.0]

    def clock() -> float:
        now[0] += COSTS[torch.get_num_threads()]  # read once per step, before the next count is set
        return now[0]

    chooser: Callable[..., ThreadChooser] = functools.partial(ThreadChooser, clock=clock)
    monkeypatch.setattr("deepfake.system.hardware.ThreadChooser", chooser)
    monkeypatch.setattr("deepfake.system.hardware.available_cores", lambda: 2)
    monkeypatch.setattr("deepfake.system.hardware.TORCH_THREADS", 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)


@pytest.mark.slow
def test_a_probed_run_resumes_bit_identical(
    monkeypatch: pytest.MonkeyPatch, timed_by_count: None, tmp_path: Path
) -> None:
    data = make_folder_dataset(tmp_path / "data", videos=8, frames=2)
    train(make_config(tmp_path / "reference", data, **PROBING))
    reference = torch.load(run_dir_of(tmp_path / "reference") / "checkpoints" / "last.pt", weights_only=True)
    threads = reference["train_state"]["threads"]
    assert (threads["count"], threads["plan"], threads["candidates"], threads["dropped"]) == (
        2,
        [],
        [1, 2],
        [1],
    )
    log = (run_dir_of(tmp_path / "reference") / "train.log").read_text()
    # 1 thread came out 1.67x slower after its first block: dropped, so the probe ended after one round
    line = "CPU threads: 2 intra-op (fastest; median per step over 6 steps: 1 thread 50 ms, 2 threads 30 ms)"
    assert line in log

    run = None
    for stop_after in (6, STEPS - 2):  # inside the probe, then with the count chosen
        with monkeypatch.context() as patch:
            interrupt_at(patch, stop_after)
            resume = {"resume": str(run)} if run else {}
            with pytest.raises(TrainingInterrupted):
                train(make_config(tmp_path / "stopped", data, **PROBING, **resume))
        run = run or run_dir_of(tmp_path / "stopped")
        saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]
        assert saved["global_step"] == stop_after
        if stop_after == 6:  # steps 2-6 were the probe's first five (2, the running count, first): step 7
            threads = saved["threads"]  # times 1 thread once more, then 1 is dropped and the probe ends
            assert (threads["units"], threads["count"], threads["plan"][0]) == (5, 1, [1, True])
            assert len(threads["samples"][2]) == BLOCK - 1 and len(threads["samples"][1]) == 1
    train(make_config(tmp_path / "stopped", data, **PROBING, resume=str(run)))
    resumed = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "ema", "monitor"):
        assert_same(resumed[key], reference[key], key)
    assert resumed["train_state"]["threads"]["count"] == 2
    assert 1 + ROUNDS * BLOCK < STEPS - 2  # the second stop comes after the probe
