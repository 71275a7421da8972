"""The "before" side of a benchmark: this repository at a git ref, as a temporary detached worktree.

with checkout("3b392c2") as root:   # root/train.py is the code of that commit
    subprocess.run([sys.executable, root / "train.py", ...], env=project_env(root))
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def checkout(ref: str | None, default: Path = ROOT) -> Iterator[Path]:
    """`default` when no ref is given; else a worktree of `ref`, removed on exit."""
    if not ref:
        yield default
        return
    with tempfile.TemporaryDirectory(prefix="bench-ref-") as tmp:
        path = Path(tmp) / ref.replace("/", "_")
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


def project_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment that runs `root`'s code: its folder first on the import path (ahead of the editable
    install of this checkout)."""
    return {**os.environ, "PYTHONPATH": str(root), **extra}
