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

from deepfake.errors import UserError

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
    except OSError as e:
        if e.filename is not None:
            raise
        # A failed write (a full disk) names no file: name the one being written, for the error message.
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
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


def probe_writable(folder: Path) -> None:
    """Create and delete a file in `folder` (made if missing), raising the OSError a real write would.

    A mode check (`os.access`) says yes to root on a read-only folder and knows nothing of a full disk or a
    read-only mount; an actual write is the only test that holds for every user and file system.
    """
    if not folder.is_dir():  # mkdir on an existing folder in a read-only parent fails, whatever exist_ok says
        folder.mkdir(parents=True)
    probe = folder / f".write-probe.{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0")
            f.flush()
            os.fsync(f.fileno())
    finally:
        probe.unlink(missing_ok=True)


def require_writable(folder: Path, what: str, fix: str) -> None:
    """`probe_writable`, failing as a UserError that names `what` the folder is for and the `fix`."""
    try:
        probe_writable(folder)
    except OSError as e:
        raise UserError(f"{what} {folder} is not writable ({e.strerror or e}); {fix}") from None


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
