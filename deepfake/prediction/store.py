"""predict.py's output on disk: rows committed one at a time, resume, shards and the merged output.

For `output=preds.csv` (the same for any name):
```
preds.csv                                    the output; with one shard and .csv/.jsonl, the rows as scored
preds.csv.settings.json                      the settings the rows were scored with, and their fingerprint
preds.csv.parts/shard-00000-of-00004.csv     a shard's rows as scored (.jsonl for .parquet and .json outputs)
preds.csv.parts/shard-00000-of-00004.frames.csv   its per-face rows (per_frame=true)
preds.frames.csv                             per_frame=true: every face's row
```
A row is appended (one write, flushed) once its input is scored; per-face rows go first, so the row is the
commit, as a video's `videos.csv` row is in extract.py. On start every journal's torn tail is cut, per-face
rows without their row are dropped, and the paths with a complete row are done: the run scores the rest. Rows
carry the settings fingerprint: rows or a settings file from other settings stop the run with one error that
names `overwrite=true`. The merged output (input order, every input once) is written when every input has a
row: by the run of the last shard to finish, by any rerun, and always for .parquet and .json (documents, written
whole at the end; the journal in `.parts/` is what a crashed run leaves and a rerun continues from).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from deepfake.errors import UserError
from deepfake.extraction.writer import shard_name
from deepfake.prediction.fingerprint import changes
from deepfake.prediction.plan import Selection
from deepfake.prediction.rows import FRAME_COLUMNS, SETTINGS, TYPES, Scored
from deepfake.runs.fileio import atomic_write
from deepfake.runs.rowfiles import (
    JOURNALS,
    RowAppender,
    csv_header,
    decode_record,
    read_document,
    records,
    write_document,
)

log = logging.getLogger("deepfake")

#: Test hook: seconds to sleep after each committed row, so a test can `kill -9` a run between rows.
PAUSE_ENV = "DEEPFAKE_PREDICT_TEST_PAUSE"
FIX = "pass overwrite=true to score everything again into it, or output=<another file>"


@dataclass(frozen=True)
class Layout:
    """Where one run's files go, for an output, its format and a shard."""

    output: Path
    fmt: str  # csv | jsonl | parquet | json
    index: int = 0
    count: int = 1

    @property
    def kind(self) -> str:
        """The journals' format: the output's for CSV and JSON lines, JSON lines for the documents."""
        return self.fmt if self.fmt in JOURNALS else "jsonl"

    @property
    def streams(self) -> bool:
        """The output itself takes the rows as they are scored (one shard, .csv or .jsonl)."""
        return self.fmt in JOURNALS and self.count == 1

    @property
    def parts(self) -> Path:
        return self.output.with_name(self.output.name + ".parts")

    @property
    def settings_file(self) -> Path:
        return self.output.with_name(self.output.name + ".settings.json")

    @property
    def journal(self) -> Path:
        shard = shard_name(self.index, self.count)
        return self.output if self.streams else self.parts / f"{shard}.{self.kind}"

    @property
    def frames_output(self) -> Path:
        """`preds.csv` -> `preds.frames.csv` (whatever the output's format)."""
        return self.output.with_name(f"{self.output.stem}.frames.csv")

    @property
    def frames_journal(self) -> Path:
        shard = shard_name(self.index, self.count)
        return self.frames_output if self.count == 1 else self.parts / f"{shard}.frames.csv"

    def part_files(self) -> list[Path]:
        """Every shard's row journal (of any shard count), in name order."""
        if not self.parts.is_dir():
            return []
        return sorted(
            p for p in self.parts.glob(f"shard-*.{self.kind}") if not p.name.endswith(".frames.csv")
        )

    def stores(self) -> list[Path]:
        """The files rows are read from: the output when it is a journal, then the parts."""
        own = [self.output] if self.fmt in JOURNALS and self.output.is_file() else []
        return own + self.part_files()


class OutputStore:
    """The rows on disk of one output: what is done, appending new rows, and writing the merged output."""

    def __init__(
        self,
        layout: Layout,
        columns: Sequence[str],
        settings: Mapping[str, Any],
        fingerprint: str,
        meta: Mapping[str, Any],
    ) -> None:
        self.layout, self.columns = layout, tuple(columns)
        self.settings, self.fingerprint = dict(settings), fingerprint
        self.meta = {**meta, SETTINGS: fingerprint}

    def clear(self) -> None:
        """overwrite=true: forget every row of this output (the parts' log folders stay)."""
        lay = self.layout
        files = [lay.output, lay.settings_file, lay.frames_output]
        if lay.parts.is_dir():
            files += [p for p in lay.parts.glob("shard-*") if p.is_file()]
        for path in files:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            lay.parts.rmdir()  # only when empty

    def open(self) -> set[str]:
        """Check the settings, repair the journals and return the paths that already have a complete row."""
        lay = self.layout
        self._check_settings_file()
        if lay.fmt not in JOURNALS and lay.output.is_file() and not lay.part_files():
            self._seed_from_document()
        done: set[str] = set()
        for store in lay.stores():
            self._check_header(store)
            for record in records(store, lay.kind):
                if record.row.get(SETTINGS) != self.fingerprint:
                    self._refuse(store, "holds rows scored with other settings" + self._recorded_changes())
                done.add(record.row["path"])
        if not lay.settings_file.is_file():
            text = json.dumps({"fingerprint": self.fingerprint, "settings": self.settings, "meta": self.meta},
                              indent=2)  # fmt: skip
            atomic_write(lay.settings_file, lambda f: f.write(text.encode()))
        self._drop_uncommitted_frames(done)
        return done

    def _refuse(self, where: Path, what: str) -> None:
        raise UserError(f"{where} {what}; {FIX}")

    def _recorded_changes(self) -> str:
        saved = _read_json(self.layout.settings_file)
        if not saved or "settings" not in saved:
            return " (no settings file beside it says which)"
        return " (" + "; ".join(changes(saved["settings"], self.settings)) + ")"

    def _check_settings_file(self) -> None:
        lay = self.layout
        saved = _read_json(lay.settings_file)
        if saved is None:
            return
        if not lay.output.exists() and not lay.part_files():  # its rows are gone: nothing to protect
            lay.settings_file.unlink()
            return
        if saved.get("fingerprint") != self.fingerprint:
            found = (
                "; ".join(changes(saved.get("settings") or {}, self.settings))
                or "an unreadable settings file"
            )
            self._refuse(self.layout.output, f"was scored with other settings ({found})")

    def _check_header(self, store: Path) -> None:
        if self.layout.kind != "csv":
            return
        header = csv_header(store)
        if header is not None and tuple(header) != self.columns:
            self._refuse(
                store,
                f"has the columns {','.join(header)}, not this run's {','.join(self.columns)} "
                "(written by another version, another input kind, or by hand)",
            )

    def _seed_from_document(self) -> None:
        """A finished .parquet/.json output whose journal was deleted: its rows become the journal again, so a
        rerun with more inputs scores only the new ones."""
        lay = self.layout
        meta, rows = read_document(lay.output, lay.fmt)
        if meta.get(SETTINGS) != self.fingerprint:
            self._refuse(lay.output, "was scored with other settings" + self._recorded_changes())
        with RowAppender(lay.journal, lay.kind, self.columns) as journal:
            for row in rows:
                journal.write(row)

    def _drop_uncommitted_frames(self, done: set[str]) -> None:
        """Cut per-face rows after the last one whose input has its row (a run killed between the two)."""
        path = self.layout.frames_journal
        committed = [r.end for r in records(path, "csv") if r.row["path"] in done]
        keep = committed[-1] if committed else 0  # 0: the appender writes the header again
        if path.is_file() and path.stat().st_size != keep:
            with open(path, "r+b") as f:
                f.truncate(keep)

    @contextlib.contextmanager
    def writer(self, per_frame: bool) -> Iterator[RowSink]:
        sink = RowSink(self.layout, self.columns, per_frame)
        try:
            yield sink
        finally:
            sink.close()

    def assemble(self, selection: Selection) -> int:
        """Write the merged output when every input has a row; returns how many inputs have none (then nothing
        is written). A single-shard .csv/.jsonl output without parts is already complete as it stands."""
        lay = self.layout
        parts = lay.part_files()
        if lay.streams and not parts:
            return 0
        stores = lay.stores()
        index: dict[str, tuple[int, int, int]] = {}  # path -> (store, start, end): offsets, never the rows
        for i, store in enumerate(stores):
            for record in records(store, lay.kind):
                index.setdefault(record.row["path"], (i, record.start, record.end))
        missing = sum(entry.path not in index for entry in selection.distinct())
        if missing:
            return missing
        with _Readers(stores, lay.kind) as read:
            rows = (read(*index[entry.path]) for entry in selection.distinct())
            count = write_document(lay.output, lay.fmt, rows, self.columns, TYPES, self.meta)
        if lay.count > 1 and any(p.name.endswith(".frames.csv") for p in lay.parts.glob("shard-*")):
            self._assemble_frames(selection, set(index))
        log.info("wrote %d rows in input order to %s", count, lay.output)
        return 0

    def _assemble_frames(self, selection: Selection, done: set[str]) -> None:
        """preds.frames.csv from the shards' per-face parts: each input's block of rows, in input order."""
        lay = self.layout
        stores = sorted(lay.parts.glob("shard-*.frames.csv"))
        blocks: dict[str, tuple[int, int, int]] = {}
        for i, store in enumerate(stores):
            last = None
            for record in records(store, "csv"):
                path = record.row["path"]
                if path not in done:
                    continue
                if path == last:
                    j, start, _ = blocks[path]
                    blocks[path] = (j, start, record.end)
                elif path not in blocks:
                    blocks[path] = (i, record.start, record.end)
                last = path

        def write(f: IO[bytes]) -> None:
            f.write((",".join(FRAME_COLUMNS) + "\n").encode())
            files = [open(s, "rb") for s in stores]  # noqa: SIM115 (closed below)
            try:
                for entry in selection.distinct():
                    if entry.path in blocks:
                        i, start, end = blocks[entry.path]
                        files[i].seek(start)
                        f.write(files[i].read(end - start))
            finally:
                for handle in files:
                    handle.close()

        atomic_write(lay.frames_output, write)


class RowSink:
    """This run's journals: per-face rows first, then the input's row (the commit)."""

    def __init__(self, layout: Layout, columns: Sequence[str], per_frame: bool) -> None:
        self.rows = RowAppender(layout.journal, layout.kind, columns)
        self.frames = RowAppender(layout.frames_journal, "csv", FRAME_COLUMNS) if per_frame else None
        self.pause = float(os.environ.get(PAUSE_ENV, "0"))

    def write(self, scored: Scored) -> None:
        if self.frames is not None and scored.frames:
            self.frames.write_many(scored.frames)
        self.rows.write(scored.row)
        if self.pause:
            time.sleep(self.pause)

    def close(self) -> None:
        self.rows.close()
        if self.frames is not None:
            self.frames.close()


class _Readers:
    """Rows read back by (store, start, end), each store's file kept open."""

    def __init__(self, stores: Sequence[Path], kind: str) -> None:
        self.stores, self.kind = stores, kind
        self.files: list[IO[bytes]] = []
        self.headers: list[list[str]] = []

    def __enter__(self) -> _Readers:
        self.files = [open(s, "rb") for s in self.stores]  # noqa: SIM115 (closed in __exit__)
        self.headers = [csv_header(s) or [] for s in self.stores] if self.kind == "csv" else []
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self.files:
            f.close()

    def __call__(self, store: int, start: int, end: int) -> dict[str, Any]:
        f = self.files[store]
        f.seek(start)
        return decode_record(f.read(end - start), self.kind, self.headers[store] if self.headers else None)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
