"""`python -m deepfake.restore <backup.tar.gz | mirror folder> --to DIR`: rebuild a run directory.

Nothing is written into DIR until every check passed: the archive's `.sha256` (when present), the
manifest's shape, each member's name, type and header size against the manifest and the free disk space
(all before extracting), then each member's sha256 while it is extracted into a staging folder. Members
that would land outside DIR (absolute paths, `..`, links, devices) are refused by name. From a mirror folder the newest
archive is used, and the mirror's last.pt replaces the archived one when it is verified and further along.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from deepfake.errors import UserError
from deepfake.exits import run_reporting_errors
from deepfake.runs.backup import MANIFEST
from deepfake.runs.fileio import CHUNK, copy_atomic, sha256_file
from deepfake.runs.mirror import backup_archives

log = logging.getLogger("deepfake")


def safe_member_path(name: str) -> PurePosixPath:
    """The member's relative path (`./x` is `x`, `./` is `.`), or UserError if it would leave the folder."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or name.startswith(("\\", "/")) or ":" in (path.parts or ("",))[0]:
        raise UserError(f"refusing archive member {name!r}: absolute path")
    if any(part == ".." for part in path.parts) or "\\" in name:
        raise UserError(f"refusing archive member {name!r}: it would land outside the target folder")
    return path


def read_archive(archive: Path, dest: Path | None = None) -> dict[str, Any]:
    """Check every member of a backup against its manifest; with `dest`, also write them there.

    Returns the manifest. Names, types, sizes (from the tar headers) and the free space at `dest` are
    checked before anything is written; a sha256 mismatch can only show while extracting, so `dest` may
    then be partially written and callers pass a staging folder.
    """
    sidecar = archive.with_name(archive.name + ".sha256")
    if sidecar.is_file():
        expected = sidecar.read_text().split()[0]
        if sha256_file(archive) != expected:
            raise UserError(f"{archive} does not match its checksum in {sidecar.name}: the file is damaged")
    else:
        log.warning("no %s beside the archive: checking its members only", sidecar.name)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            manifest, members = _plan(archive, tar)
            if dest is not None:
                _check_space(dest, sum(m.size for m, _ in members))
            for member, entry in members:
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has a payload
                target = dest / safe_member_path(member.name) if dest is not None else None
                if _copy_hashing(source, target) != entry["sha256"]:
                    raise UserError(
                        f"{archive}: {member.name} fails its sha256 check: the archive was altered"
                    )
            _read_to_end(tar)
            return manifest
    except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise UserError(f"{archive} is damaged or not a backup archive ({type(e).__name__}: {e})") from None


def _read_to_end(tar: tarfile.TarFile) -> None:
    """Decompress the rest of the stream so gzip checks its CRC and length trailer.

    tarfile stops at the end-of-archive marker, so a flipped bit in the padding after it (or in bytes
    no member covers) would otherwise pass unnoticed.
    """
    stream = tar.fileobj
    assert stream is not None
    while stream.read(1 << 20):
        pass


def _plan(archive: Path, tar: tarfile.TarFile) -> tuple[dict[str, Any], list[tuple[tarfile.TarInfo, dict]]]:
    """Read every header and the manifest; return the manifest and the (member, entry) pairs to extract."""
    manifest: dict[str, Any] | None = None
    planned: list[tuple[tarfile.TarInfo, dict]] = []
    seen: set[str] = set()
    for member in tar.getmembers():
        path = safe_member_path(member.name)
        if member.issym() or member.islnk():
            raise UserError(f"refusing archive member {member.name!r}: links are not allowed in a backup")
        if member.isdir():
            continue
        if not member.isfile():
            raise UserError(f"refusing archive member {member.name!r}: not a regular file")
        name = path.as_posix()
        if manifest is None:
            if name != MANIFEST:
                raise UserError(
                    f"{archive} has no {MANIFEST} first: not a deepfake backup (restore reads the archives "
                    "in a run's backups/ folder, not a tar of the run folder)"
                )
            source = tar.extractfile(member)
            assert source is not None
            manifest = _parse_manifest(archive, source.read(_MAX_MANIFEST + 1))
            continue
        entry = manifest["files"].get(name)
        if entry is None:
            raise UserError(f"refusing archive member {member.name!r}: it is not listed in the manifest")
        if name in seen:
            raise UserError(f"refusing archive member {member.name!r}: it appears twice in the archive")
        if member.size != entry["size"]:
            raise UserError(
                f"{archive}: {member.name} holds {member.size} bytes but its manifest says {entry['size']}: "
                "the archive was altered"
            )
        seen.add(name)
        planned.append((member, entry))
    if manifest is None:
        raise UserError(f"{archive} is empty")
    missing = sorted(set(manifest["files"]) - seen)
    if missing:
        raise UserError(
            f"{archive} is damaged or truncated: it lacks members its manifest lists ({', '.join(missing[:5])})"
        )
    return manifest, planned


#: A manifest lists file names and digests; anything near this size is not one.
_MAX_MANIFEST = 64 << 20


def _parse_manifest(archive: Path, raw: bytes) -> dict[str, Any]:
    """The manifest, checked to be `{"files": {name: {"sha256": str, "size": int}}, ...}`."""
    bad = f"{archive}: its {MANIFEST} is malformed"
    if len(raw) > _MAX_MANIFEST:
        raise UserError(f"{bad}: larger than {_MAX_MANIFEST >> 20} MiB")
    manifest = json.loads(raw)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{bad}: it has no 'files' mapping")
    for name, entry in manifest["files"].items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("size"), int)
            and not isinstance(entry.get("size"), bool)
            and entry["size"] >= 0
        ):
            raise UserError(f"{bad}: the entry for {name!r} is not a mapping with a sha256 and a size")
    return manifest


def _check_space(dest: Path, needed: int) -> None:
    """Refuse before writing when the members would not fit beside what is already on that disk."""
    probe = dest
    while not probe.exists() and probe != probe.parent:  # --to is often a folder still to be made
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise UserError(
            f"restoring needs {needed / 2**20:.1f} MiB but only {free / 2**20:.1f} MiB are free on the disk "
            f"of {dest.parent}: free some space or restore to another disk (--to)"
        )


def _copy_hashing(source: IO[bytes], target: Path | None) -> str:
    """The sha256 of `source`, written to `target` on the way; a failed write names the target, not the archive."""
    h = hashlib.sha256()
    with _open_target(target) as out:
        while chunk := source.read(CHUNK):
            h.update(chunk)
            if out is not None:
                try:
                    out.write(chunk)
                except OSError as e:
                    raise _write_error(target, e) from None
    return h.hexdigest()


@contextlib.contextmanager
def _open_target(target: Path | None) -> Iterator[IO[bytes] | None]:
    if target is None:
        yield None
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "wb")  # noqa: SIM115 (closed below, after the caller's writes)
    except OSError as e:
        raise _write_error(target, e) from None
    with out:
        yield out


def _write_error(target: Path | None, e: OSError) -> UserError:
    return UserError(
        f"cannot write {target} ({e.strerror or e}): free some space or restore to a writable folder (--to)"
    )


def mirrored_last(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """A mirror's last.pt with its sidecar, when the file matches the sha256 the sidecar records."""
    last = folder / "checkpoints" / "last.pt"
    meta_path = last.with_name("last.pt.json")
    if not (last.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        log.warning("%s cannot be read (%s): using the archived last.pt", meta_path, e)
        return None
    if not isinstance(meta, dict) or sha256_file(last) != meta.get("sha256"):
        log.warning(
            "%s does not match %s (copy cut short?): using the archived last.pt", last, meta_path.name
        )
        return None
    return last, meta


def restore(source: str | Path, to: str | Path) -> Path:
    """Recreate the run directory `to` from a backup archive or a mirror (or run) folder."""
    source, to = Path(source).expanduser(), Path(to).expanduser()
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UserError(f"--to {to} already exists and is not empty; restore into a new folder")
    archive, last = _pick(source)
    staging = to.parent / f".{to.name}.restoring-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        if archive is not None:
            manifest = read_archive(archive, staging)
            log.info(
                "verified %d files from %s (epoch %s, step %s)",
                len(manifest["files"]), archive, manifest.get("epoch"), manifest.get("global_step"),
            )  # fmt: skip
        else:
            manifest = {}
        if last is not None and _newer(last[1], manifest):
            copy_atomic(last[0], staging / "checkpoints" / "last.pt")
            log.info("took the mirror's newer last.pt (step %s)", last[1].get("global_step"))
        if to.exists():
            to.rmdir()
        os.replace(staging, to)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    command = f"python train.py {shlex.quote(f'resume={to.resolve()}')}"
    print(f"restored run directory {to.resolve()}\nresume with: {command}", flush=True)
    return to


def _pick(source: Path) -> tuple[Path | None, tuple[Path, dict[str, Any]] | None]:
    if source.is_file():
        return source, None
    if not source.is_dir():
        raise UserError(f"{source} does not exist; pass a backup .tar.gz or a mirror folder")
    archives = backup_archives(source / "backups") or backup_archives(source)
    last = mirrored_last(source)
    if not archives and last is None:
        found = sorted(p.parent for p in source.glob("**/backups") if p.is_dir())[:5]
        hint = f"; run folders below it: {', '.join(map(str, found))}" if found else ""
        raise UserError(f"no backups/*.tar.gz or checkpoints/last.pt in {source}{hint}")
    return (archives[-1] if archives else None), last


def _newer(meta: dict[str, Any], manifest: dict[str, Any]) -> bool:
    if "checkpoints/last.pt" not in manifest.get("files", {}):
        return True
    step, archived = meta.get("global_step"), manifest.get("global_step")
    return isinstance(step, int) and isinstance(archived, int) and step > archived


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepfake.restore", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a backup .tar.gz, or a mirror (or run) folder holding backups/")
    parser.add_argument("--to", required=True, help="the run directory to create (new or empty)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    run_reporting_errors(restore, args.source, args.to)


if __name__ == "__main__":
    main()
