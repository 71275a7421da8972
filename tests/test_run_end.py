"""The end of a run says what happened and what to do next: the test split's score (a report, never a
selection), calibration skipped on too few images, the plots written, and the commands to run next."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from deepfake.checks.start import config_findings
from deepfake.system.console import command_for
from deepfake.training import run_files
from tests.conftest import ROOT, make_folder_dataset
from tests.runs import make_config, run_dir_of


@pytest.mark.slow
def test_a_run_scores_its_test_split_at_the_end_and_skips_calibration_on_few_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from train import train

    data = make_folder_dataset(tmp_path / "data", videos=2, frames=2)  # 8 images in each of train, val, test
    config = make_config(tmp_path, data, **{"training.num_epochs": 1, "training.ema.enabled": False,
                                            "calibration_min_samples": 50, "eval.score_test_split": True})  # fmt: skip
    with caplog.at_level(logging.INFO):
        train(config)
    run = run_dir_of(tmp_path)
    messages = [r.getMessage() for r in caplog.records]
    # the data's own test split, scored with best.pt and said to be a report
    assert (
        "scoring best.pt (epoch 1, chosen on val/auc) on the data's test split: a report, never a selection"
        in messages
    )
    report = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert report["counts"]["images"] == 8 and report["checkpoint"] == str(run / "checkpoints" / "best.pt")
    # 8 validation images are too few to fit a temperature on: skipped, with the reason and the way out
    skipped = [m for m in messages if m.startswith("calibration skipped")]
    assert skipped and "8 validation images, fewer than calibration_min_samples=50" in skipped[0]
    assert "set calibration_min_samples=8 to fit one anyway" in skipped[0]
    assert "calibration" not in torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert "calibration" not in json.loads((run / "metrics.json").read_text())
    # the model as the user named it, and the last lines: what to run next, exactly
    assert "model tiny (timm test_resnet): 0.37M parameters, input 32px" in messages
    assert messages[-2:] == [
        f"next, score it on other data: deepfake-evaluate checkpoint={run.resolve()} 'data.test_sets=[/path/to/faces]'",
        f"next, ask it about a video: deepfake-predict checkpoint={run.resolve()} input=/path/to/video.mp4",
    ]


def test_the_next_commands_follow_how_the_run_was_started(monkeypatch: pytest.MonkeyPatch) -> None:
    assert command_for("evaluate") == "deepfake-evaluate"  # Python API: the installed console script
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train.py")])
    assert command_for("predict") == f"python {ROOT / 'predict.py'}"  # beside the repository script
    monkeypatch.setattr(sys, "argv", [str(Path(sys.executable).parent / "deepfake-train")])
    assert command_for("predict") == "deepfake-predict"


def test_the_plot_list_names_every_plot_of_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """plot_run draws loss, val metrics and ROC; calibration drew reliability.png before: all are named."""
    plots = tmp_path / "plots"
    plots.mkdir()
    drawn = [plots / name for name in ("loss.png", "roc.png", "val_metrics.png")]
    for path in [*drawn, plots / "reliability.png"]:
        path.write_bytes(b"png")
    monkeypatch.setattr("deepfake.reporting.plot.plot_run", lambda run_dir: drawn)
    with caplog.at_level(logging.INFO):
        run_files.write_plots(tmp_path)
    assert "plots: plots/loss.png, plots/reliability.png, plots/roc.png, plots/val_metrics.png" in caplog.text


def test_debug_fast_does_not_warn_about_a_schedule_it_never_runs(compose_cfg) -> None:
    """debug=fast takes one step: 'warmup is as long as the whole training' was a false alarm on every run."""
    warmup = ["training.scheduler.name=cosine", "training.scheduler.warmup_epochs=1"]
    normal = config_findings(compose_cfg(["training.num_epochs=1", *warmup]), num_train=64, batch_size=8)
    assert any("warmup" in f.text for f in normal)
    fast = config_findings(compose_cfg(["debug=fast", *warmup]), num_train=64, batch_size=8)
    assert not [f.text for f in fast if f.level == "warning"]
