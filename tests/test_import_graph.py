"""The package's imports run one way: read from the source with `ast`, nothing imported.

Every import counts, at module level or inside a function or `if TYPE_CHECKING:` block, because a lazy import
is still a dependency: it only moves the failure to the first call.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deepfake"

#: What the data room may use besides itself: it sits below training, evaluation and reporting.
DATA_MAY_IMPORT = (
    "deepfake.errors",
    "deepfake.cli",
    "deepfake.config",
    "deepfake.choices",
    "deepfake.system",
    "deepfake.runs.fileio",
)
#: What the detector families (streams, fusion, mask head) may use: they sit beside models, below training.
DETECTORS_MAY_IMPORT = (
    "deepfake.errors",
    "deepfake.choices",
    "deepfake.data.sbi",
)
#: The only modules that may import the runner: the rooms above it (the entry points, and sweeps).
RUNNER = "deepfake.training.runner"
ABOVE_RUNNER = ("deepfake.sweeps", "deepfake.commands")
#: The package's own `__init__`: the public API (`from deepfake import train`), above every room.
PACKAGE_API = "deepfake"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports (`from deepfake.x import name` counts as deepfake.x.name when
    that is a module, else as deepfake.x)."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(resolve(a.name) for a in node.names if a.name.startswith("deepfake"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("deepfake"):
            assert node.level == 0, f"{path}: use absolute imports"
            found.update(resolve(f"{node.module}.{a.name}") for a in node.names)
    return {m for m in found if m is not None}


@functools.cache  # the source does not change during a test session; parsing it is the slow part
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, set(known)) - {name} for name, path in known.items()}


def within(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in rooms)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_reader_sees_the_known_edges() -> None:
    edges = graph()
    assert "deepfake.training.engine" in edges["deepfake.training.runner"]
    assert (
        "deepfake.system.distributed" in edges["deepfake.training.runner"]
    )  # `from deepfake.system import x`
    assert "deepfake.reporting.figures" in edges["deepfake.evaluation.scoring"]  # a function-level import


def test_there_are_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_data_imports_only_the_rooms_below_it() -> None:
    wrong = {
        (module, target)
        for module, targets in graph().items()
        if within(module, ("deepfake.data",))
        for target in targets
        if not within(target, ("deepfake.data", *DATA_MAY_IMPORT))
    }
    assert wrong == set(), "deepfake.data may import only " + ", ".join(DATA_MAY_IMPORT)


def test_detectors_import_only_the_modules_below_them() -> None:
    wrong = {
        (module, target)
        for module, targets in graph().items()
        if within(module, ("deepfake.detectors",))
        for target in targets
        if not within(target, ("deepfake.detectors", *DETECTORS_MAY_IMPORT))
    }
    assert wrong == set(), "deepfake.detectors may import only " + ", ".join(DETECTORS_MAY_IMPORT)


def test_only_the_rooms_above_the_runner_import_it() -> None:
    importers = {m for m, targets in graph().items() if RUNNER in targets and not within(m, ABOVE_RUNNER)}
    assert importers == {PACKAGE_API}


def test_nothing_imports_the_public_api_or_the_entry_points() -> None:
    """`deepfake/__init__.py` and `deepfake.commands` reach every room; an import of them from below is a circle
    (the version lives in `deepfake.version` for that reason)."""
    importers = {
        m
        for m, targets in graph().items()
        for t in targets
        if (t == PACKAGE_API or within(t, ("deepfake.commands",))) and not within(m, ("deepfake.commands",))
    }
    assert importers == {PACKAGE_API}


@pytest.mark.parametrize(
    ("room", "forbidden"),
    [
        (
            "deepfake.system",
            ("deepfake.training", "deepfake.evaluation", "deepfake.reporting", "deepfake.runs"),
        ),
        ("deepfake.runs", ("deepfake.training", "deepfake.evaluation", "deepfake.sweeps", "deepfake.checks")),
        ("deepfake.reporting", ("deepfake.training", "deepfake.sweeps", "deepfake.checks")),
        ("deepfake.evaluation", ("deepfake.training.runner", "deepfake.sweeps", "deepfake.checks")),
        ("deepfake.checks", ("deepfake.training.runner", "deepfake.sweeps", "deepfake.evaluation")),
        (
            "deepfake.extraction",
            (
                "deepfake.training",
                "deepfake.evaluation",
                "deepfake.sweeps",
                "deepfake.checks",
                "deepfake.prediction",
            ),
        ),
        # the video path of predict.py: below training; the CLI driver (deepfake.evaluation.predict) calls it
        ("deepfake.prediction", ("deepfake.training", "deepfake.sweeps", "deepfake.checks")),
        # detector families sit beside models.py: below training, evaluation and reporting
        (
            "deepfake.detectors",
            (
                "deepfake.training",
                "deepfake.evaluation",
                "deepfake.reporting",
                "deepfake.sweeps",
                "deepfake.checks",
                "deepfake.prediction",
            ),
        ),
    ],
)
def test_lower_rooms_do_not_import_upward(room: str, forbidden: tuple[str, ...]) -> None:
    wrong = {
        (m, t)
        for m, targets in graph().items()
        if within(m, (room,))
        for t in targets
        if within(t, forbidden)
    }
    assert wrong == set()


def test_atomic_write_comes_from_fileio() -> None:
    """`checkpoint` no longer re-exports it: every writer names the module that owns it."""
    users = [p for p in PACKAGE.rglob("*.py") if "atomic_write" in p.read_text()]
    for path in users:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and any(a.name == "atomic_write" for a in node.names):
                assert node.module == "deepfake.runs.fileio", path
