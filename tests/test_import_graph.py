"""The package's imports run one way: read from the source with `ast`, nothing imported.

Every import counts, at module level or inside a function or `if TYPE_CHECKING:` block, because a lazy import
is still a dependency: it only moves the failure to the first call. Rooms (subpackages, and the ground floor's
top-level modules) are listed bottom to top; a module may import its own room and the rooms below it, never one
above, so no circle between rooms can form. docs/architecture.md lists the same rooms in the same order.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "deepfake"
ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"

#: The rooms, bottom to top. A room is a subpackage (`deepfake.<name>`), except the ground floor and the top,
#: which gather top-level modules. `explain` (Grad-CAM) and `serving` (serve.py) are reserved places. The
#: package's own `__init__` (the public API: `from deepfake import train`) belongs to `commands`, the last room.
GROUND = ("deepfake.errors", "deepfake.choices", "deepfake.exits", "deepfake.config", "deepfake.version")
PACKAGE_API = "deepfake"
TOP = (
    "deepfake.cli",
    "deepfake.restore",
    "deepfake.clean",
    "deepfake.plot",
    "deepfake.summarize",
    "deepfake.export",
    "deepfake.report",
)
ROOMS = (
    "ground",
    "perturbations",
    "system",
    "runs",
    "data",
    "model",
    "extraction",
    "explain",
    "evaluation",
    "tracking",
    "reporting",
    "checks",
    "training",
    "prediction",
    "serving",
    "sweeps",
    "top",
    "commands",
)
#: The only modules that may import the runner: the rooms above it (sweeps, the entry points and the API).
RUNNER = "deepfake.training.runner"
ABOVE_RUNNER = ("deepfake.sweeps", "deepfake.commands")


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
    assert "deepfake.reporting.figures" in edges["deepfake.reporting.eval_sets"]  # a function-level import


def test_there_are_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_rooms_above_the_runner_import_it() -> None:
    importers = {m for m, targets in graph().items() if RUNNER in targets and not within(m, ABOVE_RUNNER)}
    assert importers == {PACKAGE_API}


def test_atomic_write_comes_from_fileio() -> None:
    """`checkpoint` no longer re-exports it: every writer names the module that owns it."""
    users = [p for p in PACKAGE.rglob("*.py") if "atomic_write" in p.read_text()]
    for path in users:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and any(a.name == "atomic_write" for a in node.names):
                assert node.module == "deepfake.runs.fileio", path


def room_of(module: str) -> str | None:
    """The room a module belongs to; None for a top-level module no room lists (a new one must be placed)."""
    if module == PACKAGE_API:
        return "commands"
    if module in GROUND or module.startswith("deepfake.config."):
        return "ground"
    if module in TOP:
        return "top"
    name = module.split(".")[1]
    return name if (PACKAGE / name).is_dir() else None


def upward(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(module, target) for every import of a room above the module's own."""
    level = {room: i for i, room in enumerate(ROOMS)}
    return {
        (module, target)
        for module, targets in edges.items()
        for target in targets
        if level[room_of(target)] > level[room_of(module)]
    }


def test_every_module_is_in_a_listed_room() -> None:
    assert {m for m in graph() if room_of(m) not in ROOMS} == set(), "add the room to ROOMS and the docs"


def test_rooms_import_only_the_rooms_below_them() -> None:
    """No arrow runs up the list, so there is no circle between rooms either."""
    assert sorted(upward(graph())) == []


def test_the_room_check_finds_an_arrow_up() -> None:
    edges = {"deepfake.data.module": {"deepfake.training.engine", "deepfake.system.hardware"}}
    assert upward(edges) == {("deepfake.data.module", "deepfake.training.engine")}


def test_the_architecture_doc_lists_the_rooms_in_order() -> None:
    """The first column of the rooms table in docs/architecture.md names each room once, bottom to top."""
    text = ARCHITECTURE.read_text()
    table = text[text.index("## Rooms") :].split("\n## ")[0]
    listed = re.findall(r"^\| \d+ \| `([a-z]+)/?` ", table, flags=re.MULTILINE)
    assert listed == list(ROOMS)


def test_every_room_says_what_it_may_import() -> None:
    for room in ROOMS:
        init = PACKAGE / room / "__init__.py"
        if init.is_file():
            assert "May import" in (ast.get_docstring(ast.parse(init.read_text())) or ""), init
