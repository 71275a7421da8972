"""Start-up cost: importing train.py must not load what only some runs use, and explanations off cost nothing."""

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
#: What grad-cam brings (`pytorch_grad_cam` imports OpenCV and ttach): loaded only once an explanation is asked for.
GRAD_CAM = ("pytorch_grad_cam", "ttach", "cv2")
#: The entry points and every module that makes explanations (grad-cam is imported inside functions only).
EXPLAINING = (
    "predict", "evaluate", "deepfake.explain.cam", "deepfake.explain.target", "deepfake.explain.overlay",
    "deepfake.explain.faithfulness", "deepfake.explain.grid", "deepfake.explain.embeddings",
    "deepfake.prediction.explanations", "deepfake.evaluation.explanations", "deepfake.reporting.explanations",
    "deepfake.training.faithfulness",
)  # fmt: skip


@pytest.mark.cli
def test_import_train_leaves_heavy_modules_unloaded_and_no_module_loads_grad_cam() -> None:
    """One subprocess (a clean sys.modules), no training: `import train` is about as cheap as an import of torch;
    then importing every explaining module still loads nothing of grad-cam."""
    code = (
        "import importlib, json, sys, train\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
        f"[importlib.import_module(m) for m in {EXPLAINING!r}]\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {GRAD_CAM!r})))"
    )
    proc = run_cli(["-c", code], cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy, grad_cam = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert heavy == [] and grad_cam == []
