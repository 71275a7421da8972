"""Start-up cost: importing train.py must not load what only some runs use."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_cli

HEAVY = (
    "sklearn",
    "matplotlib",
    "tensorboard",
    "torch.utils.tensorboard",
    "optuna",
    "hydra_plugins",
    "scipy.ndimage",
    "av",
)


@pytest.mark.cli
def test_import_train_leaves_heavy_modules_unloaded() -> None:
    """One subprocess (a clean sys.modules), no training: about as cheap as an import of torch."""
    code = f"import json, sys, train; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    proc = run_cli(["-c", code], cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
