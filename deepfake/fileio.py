"""Crash-safe file writes and sha256 checksums, shared by checkpoints, backups, the mirror and restore.

Kept free of torch so the restore and clean commands start fast.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write(file)` on a temp file beside `path`, fsync it, then atomically replace `path`.

    A crash at any moment leaves the old file or the new one, never a torn one; the temp file is named
    `.<name>.<pid>.tmp` so a later run can recognise and remove leftovers of a killed writer.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # persist the rename itself
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files left by a writer that was killed mid-write (see `atomic_write`)."""
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


class HashingWriter:
    """A write-only file wrapper that feeds everything written through sha256."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def copy_atomic(src: Path, dest: Path) -> str:
    """Copy `src` to `dest` atomically (temp file in dest's folder, fsync, rename); return its sha256."""
    holder: dict[str, str] = {}

    def write(f: IO[bytes]) -> None:
        out = HashingWriter(f)
        with open(src, "rb") as s:
            shutil.copyfileobj(s, out, CHUNK)
        holder["sha256"] = out.sha256.hexdigest()

    atomic_write(dest, write)
    return holder["sha256"]
