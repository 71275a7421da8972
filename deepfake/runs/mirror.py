"""The backup mirror: copies of the run's backups and last.pt in another folder, such as a mounted Drive.

A mirror is a convenience, never a reason to stop training: an unmounted, missing or read-only mirror
logs a warning (once per distinct problem) and the next sync copies whatever is still missing. Every copy
lands through a temp file and a rename in the destination folder, so a mirror never holds a torn file.

Layout: `<mirror>/<run>/backups/<stamp>.tar.gz[.sha256]` and `<mirror>/<run>/checkpoints/last.pt` with
`last.pt.json` (its sha256, size and training position), which `deepfake.runs.restore` uses to verify it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from deepfake.errors import UserError
from deepfake.runs.fileio import atomic_write, copy_atomic, remove_stale_temps, require_writable

log = logging.getLogger("deepfake.mirror")  # the name train.log has always shown


def backup_archives(folder: Path) -> list[Path]:
    """Backup archives in `folder`, oldest first (names start with a sortable time stamp)."""
    return sorted(folder.glob("*.tar.gz")) if folder.is_dir() else []


def prune_backups(folder: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` archives (0 keeps all) with their checksum files."""
    archives = backup_archives(folder)
    old = archives[:-keep_last] if keep_last > 0 else []
    for p in old:
        p.unlink(missing_ok=True)
        p.with_name(p.name + ".sha256").unlink(missing_ok=True)
    return old


def check_mirror(root: str | Path) -> None:
    """At the start of a run: the mirror must be an existing, writable folder. A typo or an unmounted Drive
    found only at the first backup would leave a run with no copy and one warning in the middle of its log;
    a mirror lost later in the run (a Drive that disconnects) only warns."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"backup.mirror={root} does not exist or is not mounted: create it (mkdir -p {folder}), mount it "
            "(Colab: from google.colab import drive; drive.mount('/content/drive')), or drop backup.mirror"
        )
    require_writable(folder, "backup.mirror", "make it writable, or point backup.mirror at a writable folder")


class Mirror:
    """Keeps `<root>/<relative>` in step with a run's backups and last.pt."""

    def __init__(self, root: str | Path, relative: str | Path, keep_last: int = 3) -> None:
        self.root = Path(root).expanduser()
        self.target = self.root / relative
        self.keep_last = keep_last
        self._problem: str | None = None
        self._last_copied: tuple[int, int, int] | None = None

    def sync_backups(self, local: Path) -> bool:
        """Copy every local archive the mirror lacks, then prune the mirror to `keep_last`."""
        return self._guard(lambda: self._sync_backups(local))

    def copy_last(self, last: Path, position: dict[str, Any]) -> bool:
        """Copy last.pt (when it changed since the previous copy) with a sidecar naming its sha256."""
        return self._guard(lambda: self._copy_last(last, position))

    def _sync_backups(self, local: Path) -> None:
        dest = self.target / "backups"
        dest.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dest)
        for archive in backup_archives(local):
            copy = dest / archive.name
            if not copy.is_file() or copy.stat().st_size != archive.stat().st_size:
                copy_atomic(archive, copy)
            sidecar = archive.with_name(archive.name + ".sha256")
            if sidecar.is_file() and not (dest / sidecar.name).is_file():
                copy_atomic(sidecar, dest / sidecar.name)
        prune_backups(dest, self.keep_last)

    def _copy_last(self, last: Path, position: dict[str, Any]) -> None:
        st = os.stat(last)
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if key == self._last_copied:
            return
        dest = self.target / "checkpoints" / "last.pt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dest.parent)
        digest = copy_atomic(last, dest)
        meta = {"sha256": digest, "size": st.st_size, **position}
        text = json.dumps(meta, indent=2).encode()
        atomic_write(dest.with_name("last.pt.json"), lambda f: f.write(text))
        self._last_copied = key

    def _guard(self, action: Any) -> bool:
        if not self.root.is_dir():
            return self._warn(
                f"backup mirror {self.root} does not exist or is not mounted (for Google Drive run "
                "`from google.colab import drive; drive.mount('/content/drive')`)"
            )
        try:
            action()
        except OSError as e:
            return self._warn(f"cannot write to backup mirror {self.target}: {e}")
        if self._problem is not None:
            log.info("backup mirror %s is writable again; copies are up to date", self.target)
            self._problem = None
        return True

    def _warn(self, problem: str) -> bool:
        if problem != self._problem:
            log.warning("%s. Training goes on; local files are kept and the copy is retried later.", problem)
            self._problem = problem
        return False
