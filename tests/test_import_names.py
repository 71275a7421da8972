"""Every `from deepfake.x import name` names something module x defines: a module moved by a refactor must not
leave an import that only fails in a subprocess (serve.py, a sweep job) that the fast tier never starts."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deepfake"


@cache
def defined(module: str) -> frozenset[str] | None:
    """Top-level names of a deepfake module (None for a package's submodule list or a module not found)."""
    parts = module.split(".")
    path = ROOT.joinpath(*parts)
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    if not file.is_file():
        return None
    names: set[str] = set()
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):
            return None  # conditional definitions: not checked
    if path.is_dir():
        names.update(p.stem for p in path.glob("*.py"))
        names.update(p.name for p in path.iterdir() if (p / "__init__.py").is_file())
    if "__getattr__" in names:
        return None  # PEP 562: names loaded on first use
    return frozenset(names)


def test_every_imported_name_exists() -> None:
    missing = []
    for file in sorted([*PACKAGE.rglob("*.py"), *ROOT.glob("*.py"), *(ROOT / "tests").glob("*.py")]):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepfake"):
                names = defined(node.module)
                if names is None:
                    continue
                missing += [f"{file.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                            if a.name != "*" and a.name not in names]  # fmt: skip
    assert missing == []
