"""Nothing a user hands in can hang a run (issue 23, item 2): a worker's error, a FIFO where a file should
be, a pathological video, a sweep's persistent workers. Each runs under a deadline, so a regression fails
instead of stalling the suite."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

DEADLINE = 120  # s: each command here ends in well under a minute unless it hangs


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
@pytest.mark.cli
def test_a_workers_unreadable_image_ends_evaluate_with_one_error_line(
    trained_run: dict[str, Path], tmp_path: Path
) -> None:
    """A manifest row pointing at a text file: evaluate.py printed the worker's traceback and never exited."""
    images = sorted((trained_run["celebdf"] / "test").rglob("*.png"))[:6]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n" * 10)
    manifest = tmp_path / "set" / "manifest.csv"
    manifest.parent.mkdir()
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "video"])
        for i, p in enumerate([*images, bad]):
            w.writerow([p, i % 2, "test", p.parent.name])
    done = run_cli(
        ["evaluate.py", f"checkpoint={trained_run['run']}", f"data.test_sets=[{manifest}]",
         "data.num_workers=2", f"eval.out_dir={tmp_path / 'eval'}"],
        cwd=ROOT, timeout=DEADLINE,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_lines(done.stderr) == [
        f"error: cannot read image {bad}: cannot identify image file '{bad}'. Fix or remove it (its manifest "
        "row or file) and run again."
    ]
    assert "Traceback" not in done.stderr and "Caught DataError" not in done.stderr
