"""Start-up cost: importing train.py must not load what only some runs use, and explanations off cost nothing."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_cli

HEAVY = ("sklearn", "matplotlib", "tensorboard", "torch.utils.tensorboard", "optuna", "hydra_plugins")


@pytest.mark.cli
def test_import_train_leaves_heavy_modules_unloaded() -> None:
    """One subprocess (a clean sys.modules), no training: about as cheap as an import of torch."""
    code = f"import json, sys, train; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    proc = run_cli(["-c", code], cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.cli
def test_explanations_off_never_import_grad_cam() -> None:
    """Every module that makes explanations, and the entry points, import without grad-cam: it loads only once
    an explanation is asked for (inside `deepfake.explain.cam` and `overlay` functions)."""
    modules = [
        "train", "predict", "evaluate", "deepfake.explain.cam", "deepfake.explain.target", "deepfake.explain.overlay",
        "deepfake.explain.faithfulness", "deepfake.explain.grid", "deepfake.explain.embeddings",
        "deepfake.prediction.explanations", "deepfake.evaluation.explanations", "deepfake.reporting.explanations",
        "deepfake.training.faithfulness",
    ]  # fmt: skip
    code = (
        f"import importlib, json, sys; [importlib.import_module(m) for m in {modules!r}]; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pytorch_grad_cam', 'ttach', 'cv2'))))"
    )
    proc = run_cli(["-c", code], cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
