"""Row files that survive a kill: JSON lines and CSV appended one row at a time and read back without a torn
last row, and the documents (CSV, JSON lines, JSON, Parquet) written from rows in order.

A row is complete once its newline is written (a CSV record ends at a newline outside quotes). `records`
yields complete rows only, with their byte ranges, so a reader of a file that is still being written, or that a
killed process left, skips the torn row; `RowAppender` cuts such a tail off before it appends. Text is UTF-8
with surrogate escapes, so a file name that is not valid UTF-8 round-trips byte for byte.

pyarrow is imported only when a Parquet file is written or read (`pip install 'deepfake[parquet]'`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from deepfake.errors import UserError
from deepfake.runs.fileio import atomic_write

log = logging.getLogger("deepfake")

JOURNALS = ("csv", "jsonl")  # the formats a row can be appended to
DOCUMENTS = ("csv", "jsonl", "json", "parquet")  # the formats a finished set of rows can be written as
ENCODING, ERRORS = "utf-8", "surrogateescape"
SYNC_SECONDS = 1.0  # an appender fsyncs at most this often (each row is flushed: a killed process loses none)
ROW_GROUP = 10_000  # rows per Parquet row group: a reader's unit of work, and the writer's memory
PARQUET_TYPES = ("str", "float", "int")  # the column types a Parquet schema is built from


@dataclass(frozen=True)
class Record:
    """One complete row and where it lies in its file (`start` to `end`, in bytes)."""

    start: int
    end: int
    row: dict[str, Any]


def kind_of(path: Path) -> str:
    """A row file's format by its extension: csv, jsonl, json or parquet."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in DOCUMENTS:
        raise UserError(f"{path}: cannot tell its format; name it .csv, .jsonl, .json or .parquet")
    return kind


def records(path: Path, kind: str) -> Iterator[Record]:
    """The complete rows of a journal file (none if it is missing); a torn last row and any line that does not
    parse are skipped (the latter with a warning: it was not written by `RowAppender`)."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        yield from _csv_records(f, path) if kind == "csv" else _jsonl_records(f, path)


def complete_length(path: Path, kind: str) -> int:
    """Bytes of `path` up to the end of its last complete row (a CSV header counts): where an append goes."""
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        if kind == "jsonl":
            return sum(len(line) for line in f if line.endswith(b"\n"))
        return max((end for _, end, _ in _csv_lines(f)), default=0)


def _jsonl_records(f: IO[bytes], path: Path) -> Iterator[Record]:
    offset = bad = 0
    for line in f:
        start, offset = offset, offset + len(line)
        if not line.endswith(b"\n"):  # torn: the writer was stopped within this row
            break
        try:
            row = json.loads(line.decode(ENCODING, ERRORS))
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            yield Record(start, offset, row)
        else:
            bad += 1
    if bad:
        log.warning("%s: %d line(s) are not JSON rows and were skipped", path, bad)


def _csv_lines(f: IO[bytes]) -> Iterator[tuple[int, int, str]]:
    """(start, end, text) of each complete CSV record: lines joined while a quoted field spans them."""
    start = offset = 0
    parts: list[bytes] = []
    quotes = 0
    for line in f:
        parts.append(line)
        offset += len(line)
        quotes += line.count(b'"')
        if quotes % 2 == 0 and line.endswith(b"\n"):
            yield start, offset, b"".join(parts).decode(ENCODING, ERRORS)
            start, parts, quotes = offset, [], 0


def _csv_records(f: IO[bytes], path: Path) -> Iterator[Record]:
    header: list[str] | None = None
    bad = 0
    for start, end, text in _csv_lines(f):
        fields = next(csv.reader(io.StringIO(text, newline="")), [])
        if header is None:
            header = fields
            continue
        if len(fields) != len(header):
            bad += 1
            continue
        yield Record(start, end, {k: (v if v != "" else None) for k, v in zip(header, fields, strict=True)})
    if bad:
        log.warning("%s: %d record(s) do not have the header's %d fields and were skipped", path, bad,
                    len(header or []))  # fmt: skip


def csv_header(path: Path) -> list[str] | None:
    """The header of a CSV row file, or None when it has no complete one yet."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        for _, _, text in _csv_lines(f):
            return next(csv.reader(io.StringIO(text, newline="")), [])
    return None


def encode(row: Mapping[str, Any], kind: str, columns: Sequence[str]) -> bytes:
    """One row as the bytes of one complete line (JSON lines) or record (CSV; None is an empty cell)."""
    if kind == "jsonl":
        text = json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n"
    else:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(
            ["" if row.get(c) is None else row[c] for c in columns]
        )
        text = buffer.getvalue()
    return text.encode(ENCODING, ERRORS)


def decode_record(data: bytes, kind: str, header: Sequence[str] | None = None) -> dict[str, Any]:
    """One complete row's bytes (as `records` found them) back to a row; CSV needs its file's header."""
    text = data.decode(ENCODING, ERRORS)
    if kind == "jsonl":
        return json.loads(text)
    fields = next(csv.reader(io.StringIO(text, newline="")))
    return {k: (v if v != "" else None) for k, v in zip(header or [], fields, strict=True)}


class RowAppender:
    """Appends rows to a journal file, each in one write and flushed, so `kill -9` leaves at most the row being
    written torn; a torn tail left by an earlier writer is cut off first. One writer per file."""

    def __init__(self, path: Path, kind: str, columns: Sequence[str]) -> None:
        if kind not in JOURNALS:
            raise ValueError(f"cannot append rows to {kind}")
        self.path, self.kind, self.columns = path, kind, tuple(columns)
        path.parent.mkdir(parents=True, exist_ok=True)
        keep = complete_length(path, kind)
        self._file = open(path, "ab")  # noqa: SIM115 (closed by close())
        self._file.truncate(keep)
        if kind == "csv" and keep == 0:
            self._write(encode(dict(zip(self.columns, self.columns, strict=True)), "csv", self.columns))
        self._synced = time.monotonic()

    def _write(self, data: bytes) -> None:
        with self._named():
            self._file.write(data)
            self._file.flush()

    @contextlib.contextmanager
    def _named(self) -> Iterator[None]:
        """A failed write (a full disk) names no file: name the journal, for the error message."""
        try:
            yield
        except OSError as e:
            if e.filename is not None:
                raise
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from e

    def write(self, row: Mapping[str, Any]) -> None:
        self.write_many([row])

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rows in one write (a torn write tears the last of them only)."""
        self._write(b"".join(encode(row, self.kind, self.columns) for row in rows))
        if time.monotonic() - self._synced >= SYNC_SECONDS:
            with self._named():
                os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            with self._named():
                self._file.flush()
                os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def __enter__(self) -> RowAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_document(
    path: Path,
    kind: str,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    types: Mapping[str, str],
    meta: Mapping[str, Any] | None = None,
) -> int:
    """Write `rows` (consumed once, in order: memory stays at one Parquet row group) as one file, atomically;
    returns the number of rows. JSON is `{meta..., "predictions": [rows]}`; Parquet keeps `meta` as JSON in the
    file's key-value metadata (key `deepfake`) and types its columns by `types` (str, float, int)."""
    count = 0

    def counted() -> Iterator[Mapping[str, Any]]:
        nonlocal count
        for row in rows:
            count += 1
            yield row

    if kind == "parquet":
        _write_parquet(path, counted(), columns, types, meta or {})
        return count

    def write(f: IO[bytes]) -> None:
        if kind == "json":
            head = json.dumps(dict(meta or {}), indent=2, ensure_ascii=False)[:-1].rstrip()
            f.write((head + ("," if meta else "") + '\n  "predictions": [').encode(ENCODING, ERRORS))
            for i, row in enumerate(counted()):
                line = json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False)
                f.write(((",\n    " if i else "\n    ") + line).encode(ENCODING, ERRORS))
            f.write(b"\n  ]\n}\n")
            return
        if kind == "csv":
            f.write(encode(dict(zip(columns, columns, strict=True)), "csv", columns))
        for row in counted():
            f.write(encode(row, kind, columns))

    atomic_write(path, write)
    return count


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "Parquet output needs pyarrow: pip install 'deepfake[parquet]', or write .csv, .jsonl or .json"
        ) from None
    return pa, pq


def _write_parquet(
    path: Path,
    rows: Iterator[Mapping[str, Any]],
    columns: Sequence[str],
    types: Mapping[str, str],
    meta: Mapping[str, Any],
) -> None:
    pa, pq = _arrow()
    arrow_types = {"str": pa.string(), "float": pa.float64(), "int": pa.int64()}
    schema = pa.schema([(c, arrow_types[types.get(c, "str")]) for c in columns])
    schema = schema.with_metadata({"deepfake": json.dumps(dict(meta))})

    def write(f: IO[bytes]) -> None:
        with pq.ParquetWriter(f, schema) as writer:
            group: list[dict[str, Any]] = []
            for row in rows:
                group.append({c: row.get(c) for c in columns})
                if len(group) == ROW_GROUP:
                    writer.write_table(pa.Table.from_pylist(group, schema))
                    group = []
            if group:
                writer.write_table(pa.Table.from_pylist(group, schema))

    atomic_write(path, write)


def read_document(path: Path, kind: str | None = None) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """(meta, rows) of a row file of any format; rows are read lazily (one row group at a time for Parquet,
    the whole document for JSON). A journal (CSV, JSON lines) has no meta and may be partial: its torn last
    row is skipped."""
    kind = kind or kind_of(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if kind in JOURNALS:
        return {}, (r.row for r in records(path, kind))
    if kind == "json":
        try:
            with open(path, encoding=ENCODING, errors=ERRORS) as f:
                doc = json.load(f)
            rows = doc.pop("predictions")
        except (ValueError, KeyError, AttributeError, TypeError) as e:
            raise UserError(
                f"{path} is not a predictions document ({type(e).__name__}: {e}); "
                "predict.py writes JSON at the end of a run: read the .parts/ journal of an unfinished one"
            ) from None
        return doc, iter(rows)
    pa, pq = _arrow()
    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise UserError(
            f"{path} is not a complete Parquet file ({e}); Parquet is written at the end of a run: "
            "read the .parts/ journal of an unfinished one"
        ) from None
    raw = (file.schema_arrow.metadata or {}).get(b"deepfake")
    meta = json.loads(raw) if raw else {}
    return meta, (row for batch in file.iter_batches() for row in batch.to_pylist())
