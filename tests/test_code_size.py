"""The package stays readable: no module over 400 lines, no function over 60 (issue 26), and the Trainer's
attributes are all first set in `__init__` or `setup()`, so a reader finds every part in one place."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "deepfake"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[tuple[Path, str]]:
    return [(path, path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))]


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p, text in _modules()
        if (n := len(text.splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"split these modules by job (lines): {long}"


def test_no_function_over_60_lines() -> None:
    long = {
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}": span
        for path, text in _modules()
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (span := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES
    }
    assert not long, f"split these functions (lines, decorators excluded): {long}"


def _assigned_self_attributes(function: ast.FunctionDef) -> set[str]:
    targets = [
        target
        for node in ast.walk(function)
        for target in (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign | ast.AugAssign)
            else []
        )
    ]
    return {
        e.attr
        for target in targets
        for e in ast.walk(target)
        if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "self"
    }


def test_trainer_attributes_are_first_set_in_init_or_setup() -> None:
    """Builders return parts (training/setup.py); only `Trainer.__init__` and `Trainer.setup` put them on self."""
    methods: dict[str, set[str]] = {}
    for name in ("training/runner.py", "training/setup.py"):
        for cls in ast.parse((PACKAGE / name).read_text()).body:
            if isinstance(cls, ast.ClassDef) and cls.name in ("Trainer", "TrainerSetup"):
                for fn in cls.body:
                    if isinstance(fn, ast.FunctionDef):
                        methods[f"{cls.name}.{fn.name}"] = _assigned_self_attributes(fn)
    assert {"Trainer.__init__", "Trainer.setup"} <= set(methods)
    in_one_place = methods["Trainer.__init__"] | methods["Trainer.setup"]
    assert {"model", "optimizer", "train_loader", "observers", "state", "best", "stop"} <= in_one_place
    elsewhere = {f"{m}: {a}" for m, attrs in methods.items() for a in attrs - in_one_place}
    assert not elsewhere, f"set these in Trainer.setup() from a builder's return value: {sorted(elsewhere)}"
    builders = {m: attrs for m, attrs in methods.items() if m.startswith("TrainerSetup.")}
    assert not any(builders.values()), f"builders return their parts instead of setting them: {builders}"
