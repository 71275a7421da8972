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


@pytest.mark.slow
def test_fifos_in_a_predict_folder_or_list_get_error_rows_instead_of_blocking(
    trained_run: dict[str, Path], tmp_path: Path
) -> None:
    """A FIFO in a predict list, or behind a symlink in a predict folder, blocked predict.py forever."""
    import os
    import shutil
    import threading

    from deepfake.prediction.driver import predict

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.mkfifo(elsewhere / "pipe.mp4")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(next((trained_run["dfdc"] / "real").rglob("*.png")), folder / "ok.png")
    os.mkfifo(folder / "b.mp4")
    (folder / "link.mp4").symlink_to(elsewhere / "pipe.mp4")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'ok.png'}\n{elsewhere / 'pipe.mp4'}\n")
    results: dict[str, list] = {}

    def run(name: str, source: Path) -> None:
        results[name] = predict({"checkpoint": str(trained_run["run"]), "input": str(source), "num_workers": 0,
                                 "output": str(tmp_path / f"{name}.csv")})  # fmt: skip

    for name, source in (("folder", folder), ("list", listing)):
        worker = threading.Thread(target=run, args=(name, source), daemon=True)
        worker.start()
        worker.join(DEADLINE)
        assert not worker.is_alive(), f"predict on the {name} still running after {DEADLINE} s: it blocks"
    fifo = "not a regular file: a FIFO (named pipe); only regular files are read"
    by_name = {Path(r["path"]).name: (r["status"], r["error"]) for r in results["folder"]}
    assert by_name == {"b.mp4": ("error", fifo), "link.mp4": ("error", fifo), "ok.png": ("ok", None)}
    assert [(r["status"], r["error"]) for r in results["list"]] == [("ok", None), ("error", fifo)]
