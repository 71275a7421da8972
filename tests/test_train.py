"""End-to-end runs: compose -> train -> checkpoints, TensorBoard and metrics.json agree."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deepfake.config import Config
from deepfake.data import DataModule
from deepfake.evaluation.metrics import detection_metrics
from deepfake.model.detector import get_model
from deepfake.system.precision import Precision
from deepfake.training.validation import validate
from tests.conftest import FAST, ROOT, run_cli

TAGS = {"train/loss", "train/lr", "val/auc", "val/acc", "val/eer", "val/ap", "val/loss", "val/video_auc"}


def only_run_dir(base: Path, kind: str = "outputs") -> Path:
    runs = [p for p in (base / kind).glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def reevaluate(checkpoint: dict, data_root: Path) -> dict[str, float]:
    """Rebuild the model from a checkpoint and score the val split exactly as training did."""
    model = get_model("tiny")
    model.load_state_dict(checkpoint["model"])
    dm = DataModule(kind="folder", root=str(data_root), img_size=32, num_workers=0, batch_size=8)
    dm.setup()
    loader = dm.eval_dataloader("val")
    labels, probs, index = validate(model, loader, Precision("cpu", torch.bfloat16), torch.device("cpu"))
    return detection_metrics(labels, probs, np.asarray(loader.dataset.videos, dtype=object)[index])


@pytest.mark.slow
def test_compose_train_checkpoints_tensorboard_metrics(
    compose_cfg, folder_dataset: Path, tmp_path: Path
) -> None:
    from train import train

    cfg = compose_cfg([*FAST, "data=folder", f"data.root={folder_dataset}", f"base_path={tmp_path}"])
    best_value = train(cfg)
    run = only_run_dir(tmp_path)
    assert (run / "train.log").read_text().count("epoch ") >= 2

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["monitor"] == "val/auc"
    assert metrics["best"]["value"] == pytest.approx(best_value)
    assert metrics["epochs_completed"] == 2 and metrics["stop_reason"] == "completed"

    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["train_state"]["epoch"] == 2
    assert best["preprocess"]["img_size"] > 0 and "model:" in best["config"]
    reproduced = reevaluate(best, folder_dataset)
    assert reproduced["val/auc"] == pytest.approx(metrics["best"]["metrics"]["val/auc"], abs=1e-9)
    assert reproduced["val/loss"] == pytest.approx(best["metrics"]["val/loss"], abs=1e-9)
    final_reproduced = reevaluate(last, folder_dataset)
    assert final_reproduced["val/auc"] == pytest.approx(metrics["final"]["val/auc"], abs=1e-9)

    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags >= TAGS
    auc_events = events.Scalars("val/auc")
    assert len(auc_events) == 2
    assert auc_events[-1].value == pytest.approx(metrics["final"]["val/auc"], abs=1e-6)
    assert auc_events[-1].step == last["train_state"]["global_step"] == metrics["global_step"]
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == sorted(set(steps)) and steps[0] == 1


@pytest.mark.slow
def test_original_python_api(tmp_path: Path, folder_dataset: Path) -> None:
    from train import train

    config = Config(base_path=str(tmp_path / "proj"), use_drive=False)
    config.training.batch_size = 8
    config.training.num_epochs = 1
    config.training.learning_rate = 1e-4
    config.model.architecture = "swin_transformer"
    config.model.pretrained = False
    config.model.dropout_rate = 0.3
    config.model.img_size = 32
    config.data.kind = "folder"
    config.data.root = str(folder_dataset)
    config.data.num_workers = 0
    value = train(config)
    run = only_run_dir(tmp_path / "proj")
    assert (run / "checkpoints" / "best.pt").is_file()
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["architecture"] == "swin_tiny_patch4_window7_224"
    assert "dropout_rate: 0.3" in saved["config"]
    assert not math.isnan(value)


#: Long enough that no load on a shared machine reaches it: a guard against a hung run, not a speed limit (the
#: default command's speed goal is benchmarks/README.md's, measured by benchmarks/busy.py and startup.py).
HANG_S = 3 * 3600


@pytest.mark.slow
@pytest.mark.cli
def test_default_command_learns_and_writes_its_run(tmp_path: Path) -> None:
    """The README's main command, unmodified: the embedded synthetic default trains all its epochs, learns (the
    epoch loss falls, val AUC >= 0.90) and leaves the run's files. It asserts no speed."""
    proc = run_cli([str(ROOT / "train.py"), f"base_path={tmp_path}"], cwd=tmp_path, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    run = only_run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    epochs = Config().training.num_epochs
    assert metrics["stop_reason"] == "completed" and metrics["epochs_completed"] == epochs
    assert metrics["best"]["value"] >= 0.90, metrics["best"]

    events = EventAccumulator(str(run))
    events.Reload()
    epoch_loss = [e.value for e in events.Scalars("train/epoch_loss")]
    assert len(epoch_loss) == epochs and epoch_loss[-1] < epoch_loss[0], epoch_loss
    assert max(e.value for e in events.Scalars("val/auc")) == pytest.approx(
        metrics["best"]["value"], abs=1e-6
    )

    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert best["metrics"]["val/auc"] == pytest.approx(metrics["best"]["value"], abs=1e-9)
    assert last["train_state"]["epoch"] == epochs
    assert (run / "train.log").read_text().count("epoch ") >= epochs
    assert list((run / "backups").iterdir()), "the end-of-run backup is missing"
    assert "tensorboard --logdir" in out
    assert f"run directory: {run.resolve()}" in out


@pytest.mark.slow
@pytest.mark.cli
def test_multirun_sweep_lands_in_multirun(tmp_path: Path, folder_dataset: Path) -> None:
    args = [
        str(ROOT / "train.py"),
        "-m",
        f"base_path={tmp_path}",
        "data=folder",
        f"data.root={folder_dataset}",
        *[o.replace("training.num_epochs=2", "training.num_epochs=1") for o in FAST],
        "training.learning_rate=1e-3,3e-4",
    ]
    proc = run_cli(args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in (tmp_path / "multirun").glob("*/*/*/metrics.json"))
    assert [j.name for j in jobs] == ["0", "1"]
    lrs = {o for j in jobs for o in OmegaConf.load(j / ".hydra" / "overrides.yaml") if "learning_rate" in o}
    assert lrs == {"training.learning_rate=0.001", "training.learning_rate=0.0003"}
    for job in jobs:
        assert (job / "checkpoints" / "last.pt").is_file()
        assert list(job.glob("events.out.tfevents.*"))
    # The sweep callback's summary: one row per job, with its overrides and its best monitored value.
    with open(jobs[0].parent / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed")]
    for row, job in zip(rows, jobs, strict=True):
        assert "training.learning_rate=" in row["overrides"]
        assert float(row["best"]) == json.loads((job / "metrics.json").read_text())["best"]["value"]
    assert "2 jobs, 0 failed" in proc.stdout
