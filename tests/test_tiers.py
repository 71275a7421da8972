"""The test tiers' guards (tests/conftest.py): the hubs are offline from import on, and an unmarked test cannot
start a subprocess, so the fast tier (`-m "not slow and not cli"`) stays in-process."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest


def test_huggingface_hub_read_offline_at_import() -> None:
    """huggingface_hub caches the flag when imported; it must already say offline (else hub calls time out)."""
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE is True


def test_an_unmarked_test_cannot_start_python() -> None:
    with pytest.raises(
        RuntimeError, match=r"test_an_unmarked_test_cannot_start_python starts `python.*` .*mark it"
    ):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(RuntimeError, match=r"starts `torchrun`"):
        subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--help"], capture_output=True)
    with pytest.raises(RuntimeError, match=r"starts `tensorboard`"):
        subprocess.run(["tensorboard", "--version_tb"], capture_output=True)


def test_an_unmarked_test_cannot_spawn_an_interpreter() -> None:
    """torch.multiprocessing.spawn and the spawn start method start Python without subprocess.Popen."""
    proc = multiprocessing.get_context("spawn").Process(target=print)
    with pytest.raises(RuntimeError, match=r"starts `python.*` through multiprocessing spawn: mark it"):
        proc.start()


def test_an_unmarked_test_may_run_system_tools() -> None:
    """Library code runs git (the run's provenance), uname (platform) and ldconfig (ctypes) by itself, in
    milliseconds, whichever test first imports it; those stay allowed."""
    assert subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.startswith(
        "git version"
    )
    assert subprocess.run(["uname", "-s"], capture_output=True, text=True).stdout.strip()


@pytest.mark.cli
def test_a_cli_test_may_start_python() -> None:
    proc = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, check=True)
    assert proc.stdout == "42\n"
