from pathlib import Path

import pytest
import torch

from deepfake.data import DataModule
from deepfake.data.dataset import EpochSampler
from deepfake.data.samples import scan_split
from deepfake.errors import DataError
from tests.conftest import make_folder_dataset


def test_folder_scan_labels_videos_and_methods(folder_dataset: Path) -> None:
    samples = scan_split(folder_dataset, "train", ["real"], ["fake"])
    assert len(samples) == 24
    by_path = {Path(s.path).relative_to(folder_dataset / "train").as_posix(): s for s in samples}
    real = by_path["real/train_r000/0000.jpg"]
    fake = by_path["fake/Deepfakes/train_f001/0001.png"]
    assert (real.label, real.video, real.method) == (0, "real/train_r000", "real")
    assert (fake.label, fake.video, fake.method) == (1, "fake/Deepfakes/train_f001", "Deepfakes")
    assert {s.method for s in samples if s.label} == {"Deepfakes", "FaceSwap"}


def test_custom_class_folder_names(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d", videos=1, frames=1)
    for split in ("train", "val", "test"):
        (root / split / "real").rename(root / split / "original")
    samples = scan_split(root, "train", ["original"], ["fake"])
    assert sorted(s.label for s in samples) == [0, 1]


def test_missing_root_names_expected_layout(tmp_path: Path) -> None:
    dm = DataModule(kind="folder", root=str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"does not exist.*Expected layout: <root>/\{train,val,test\}"):
        dm.setup()


def test_empty_class_folder_is_named(folder_dataset: Path) -> None:
    for f in (folder_dataset / "val" / "fake").rglob("*.*"):
        f.unlink()
    dm = DataModule(kind="folder", root=str(folder_dataset))
    with pytest.raises(DataError, match=r"val/fake holds no images"):
        dm.setup()


def test_loader_yields_uint8_at_the_configured_size(folder_dataset: Path) -> None:
    dm = DataModule(kind="folder", root=str(folder_dataset), img_size=24, num_workers=0, batch_size=4)
    dm.setup()
    images, labels, index = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 24, 24)
    assert labels.dtype == torch.int64 and index.shape == (4,)


def test_augmentation_depends_on_seed_epoch_index_not_workers(folder_dataset: Path) -> None:
    def first_batches(workers: int) -> list[torch.Tensor]:
        dm = DataModule(
            kind="folder", root=str(folder_dataset), img_size=24, num_workers=workers, batch_size=4
        )
        dm.setup()
        loader = dm.train_dataloader()
        return [b[0] for b in loader]

    a, b = first_batches(0), first_batches(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_sampler_resumes_mid_epoch() -> None:
    sampler = EpochSampler(10, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=4)
    assert list(sampler) == full[4:]
    sampler.set_epoch(3)
    assert [i for i, _ in sampler] != [i for i, _ in full]
