"""predict.py on collections: rows written as they are scored, resume after kill -9, shards, formats, scale.

The fast tests exercise the row files, the input sources and the shard plan without a model; the others share
the session's trained tiny run (tests/conftest.py) and the session's PyAV test videos.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake.errors import UserError
from deepfake.evaluation.from_predictions import metrics_from_predictions
from deepfake.prediction import report
from deepfake.prediction.driver import predict
from deepfake.prediction.plan import Selection
from deepfake.prediction.sources import ManifestInputs, open_source
from deepfake.prediction.store import PAUSE_ENV
from deepfake.runs.rowfiles import RowAppender, read_document, records, write_document
from tests.conftest import ROOT
from tests.videos import VideoSet

COLUMNS = ("path", "prob", "status", "error", "label")


# -- row files, sources and shard plans: no model ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_torn_last_row_is_skipped_by_readers_and_cut_by_the_next_writer(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"rows.{kind}"
    odd = 'a "quoted",\nmultiline message'  # CSV quoting across lines must not split the record
    rows = [{"path": "a.png", "prob": 0.25, "status": "ok", "error": None, "label": 1},
            {"path": "b\udcff.png", "prob": None, "status": "error", "error": odd, "label": 0}]  # fmt: skip
    with RowAppender(path, kind, COLUMNS) as out:
        out.write(rows[0])
        out.write(rows[1])
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(whole[-40:-5])  # a third row, torn by a kill in the middle of its write
    back = [r.row for r in records(path, kind)]
    if kind == "csv":  # text cells, None for an empty one
        assert back[0] == {"path": "a.png", "prob": "0.25", "status": "ok", "error": None, "label": "1"}
        assert back[1]["path"] == "b\udcff.png" and back[1]["error"] == odd and back[1]["prob"] is None
    else:
        assert back == rows
    with RowAppender(path, kind, COLUMNS) as out:  # a resumed run cuts the torn tail, then appends
        out.write({**rows[0], "path": "c.png"})
    assert path.read_bytes() == whole + path.read_bytes()[len(whole) :]
    assert [r.row["path"] for r in records(path, kind)] == ["a.png", "b\udcff.png", "c.png"]


def test_parquet_and_json_documents_round_trip_types_nulls_and_metadata(tmp_path: Path) -> None:
    rows = [{"path": f"v{i}.mp4", "prob": i / 7 if i % 3 else None, "status": "ok", "error": None,
             "label": i % 2} for i in range(25)]  # fmt: skip
    types = {"prob": "float", "label": "int"}
    meta = {"threshold": 0.5, "aggregation": {"frames": "mean"}}
    for kind in ("parquet", "json", "jsonl"):
        out = tmp_path / f"p.{kind}"
        assert write_document(out, kind, iter(rows), COLUMNS, types, meta) == 25
        got_meta, back = read_document(out)
        assert list(back) == rows
        assert got_meta == (meta if kind != "jsonl" else {})
    import pyarrow.parquet as pq

    schema = pq.read_schema(tmp_path / "p.parquet")
    assert (str(schema.field("prob").type), str(schema.field("label").type)) == ("double", "int64")
    (tmp_path / "torn.parquet").write_bytes((tmp_path / "p.parquet").read_bytes()[:-20])
    with pytest.raises(UserError, match=r"not a complete Parquet file .*\.parts/ journal"):
        read_document(tmp_path / "torn.parquet")


def test_sources_walk_in_sorted_order_and_shards_split_distinct_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for name in ("a-b/x.png", "a/y.mp4", "a.png", "a/z/w.jpg", "b.txt", "a/c.PNG"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    walked = [e.path for e in open_source(folder).entries()]
    assert walked == sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in (".png", ".mp4", ".jpg"))
    listing = tmp_path / "lists" / "l.txt"
    listing.parent.mkdir()
    listing.write_text("# a comment\n../in/a.png\n\n../in/a-b/x.png\n../in/./a.png\n/abs/q.png\n")
    entries = list(open_source(listing).entries())
    assert [e.path for e in entries] == [str(listing.parent / "../in/a.png"), str(listing.parent / "../in/a-b/x.png"),
                                         str(listing.parent / "../in/a.png"), "/abs/q.png"]  # fmt: skip
    assert [e.line for e in entries] == [2, 4, 5, 6]
    shards = [Selection(open_source(listing), i, 2) for i in range(2)]
    plans = [s.plan(done={"/abs/q.png"}) for s in shards]
    assert [(p.inputs, p.duplicates, p.mine, p.done) for p in plans] == [(3, 1, 2, 1), (3, 1, 1, 0)]
    assert plans[0].examples == [f"{listing.parent / '../in/./a.png'} (lines 2 and 5)"]
    mine = [[e.path for e in s.mine()] for s in shards]
    assert mine == [[entries[0].path, "/abs/q.png"], [entries[1].path]]
    assert [e.path for e in shards[0].todo(done={"/abs/q.png"})] == [entries[0].path]


def test_a_manifest_carries_its_labels_and_a_bad_one_is_named(tmp_path: Path) -> None:
    manifest = tmp_path / "faces" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,label,video,method\nv1/0.png,fake,v1,Deepfakes\nv2/0.png,0,v2,\n")
    source = open_source(manifest)
    assert isinstance(source, ManifestInputs) and source.carried == ("label", "video", "method")
    first, second = source.entries()
    assert first.path == str(manifest.parent / "v1" / "0.png") and first.line == 2
    assert first.carried == {"label": 1, "video": "v1", "method": "Deepfakes"}
    assert second.carried == {"label": 0, "video": "v2", "method": None}
    manifest.write_text("path,label\nv1/0.png,maybe\n")
    with pytest.raises(UserError, match=r"manifest .*manifest\.csv line 2: label 'maybe' is not 0, 1"):
        list(open_source(manifest).entries())
    (tmp_path / "other.csv").write_text("file,label\nx.png,0\n")
    with pytest.raises(UserError, match=r"a CSV without a `path` column \(its header: file,label\)"):
        open_source(tmp_path / "other.csv")


def test_the_summary_keeps_counts_the_slowest_and_the_first_to_look_at() -> None:
    summary = report.Summary()
    for i in range(30):
        status = "error" if i % 10 == 3 else ("no_face" if i == 7 else "ok")
        row = {"path": f"v{i}.mp4", "status": status, "pred": None if status == "error" else "fake",
               "error": "bad" if status == "error" else None, "frames_used": 3 if i == 8 else 32}  # fmt: skip
        summary.add(row, seconds=float(i * 7 % 30), frames_decoded=32)  # 0-29 s, each once
    plan = report.Plan(inputs=40, duplicates=2, examples=["v1.mp4 (lines 2 and 9)"], mine=40, done=10)
    lines = summary.lines(plan, seconds=60, output="p.csv", threshold=0.5)
    assert lines[0] == ("scored 30 input(s) in 1m00s, 0.5/s: ok 26, no_face 1, error 3; 10 already in p.csv, "
                        "skipped; 27 fake, 0 real at threshold 0.5")  # fmt: skip
    assert lines[1] == "2 repeated input(s) scored once: v1.mp4 (lines 2 and 9) ..."
    assert lines[2] == "slowest: v17.mp4 29.00s, v4.mp4 28.00s, v21.mp4 27.00s, v8.mp4 26.00s, v25.mp4 25.00s"
    assert lines[3].startswith("5 input(s) need a look: v3.mp4 (error: bad); v7.mp4 (no face found); ")
    assert "v8.mp4 (a face in only 3 of 32 frames)" in lines[3]


# -- end to end, with the session's trained tiny run -------------------------------------------------------


def _inputs(trained_run: dict, tmp_path: Path, videos: VideoSet | None = None) -> Path:
    """A list of the flat test set's 25 images, a missing file and a repeat (and videos, if given)."""
    images = sorted(str(p) for p in trained_run["dfdc"].rglob("*") if p.suffix in (".png", ".jpg"))
    extra = [str(videos.pan), str(videos.no_face)] if videos else []
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join([*images[:12], *extra, "missing.png", *images[12:], images[0]]) + "\n")
    return listing


def _cfg(trained_run: dict, listing: Path, output: Path, **extra: object) -> dict:
    return {"checkpoint": str(trained_run["run"]), "input": str(listing), "output": str(output),
            "num_workers": 0, "progress": "off", "extraction": {"frames_per_video": 2}, **extra}  # fmt: skip


def _probs(rows: list[dict]) -> dict[str, float | None]:
    return {r["path"]: r["prob"] for r in rows}


@pytest.mark.slow
@pytest.mark.cli
def test_kill_9_mid_run_then_the_same_command_gives_every_input_once(
    trained_run: dict, tmp_path: Path
) -> None:
    listing = _inputs(trained_run, tmp_path)
    reference = list(predict(_cfg(trained_run, listing, tmp_path / "ref.csv")))
    out = tmp_path / "preds.csv"
    command = [sys.executable, str(ROOT / "predict.py"), f"checkpoint={trained_run['run']}", f"input={listing}",
               f"output={out}", "num_workers=0", "progress=off"]  # fmt: skip
    env = {**os.environ, PAUSE_ENV: "0.5"}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(list(records(out, "csv"))) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_with = len(list(records(out, "csv")))
    assert 4 <= killed_with < len(reference), (
        killed_with,
        proc.stderr.read().decode()[-2000:] if proc.stderr else "",
    )
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"{killed_with} already scored, {len(reference) - killed_with} to score"
        in again.stdout + again.stderr
    )
    _, rows = read_document(out)
    rows = list(rows)
    assert [r["path"] for r in rows] == [r["path"] for r in reference]  # every input once, in input order
    for path, prob in _probs(reference).items():
        got = next(float(r["prob"]) if r["prob"] else None for r in rows if r["path"] == path)
        assert got == (None if prob is None else pytest.approx(prob, abs=1e-6)), path


@pytest.mark.slow
def test_two_shards_give_the_rows_of_one_run_in_parquet_with_per_face_rows(
    trained_run: dict, test_videos: VideoSet, tmp_path: Path
) -> None:
    listing = _inputs(trained_run, tmp_path, test_videos)
    one = predict(_cfg(trained_run, listing, tmp_path / "one.jsonl", per_frame=True))
    assert one.plan.duplicates == 1 and len(one) == one.plan.inputs == 28
    out = tmp_path / "sharded.parquet"
    first = predict(_cfg(trained_run, listing, out, per_frame=True, shard={"index": 0, "count": 2}))
    assert first.missing == 14 and not out.exists()  # the other shard has not run yet
    assert [r["path"] for r in first] == [r["path"] for r in list(one)[0::2]]  # its own part, round-robin
    second = predict(_cfg(trained_run, listing, out, per_frame=True, shard={"index": 1, "count": 2}))
    assert second.missing == 0 and out.is_file()  # the last to finish merged both parts, in input order
    assert list(second) == list(one)
    assert [r["status"] for r in one if "coffee" in r["path"] or "missing" in r["path"]] == [
        "no_face",
        "error",
    ]
    frames = (tmp_path / "one.frames.csv").read_text()
    assert (tmp_path / "sharded.frames.csv").read_text() == frames and "pan.mp4" in frames
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(out).metadata[b"deepfake"])
    assert meta["settings"] == one[0]["settings"] and meta["threshold"] == 0.5


@pytest.mark.slow
def test_changed_settings_are_refused_and_a_torn_last_row_is_scored_again(
    trained_run: dict, tmp_path: Path
) -> None:
    listing = _inputs(trained_run, tmp_path)
    out = tmp_path / "preds.jsonl"
    first = list(predict(_cfg(trained_run, listing, out)))
    before = out.read_bytes()
    with pytest.raises(UserError) as refused:
        predict(_cfg(trained_run, listing, out, tta="flip", threshold=0.3))
    assert str(refused.value) == (
        f'{out} was scored with other settings (tta: "none" -> "flip"; threshold: 0.5 -> 0.3); '
        "pass overwrite=true to score everything again into it, or output=<another file>"
    )
    assert out.read_bytes() == before  # nothing saved is lost
    lines = before.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])  # killed in the middle of the last row's write
    _, partial = read_document(out)
    assert [r["path"] for r in partial] == [r["path"] for r in first[:-1]]  # a reader skips the torn row
    again = predict(_cfg(trained_run, listing, out))
    assert again.plan.done == len(first) - 1 and again.summary.scored == 1
    assert out.read_bytes() == before  # the torn row cut, its input scored again to the same bytes
    flipped = predict(_cfg(trained_run, listing, out, tta="flip", overwrite=True))
    assert flipped.plan.done == 0 and len(flipped) == len(first)
    assert {r["settings"] for r in flipped} != {r["settings"] for r in first}


@pytest.mark.slow
def test_metrics_from_bulk_output_equal_evaluate_on_the_same_set(trained_run: dict, tmp_path: Path) -> None:
    """Scoring a labelled manifest, then one command, gives evaluate.py's numbers for that set."""
    import csv

    with open(trained_run["run"] / "eval" / "dfdc" / "predictions.csv", newline="") as f:
        evaluated = list(csv.DictReader(f))
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "video", "method"])
        writer.writerows([r["path"], r["label"], r["video"], r["method"]] for r in evaluated)
    out = tmp_path / "preds.csv"
    rows = predict(_cfg(trained_run, manifest, out))
    assert [r["label"] for r in rows] == [int(r["label"]) for r in evaluated]
    report_, written = metrics_from_predictions(out, bootstrap_samples=200, seed=42)
    assert (
        written == tmp_path / "preds.metrics.json"
        and json.loads(written.read_text())["counts"] == report_["counts"]
    )
    expected = json.loads((trained_run["run"] / "eval" / "dfdc" / "metrics.json").read_text())
    assert report_["counts"] == expected["counts"]
    for level in ("frame", "video"):
        for key, value in expected[level].items():
            assert report_[level][key] == pytest.approx(value, abs=1e-6), (level, key)
    assert report_["per_method"].keys() == expected["per_method"].keys()
    for method, numbers in expected["per_method"].items():
        assert report_["per_method"][method] == pytest.approx(numbers, abs=1e-6), method


@pytest.mark.slow
def test_ten_thousand_list_entries_stay_under_a_memory_bound(tmp_path: Path) -> None:
    """8,000 tiny images, 1,000 missing files and 1,000 repeats: memory grows by the inputs' paths only (the
    set that finds repeats), never by the rows. An 8 px model on one thread keeps the forward passes cheap."""
    import io

    import torch

    from deepfake.model.detector import get_model
    from deepfake.runs.checkpoint import build_state, save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(
        tmp_path / "tiny8.pt", build_state(model=get_model("tiny", img_size=8).eval())
    )
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(png, "PNG")
    folder = tmp_path / "tiny"
    folder.mkdir()
    names = [f"{i:05d}.png" for i in range(8000)]
    for name in names:
        (folder / name).write_bytes(png.getvalue())
    listing = folder / "list.txt"
    listing.write_text("\n".join([*names, *(f"gone/{i}.png" for i in range(1000)), *names[:1000]]) + "\n")
    traced: dict[int, int] = {}
    add = report.Summary.add

    def sampled(self: report.Summary, *args: object, **kwargs: object) -> None:
        add(self, *args, **kwargs)
        if self.scored in (1000, 8000):
            traced[self.scored] = tracemalloc.get_traced_memory()[0]

    cfg = {"checkpoint": str(checkpoint), "input": str(listing), "output": str(tmp_path / "preds.csv"),
           "num_workers": 0, "progress": "off", "batch_size": 512, "hardware": {"num_threads": 1}}  # fmt: skip
    tracemalloc.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(report.Summary, "add", sampled)
            done = predict(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert done.plan.inputs == 9000 and done.plan.duplicates == 1000 and done.summary.counts["error"] == 1000
    assert len(list(records(tmp_path / "preds.csv", "csv"))) == 9000
    grown = traced[8000] - traced[1000]
    assert grown < 7000 * 250, f"{grown / 7000:.0f} bytes per row kept: rows are being held in memory"
    assert peak < 10e6, f"peak {peak / 1e6:.1f} MB traced (a row is about 1 kB: 9,000 held would add 9 MB)"
