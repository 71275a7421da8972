"""`data.decode=gpu`: nvjpeg batch decoding with SBI and augmentations on the GPU (needs CUDA)."""

import json
from pathlib import Path

import pytest
import torch

from deepfake.data import DataModule
from tests.conftest import FAST

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

EVERY_AUGMENTATION = {
    name: {"enabled": True, "p": 1.0}
    for name in ("color_jitter", "grayscale", "blur", "downscale", "noise", "jpeg", "cutout")
}


def test_gpu_batches_match_cpu_decoding(folder_dataset: Path) -> None:
    options = {
        "kind": "folder",
        "root": str(folder_dataset),
        "img_size": 24,
        "num_workers": 2,
        "batch_size": 8,
    }
    gpu, cpu = DataModule(decode="gpu", **options), DataModule(decode="cpu", **options)
    gpu.setup()
    cpu.setup()
    for (a, la, ia), (b, lb, ib) in zip(gpu.eval_dataloader("val"), cpu.eval_dataloader("val"), strict=True):
        assert a.is_cuda and a.dtype == torch.uint8 and a.shape == b.shape
        assert torch.equal(la, lb) and torch.equal(ia, ib)
        assert (a.cpu().float() - b.float()).abs().mean() < 3.0  # nvjpeg and libjpeg round differently


def test_gpu_augments_and_blends_on_the_device(folder_dataset: Path) -> None:
    dm = DataModule(kind="folder", root=str(folder_dataset), img_size=24, num_workers=0, batch_size=8,
                    decode="gpu", fake_synthesis="sbi", augment=EVERY_AUGMENTATION)  # fmt: skip
    dm.setup()
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    first = [images.clone() for images, _, _ in loader]
    loader.sampler.set_epoch(1)
    again = [images for images, _, _ in loader]
    assert all(x.is_cuda and x.dtype == torch.uint8 and x.shape[1:] == (3, 24, 24) for x in first)
    assert all(
        torch.equal(x, y) for x, y in zip(first, again, strict=True)
    )  # seeded per sample on the GPU too
    assert sum(len(x) for x in first) == 36  # 24 images + 12 SBI fakes


@pytest.mark.slow
def test_train_with_gpu_decoding(compose_cfg, folder_dataset: Path, tmp_path: Path) -> None:
    from train import train

    cfg = compose_cfg([*FAST, "data=folder", f"data.root={folder_dataset}", f"base_path={tmp_path}",
                       "data.decode=gpu", "data.augment.jpeg.enabled=true", "data.fake_synthesis=sbi"])  # fmt: skip
    train(cfg)
    (run,) = (tmp_path / "outputs").glob("*/*")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2 and metrics["stop_reason"] == "completed"
    assert json.loads((run / "hardware.json").read_text())["device"].startswith("cuda")
