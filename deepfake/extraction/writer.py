"""Crash-safe output: per-video folders renamed into place, per-shard part files, the assembled CSVs.

A video's crops go to `out/.partial/<shard>/`, which is renamed to `out/faces/<video>/` once complete; then its
manifest rows and, last, its `videos.csv` row are appended (flushed and fsynced) to the shard's part files in
`out/parts/`. The `videos` row is the commit: a video without one is not done, whatever else is on disk, and a
rerun redoes it. On start a shard clears its partial folder and drops from its parts any torn last line and any
manifest row of a video that has no `videos` row, so `kill -9` at any moment leaves nothing counted twice.
`manifest.csv` and `videos.csv` are assembled from all parts once every video of the dataset is done.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from deepfake.data.convert import carve_val
from deepfake.data.manifest import COLUMNS, MASK
from deepfake.data.samples import Sample
from deepfake.runs.fileio import atomic_write

VIDEO_COLUMNS = (
    "source", "video", "label", "split", "method", "status", "frames_total", "frames_decoded",
    "frames_with_face", "faces", "width", "height", "fps", "rotation", "scale", "seconds", "error", "perturb",
)  # fmt: skip
FACE_COLUMNS = ("file", "frame", "face", "score", "x1", "y1", "x2", "y2",
                "frame_x1", "frame_y1", "frame_x2", "frame_y2", "m00", "m01", "m02", "m10", "m11", "m12")  # fmt: skip
FACES_CSV = "faces.csv"  # per video folder: each crop's box (crop and frame pixels) and frame->crop matrix


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


def faces_dir(rel: str) -> str:
    """The crops' folder for a video at `rel` (relative to the dataset root): faces/<rel without extension>."""
    return f"faces/{os.path.splitext(rel)[0]}"


def _csv_text(rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _complete_lines(path: Path) -> list[dict[str, str]]:
    """Rows of a part file, without a torn last line (a line is complete once its newline is written)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(text)))


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _rewrite(path: Path, header: Sequence[str], rows: Iterable[Mapping[str, str]]) -> None:
    text = _csv_text([header, *([r.get(c, "") for c in header] for r in rows)])
    atomic_write(path, lambda f: f.write(text.encode()))


def done_videos(out: Path) -> dict[str, dict[str, str]]:
    """`{source: videos row}` over every shard's part (so a rerun with another shard count skips them too)."""
    done: dict[str, dict[str, str]] = {}
    for part in sorted((out / "parts").glob("*.videos.csv")):
        for row in _complete_lines(part):
            done[row["source"]] = row
    return done


def stale_videos(out: Path, sources: Iterable[str]) -> list[str]:
    """Finished videos (among `sources`) whose crops are not all on disk: deleted or moved since their row was
    written. A video's crops are its manifest rows' files; a row that says it has faces but has no manifest
    rows is stale too."""
    done = done_videos(out)
    listed: dict[str, set[str]] = {}
    for part in sorted((out / "parts").glob("*.manifest.csv")):
        for row in _complete_lines(part):
            folder, name = os.path.split(row["path"])
            listed.setdefault(folder, set()).add(name)
    stale = []
    for source in sources:
        row = done.get(source)
        if row is None or not int(row.get("faces") or 0):
            continue
        folder = faces_dir(source)
        expected = listed.get(folder, set())
        try:
            on_disk = set(os.listdir(out / folder))
        except OSError:  # the folder is gone
            on_disk = set()
        if len(expected) < int(row["faces"]) or not expected <= on_disk:
            stale.append(source)
    return stale


def forget(out: Path, sources: Iterable[str]) -> None:
    """Drop the rows of `sources` from every part, so they are redone. Only call it for videos of this shard's
    slice: a part another running shard appends to never holds them (a video is in one slice per count)."""
    gone = set(sources)
    folders = {faces_dir(s) for s in gone}
    for part in sorted((out / "parts").glob("*.videos.csv")):
        rows = _complete_lines(part)
        kept = [r for r in rows if r["source"] not in gone]
        if len(kept) < len(rows):
            _rewrite(part, VIDEO_COLUMNS, kept)
    for part in sorted((out / "parts").glob("*.manifest.csv")):
        rows = _complete_lines(part)
        kept = [r for r in rows if os.path.dirname(r["path"]) not in folders]
        if len(kept) < len(rows):
            _rewrite(part, COLUMNS, kept)


#: What an extraction writes into its output folder (logs/ stays: each run's extract.log is kept there).
OUTPUTS = ("faces", "parts", ".partial", "manifest.csv", "videos.csv", "extraction.json")


def clear(out: Path) -> None:
    """Delete an earlier extraction's outputs (overwrite=true)."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class ShardWriter:
    """One shard's writer; only one process may run a given shard of an output folder at a time."""

    def __init__(self, out: Path, shard: str, masks: bool = False) -> None:
        self.out = out
        self.masks = masks  # dataset.masks: manifest rows carry the mask column
        self.columns = (*COLUMNS, MASK) if masks else COLUMNS
        self.partial = out / ".partial" / shard
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        (out / "parts").mkdir(exist_ok=True)
        self.videos_part = out / "parts" / f"{shard}.videos.csv"
        self.manifest_part = out / "parts" / f"{shard}.manifest.csv"
        self._repair()

    def _repair(self) -> None:
        """Keep complete rows only, and manifest rows only of committed videos."""
        videos = _complete_lines(self.videos_part)
        committed = {faces_dir(r["source"]) for r in videos}
        rows = [r for r in _complete_lines(self.manifest_part) if os.path.dirname(r["path"]) in committed]
        _rewrite(self.videos_part, VIDEO_COLUMNS, videos)
        _rewrite(self.manifest_part, self.columns, rows)

    def temp_dir(self, rel: str) -> Path:
        tmp = self.partial / os.path.splitext(rel)[0].replace("/", "__")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit(
        self,
        rel: str,
        tmp: Path | None,
        manifest_rows: Sequence[Sequence[object]],
        video_row: Mapping[str, object],
    ) -> None:
        """Move the video's crops into place, then append its manifest rows, then its videos row."""
        final = self.out / faces_dir(rel)
        if final.exists():  # left by a run killed between the rename and its videos row
            shutil.rmtree(final)
        if tmp is not None:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        if manifest_rows:
            _append(self.manifest_part, _csv_text(manifest_rows))
        _append(self.videos_part, _csv_text([[video_row.get(c, "") for c in VIDEO_COLUMNS]]))

    def close(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def assemble(out: Path, expected: Iterable[str], val_fraction: float = 0.0) -> list[str]:
    """Write manifest.csv and videos.csv from all parts when every expected source is done; return the
    sources still missing (then nothing is written). `val_fraction` moves that share of train identities (else
    videos) to val, as `python -m deepfake.data.convert --val-fraction` does."""
    done = done_videos(out)
    missing = sorted(set(expected) - set(done))
    if missing:
        return missing
    committed = {faces_dir(s) for s in done}
    manifest: dict[str, dict[str, str]] = {}
    for part in sorted((out / "parts").glob("*.manifest.csv")):
        for row in _complete_lines(part):
            if os.path.dirname(row["path"]) in committed:
                manifest[row["path"]] = row
    rows = [manifest[p] for p in sorted(manifest)]
    videos = [done[s] for s in sorted(done)]
    if val_fraction:
        samples = [
            Sample(r["path"], int(r["label"]), r["video"], r["method"], r["split"], r["identity"])
            for r in rows
        ]
        split_of = {s.video: s.split for s in carve_val(samples, val_fraction)}
        rows = [{**r, "split": split_of[r["video"]]} for r in rows]
        videos = [{**v, "split": split_of.get(v["video"], v["split"])} for v in videos]
    _rewrite(out / "manifest.csv", (*COLUMNS, MASK) if any(r.get(MASK) for r in rows) else COLUMNS, rows)
    _rewrite(out / "videos.csv", VIDEO_COLUMNS, videos)
    return []
