"""The intra-op thread count and OpenMP wait policy chosen from cores, loader workers, device and override."""

from __future__ import annotations

import logging

import pytest
import torch

from deepfake.system.hardware import HardwareManager
from deepfake.system.threads import ThreadPlan, thread_plan, wait_policy_note


@pytest.mark.parametrize(
    ("cores", "workers", "device", "override", "threads", "passive"),
    [
        (2, 2, "cpu", None, 1, False),  # the default command on a 2-core machine: the case of issue 19
        (2, 0, "cpu", None, 2, False),  # no workers: every core computes
        (16, 4, "cpu", None, 12, False),
        (4, 8, "cpu", None, 1, False),  # more workers than cores: still one thread, nothing to spin
        (8, 8, "cuda", None, 1, False),
        (8, 2, "cuda", None, 6, False),
        (2, 2, "cpu", 2, 2, True),  # an override that oversubscribes: threads should sleep when idle
        (16, 2, "cpu", 4, 4, False),
        (1, 0, "cpu", None, 1, False),
    ],
)
def test_thread_plan(
    cores: int, workers: int, device: str, override: int | None, threads: int, passive: bool
) -> None:
    plan = thread_plan(cores, workers, device, override)
    assert (plan.threads, plan.passive) == (threads, passive)


def test_thread_plan_never_exceeds_torchs_own_choice() -> None:
    """16 logical cores on 8 physical ones, or OMP_NUM_THREADS=1 (torchrun's default): torch's count caps it."""
    assert thread_plan(16, 0, "cpu", None, ceiling=8).threads == 8
    assert thread_plan(16, 4, "cpu", None, ceiling=1).threads == 1
    assert thread_plan(16, 4, "cpu", None, ceiling=8).reason.endswith("capped at torch's default of 8")
    assert thread_plan(16, 4, "cpu", 12, ceiling=8).threads == 12  # an explicit override still wins


def test_thread_plan_says_why() -> None:
    assert thread_plan(2, 2, "cpu", None).reason == "2 core(s) - 2 loader worker(s) (at least 1)"
    assert (
        thread_plan(8, 2, "cuda", None).reason
        == "8 core(s) - 2 loader worker(s); the cuda device does the model's compute"
    )
    assert thread_plan(8, 2, "cpu", 3).reason == "hardware.num_threads=3"


def test_wait_policy_note_only_when_threads_would_spin() -> None:
    quiet = ThreadPlan(1, False, "")
    busy = ThreadPlan(2, True, "")
    assert wait_policy_note(quiet, {}) is None
    assert wait_policy_note(busy, {"OMP_WAIT_POLICY": "passive"}) is None
    note = wait_policy_note(busy, {})
    assert note is not None and "start with OMP_WAIT_POLICY=PASSIVE" in note


def test_configure_applies_and_logs_the_plan(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("deepfake.system.hardware.available_cores", lambda: 4)
    monkeypatch.setattr("deepfake.system.hardware.TORCH_THREADS", 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    with caplog.at_level(logging.INFO, logger="deepfake.hardware"):
        plan = HardwareManager("cpu").configure(loader_workers=3)
    assert plan.threads == 1 and torch.get_num_threads() == 1
    assert (
        "CPU threads: 1 intra-op to start (4 core(s) - 3 loader worker(s)), then timed against 1, 2, 3, 4"
        in (caplog.text)
    )
    HardwareManager("cpu", num_threads=2).configure(loader_workers=3)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun ranks share the 4 cores
    assert HardwareManager("cpu").configure(loader_workers=1).threads == 1
