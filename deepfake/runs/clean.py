"""`python -m deepfake.clean <runs dir> [--yes]`: free disk from old runs; a dry run unless `--yes`.

In every run directory below the given folder it removes the top-k epoch checkpoints (`epoch_XXX.pt`),
temp files left by killed writers, and all but the newest `--keep-backups` backups. `best.pt` is always
kept; `last.pt` is removed only from runs that finished (metrics.json says so) unless `--keep-last`,
because an unfinished run needs it to resume. A mirror folder has the same layout and can be cleaned too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepfake.errors import UserError
from deepfake.exits import run_reporting_errors
from deepfake.runs.mirror import backup_archives

FINISHED = ("completed", "early stopping")


def run_dirs(root: Path) -> list[Path]:
    """Folders that hold a run's checkpoints/ or backups/."""
    found = {p.parent for name in ("checkpoints", "backups") for p in root.rglob(name) if p.is_dir()}
    return sorted(found)


def finished(run: Path) -> bool:
    try:
        reason = json.loads((run / "metrics.json").read_text()).get("stop_reason", "")
    except (OSError, ValueError):
        return False
    return str(reason).startswith(FINISHED)


def plan(root: Path, keep_backups: int = 1, keep_last: bool = False) -> list[Path]:
    """The files `clean` would remove under `root`."""
    doomed: list[Path] = []
    for run in run_dirs(root):
        ckpts = run / "checkpoints"
        doomed += sorted(ckpts.glob("epoch_*.pt")) + sorted(ckpts.glob(".*.tmp"))
        last = ckpts / "last.pt"
        if not keep_last and last.is_file() and (ckpts / "best.pt").is_file() and finished(run):
            doomed.append(last)
        backups = run / "backups"
        archives = backup_archives(backups)
        for old in archives[: max(0, len(archives) - keep_backups)]:
            doomed += [p for p in (old, old.with_name(old.name + ".sha256")) if p.is_file()]
        doomed += sorted(backups.glob(".*.tmp"))
    return doomed


def clean(root: str | Path, yes: bool = False, keep_backups: int = 1, keep_last: bool = False) -> int:
    """Print (and with `yes`, delete) what `plan` selects; returns the bytes freed or to be freed."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass the folder that holds your runs (e.g. outputs)")
    if keep_backups < 0:
        raise UserError(f"--keep-backups must be >= 0 (got {keep_backups})")
    doomed = plan(root, keep_backups, keep_last)
    total = 0
    for path in doomed:
        size = path.stat().st_size
        total += size
        print(f"{'removed' if yes else 'would remove'} {path} ({size / 2**20:.1f} MB)")
        if yes:
            path.unlink(missing_ok=True)
    verb = "freed" if yes else "would free"
    print(f"{len(doomed)} files, {verb} {total / 2**30:.2f} GB" + ("" if yes else "; pass --yes to delete"))
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepfake.clean", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a folder holding run directories (outputs/, multirun/, a mirror)")
    parser.add_argument("--yes", action="store_true", help="delete; without it, only list")
    parser.add_argument("--keep-backups", type=int, default=1, help="newest backups kept per run (default 1)")
    parser.add_argument("--keep-last", action="store_true", help="keep last.pt of finished runs too")
    args = parser.parse_args(argv)
    run_reporting_errors(clean, args.root, args.yes, args.keep_backups, args.keep_last)


if __name__ == "__main__":
    main()
