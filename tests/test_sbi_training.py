"""The SBI bar: a tiny model trained on real faces plus self-blended fakes detects the synthetic set's fakes."""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake.data import DataModule
from deepfake.data.synthetic import generate_synthetic_dataset
from deepfake.evaluation.metrics import detection_metrics
from deepfake.model.detector import get_model
from deepfake.system.precision import Precision
from deepfake.training.engine import validate


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_real_plus_sbi_training_detects_unseen_synthetic_fakes(
    compose_cfg, tmp_path: Path, restore_threads: None
) -> None:
    from train import train

    # The default generator's faces and fakes; many identities of one frame each generalise best.
    videos = {"train": 800, "val": 60, "test": 300}
    root = generate_synthetic_dataset(
        tmp_path / "synthetic", img_size=64, videos_per_split=videos, frames_per_video=1
    )
    overrides = [
        "model=tiny", f"base_path={tmp_path}", "data=folder", f"data.root={root}", "data.img_size=64",
        "data.fake_synthesis=sbi", "data.sbi.real_only=true",  # the train split's own fakes are never seen
        "data.augment.crop=false",  # resized crops blur the blending boundary the detector must learn
        "data.augment.jpeg.enabled=true", "data.augment.jpeg.quality=[85,95]",
        "data.num_workers=1", "hardware.num_threads=1",  # one loader worker and one math thread: 2 cores
        "training.batch_size=16", "training.num_epochs=6", "logging.tensorboard=false", "backup.enabled=false",
    ]  # fmt: skip
    train(compose_cfg(overrides))
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert "data train: 400 images (400 real, 0 fake) + 400 SBI fakes" in (run / "train.log").read_text()

    # Held-out test split: the generator's own SBI fakes, never used for training or model selection.
    model = get_model("tiny")
    model.load_state_dict(torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"])
    dm = DataModule(kind="folder", root=str(root), img_size=64, num_workers=0, batch_size=64)
    dm.setup()
    loader = dm.eval_dataloader("test")
    labels, probs, index = validate(model, loader, Precision("cpu", torch.bfloat16), torch.device("cpu"))
    test = detection_metrics(labels, probs, np.asarray(loader.dataset.videos, dtype=object)[index])
    best_val = json.loads((run / "metrics.json").read_text())["best"]["value"]
    assert labels.sum() == 150 and len(labels) == 300
    print(f"held-out test AUC {test['val/auc']:.3f}, best val AUC {best_val:.3f}")
    assert test["val/auc"] >= 0.8, (test, best_val)
