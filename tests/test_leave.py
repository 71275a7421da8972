"""`deepfake.cli.leave`: the entry points end without the interpreter's teardown, and lose nothing a normal
exit would have done first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from deepfake.cli import leave

out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late() -> None:
    time.sleep(0.3)
    (out / "thread").write_text("joined")
threading.Thread(target=late).start()  # not a daemon: a normal exit waits for it, so must leave
print("buffered", end="")  # a pipe: block-buffered until flushed
leave({code})
"""


@pytest.mark.cli
@pytest.mark.parametrize(("code", "status", "stderr"), [("3", 3, ""), ("None", 0, ""), ("'bye'", 1, "bye\n")])
def test_leave_joins_threads_runs_exit_handlers_and_flushes(
    tmp_path: Path, code: str, status: int, stderr: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(code=code), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (status, "buffered", stderr)
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "joined"
