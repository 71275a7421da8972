"""The SBI bar: a tiny model trained on real faces plus self-blended fakes detects the synthetic set's fakes, and
its Grad-CAM heat lies on the blend (the faithfulness score of training's validation)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake.data import DataModule
from deepfake.data.sbi import sbi_examples
from deepfake.data.synthetic import generate_synthetic_dataset
from deepfake.evaluation.ensemble import Member
from deepfake.evaluation.inference import load_detector
from deepfake.evaluation.metrics import detection_metrics
from deepfake.explain.cam import explain_crops
from deepfake.explain.faithfulness import faithfulness
from deepfake.model.detector import get_model
from deepfake.system.precision import Precision
from deepfake.training.validation import validate


@pytest.mark.slow
def test_real_plus_sbi_training_detects_unseen_synthetic_fakes(compose_cfg, tmp_path: Path) -> None:
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
        # each validation explains 30 SBI fakes of validation faces (HiResCAM at stride 8: an 8 x 8 map at 64 px)
        "eval.explain=hirescam", "model.explain_layer=backbone.layer2", "eval.faithfulness_faces=64",
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
    check_faithfulness(run, root)


def check_faithfulness(run: Path, root: Path) -> None:
    """The last validation's score is the heatmaps of last.pt's weights against the fakes' own blend masks, and it
    is well above chance (the mask area): with the masks moved off the face it falls."""
    final = json.loads((run / "metrics.json").read_text())["final"]
    chance = final["val/mask_area"]
    assert 0.1 < chance < 0.5
    assert final["val/pointing_game"] > 1.5 * chance and final["val/heat_in_mask"] > 1.5 * chance, final
    model = load_detector(run / "checkpoints" / "last.pt").model
    dm = DataModule(kind="folder", root=str(root), img_size=64, num_workers=0)
    dm.setup()
    images, masks = sbi_examples(dm.dataset("val"), 64)
    heats = list(explain_crops([Member(model, 64)], images, "hirescam", "backbone.layer2"))
    assert len(heats) == 30  # the validation split's real faces
    scores = faithfulness(heats, list(masks.numpy()))
    assert scores["pointing_game"] == pytest.approx(final["val/pointing_game"])
    assert scores["heat_in_mask"] == pytest.approx(final["val/heat_in_mask"], rel=1e-5)
    moved = faithfulness(heats, list(np.roll(masks.numpy(), 24, axis=2)))  # 24 of 64 px to the right
    assert (
        moved["pointing_game"] < scores["pointing_game"] / 2
        and moved["heat_in_mask"] < scores["heat_in_mask"] / 2
    )
