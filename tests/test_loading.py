"""Loading: caches serve the decode path's pixels, frame caps, class balance, device-side decoding."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from deepfake.data import DataModule
from deepfake.data.convert import main as convert_main
from deepfake.data.dataset import EpochSampler, FaceDataset
from deepfake.data.device_loader import DeviceDecodeLoader, collate_payloads
from deepfake.errors import ConfigError, DataError
from deepfake.model.detector import get_model
from deepfake.system.precision import Precision
from deepfake.training.engine import LoopConfig, StepContext, TrainState, train_epoch
from tests.conftest import FAST, make_folder_dataset

ROBUST = {"jpeg": {"enabled": True}, "noise": {"enabled": True}, "cutout": {"enabled": True}}


def batches(dm: DataModule, split: str = "train") -> list[torch.Tensor]:
    loader = dm.train_dataloader() if split == "train" else dm.eval_dataloader(split)
    loader.sampler.set_epoch(1)
    return [b[0] for b in loader]


def module(root: Path, **kwargs: object) -> DataModule:
    options = {"img_size": 24, "num_workers": 0, "batch_size": 4, "augment": ROBUST, **kwargs}
    dm = DataModule(kind="folder", root=str(root), **options)  # type: ignore[arg-type]
    dm.setup()
    return dm


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
@pytest.mark.parametrize("cache", ["ram", "disk"])
def test_cache_serves_the_same_pixels_as_decoding(folder_dataset: Path, cache: str) -> None:
    plain = module(folder_dataset, fake_synthesis="sbi")
    cached = module(folder_dataset, fake_synthesis="sbi", cache=cache)
    for split in ("train", "val"):
        a, b = batches(plain, split), batches(cached, split)
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_disk_cache_is_keyed_shared_and_reopened_in_workers(
    folder_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path / "cache"))
    first = module(folder_dataset, cache="disk")
    first.dataset("val")
    files = list((tmp_path / "cache" / "decoded").iterdir())
    assert [f.name.split("-")[1] for f in files] == ["24x24.npy"] and np.load(files[0]).shape == (
        24,
        24,
        24,
        3,
    )
    stamp = files[0].stat().st_mtime_ns
    second = module(folder_dataset, cache="disk", num_workers=2)
    assert [b.shape for b in batches(second, "val")] == [(8, 3, 24, 24)] * 3
    assert files[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    module(folder_dataset, cache="disk", img_size=16).dataset("val")
    assert len(list(files[0].parent.glob("*-24x16.npy"))) == 1  # another size is another cache


def test_frames_per_video_keeps_evenly_spaced_frames(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d", videos=2, frames=5, size=8)
    dm = module(root, frames_per_video=3)
    kept = [Path(s.path).stem for s in dm.samples["train"] if s.video == "real/train_r000"]
    assert kept == ["0000", "0002", "0004"]
    assert all(
        len([s for s in dm.samples[k] if s.video == v]) == 3
        for k in dm.samples
        for v in {s.video for s in dm.samples[k]}
    )


def imbalanced_manifest(tmp_path: Path) -> Path:
    root = make_folder_dataset(tmp_path / "d", videos=6, frames=3, size=8)
    for f in sorted((root / "train" / "fake").rglob("*.*"))[2:]:
        f.unlink()
    out = tmp_path / "m.csv"
    convert_main(["folder", str(root), "--out", str(out)])
    return out


def test_weighted_sampler_balances_classes_and_resumes(tmp_path: Path) -> None:
    dm = DataModule(kind="manifest", manifest=str(imbalanced_manifest(tmp_path)), img_size=8, num_workers=0,
                    balance="weighted_sampler", batch_size=4)  # fmt: skip
    dm.setup()
    labels = dm.dataset("train").labels
    assert labels.tolist().count(1) == 2 and len(labels) == 20
    sampler = dm.train_dataloader().sampler
    drawn = []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        drawn += [labels[i] for i, _, _ in sampler]
    assert 0.4 < np.mean(drawn) < 0.6  # 10% fakes in the data, about half in what is drawn
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, start=7)
    assert list(sampler) == full[7:]
    repeats = [key for key in full if key[2] > 0]
    assert repeats and all(len(k) == 3 for k in full)
    ds = dm.dataset("train")
    i, epoch, draw = repeats[0]
    assert not torch.equal(ds[(i, epoch, draw)][0], ds[(i, epoch, 0)][0])  # a repeat is augmented afresh


def test_pos_weight_weights_the_fake_loss(tmp_path: Path) -> None:
    dm = DataModule(kind="manifest", manifest=str(imbalanced_manifest(tmp_path)), img_size=8, num_workers=0,
                    balance="pos_weight", batch_size=20)  # fmt: skip
    dm.setup()
    assert dm.pos_weight == pytest.approx(18 / 2)
    assert DataModule(kind="folder", root=str(tmp_path / "d")).pos_weight is None
    model = get_model("tiny")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        logits = model(batch[0])
    expected = F.binary_cross_entropy_with_logits(logits, batch[1].float(), pos_weight=torch.tensor(9.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    ctx = StepContext(model, opt, Precision("cpu", None), torch.device("cpu"))
    stats = train_epoch(ctx, [batch], TrainState(), LoopConfig(pos_weight=dm.pos_weight), num_batches=1)
    assert stats["train/epoch_loss"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_device_decode_path_matches_the_worker_path(folder_dataset: Path) -> None:
    """`data.decode=gpu` minus the GPU: bytes in workers, batch decode + SBI + augment after, same pixels."""
    dm = module(folder_dataset, fake_synthesis="sbi", augment={**ROBUST, "blur": {"enabled": True}})
    ds = dm.dataset("train")
    deferred = FaceDataset(ds.samples, ds.transform, seed=ds.seed, decode_size=24, sbi_sources=ds.sbi_sources,
                           deferred=True)  # fmt: skip
    sampler = EpochSampler(len(ds), seed=ds.seed)
    sampler.set_epoch(2)
    loader = DataLoader(deferred, batch_size=8, sampler=sampler, collate_fn=collate_payloads, num_workers=2)
    torch.manual_seed(123)
    outer = torch.rand(3)
    device_batches = list(DeviceDecodeLoader(loader, 24, torch.device("cpu")))
    torch.manual_seed(123)
    assert torch.equal(outer, torch.rand(3))  # per-sample seeding left the training RNG alone
    worker = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=0)
    for (a, la, ia), (b, lb, ib) in zip(device_batches, worker, strict=True):
        assert a.dtype == torch.uint8 and a.shape[1:] == (3, 24, 24)
        assert torch.equal(la, lb) and torch.equal(ia, ib)
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_decode_without_cuda_is_a_config_error(folder_dataset: Path) -> None:
    with pytest.raises(ConfigError, match=r"data.decode=gpu .* needs a CUDA GPU.*use data.decode=cpu"):
        DataModule(kind="folder", root=str(folder_dataset), decode="gpu")


def test_manifest_without_a_val_split_says_how_to_add_one(tmp_path: Path, folder_dataset: Path) -> None:
    out = tmp_path / "m.csv"
    convert_main(["folder", str(folder_dataset), "--out", str(out)])
    out.write_text("".join(line for line in out.read_text().splitlines(True) if ",val," not in line))
    dm = DataModule(kind="manifest", manifest=str(out))
    with pytest.raises(DataError, match=r"no 'val' split .*splits found: test, train.*--val-fraction"):
        dm.setup()


@pytest.mark.slow
def test_train_from_a_manifest_with_every_data_option(
    compose_cfg, folder_dataset: Path, tmp_path: Path
) -> None:
    from train import train

    manifest = tmp_path / "lists" / "data.csv"
    convert_main(["folder", str(folder_dataset), "--out", str(manifest)])
    overrides = [*FAST, "data=manifest", f"data.manifest={manifest}", f"base_path={tmp_path}", "data.cache=disk",
                 "data.frames_per_video=2", "data.balance=pos_weight", "data.fake_synthesis=sbi", "data.sbi.ratio=0.5",
                 "data.augment.jpeg.enabled=true", "data.augment.downscale.enabled=true"]  # fmt: skip
    cfg = compose_cfg(overrides)
    assert cfg.data.kind == "manifest" and cfg.data.root is None
    train(cfg)
    (run,) = (tmp_path / "outputs").glob("*/*")
    log = (run / "train.log").read_text()
    assert "data train: 16 images (8 real, 8 fake) + 4 SBI fakes" in log
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2 and metrics["stop_reason"] == "completed"


def test_preview_is_the_trained_image_and_leaves_the_rng_alone(folder_dataset: Path) -> None:
    """TensorBoard's grid of first training images: the same pixels whether items are decoded in workers or
    deferred to the device (`data.decode=gpu` ships JPEG bytes), and no reseeding of the training RNG."""
    ds = module(folder_dataset, fake_synthesis="sbi").dataset("train")
    deferred = FaceDataset(ds.samples, ds.transform, seed=ds.seed, decode_size=24, sbi_sources=ds.sbi_sources,
                           deferred=True)  # fmt: skip
    assert deferred[(0, 1)][0].dim() == 1  # a JPEG's bytes, not an image
    indices = (0, 3, len(ds) - 1)  # the last index is an SBI fake
    trained = [ds[(i, 1)][0] for i in indices]  # what the loader yields (this reseeds the global RNG)
    torch.manual_seed(5)
    for index, expected in zip(indices, trained, strict=True):
        image = deferred.preview(index, 1)
        assert image.shape == (3, 24, 24) and torch.equal(image, expected)
        assert torch.equal(ds.preview(index, 1), expected)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
