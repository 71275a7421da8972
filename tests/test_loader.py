"""The shared-slot loader yields exactly a DataLoader's batches, reuses its slots, and never overwrites one in use."""

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from deepfake.data import DataModule
from deepfake.data.augment import build_augment
from deepfake.data.dataset import EpochSampler, FaceDataset
from deepfake.data.loader import SlotLoader
from deepfake.data.workers import init_worker
from deepfake.errors import ConfigError, DataError

SIZE = 24
AUGMENT = {"noise": {"enabled": True, "p": 1.0}, "cutout": {"enabled": True}}


def face_dataset(root: Path) -> FaceDataset:
    dm = DataModule(kind="folder", root=str(root), img_size=SIZE, num_workers=0, fake_synthesis="sbi")
    dm.setup()
    return FaceDataset(dm.samples["train"], build_augment(SIZE, AUGMENT), seed=3, decode_size=SIZE,
                       sbi_sources=dm.sbi_sources)  # fmt: skip


def slot_loader(
    ds: Dataset, sampler: EpochSampler, workers: int, persistent: bool = True, **kw: object
) -> SlotLoader:
    options = {"batch_size": 5, "drop_last": False, **kw}
    return SlotLoader(ds, sampler, options.pop("batch_size"), (3, SIZE, SIZE), num_workers=workers,  # type: ignore[arg-type]
                      prefetch_factor=2 if workers else None, persistent_workers=persistent and workers > 0,
                      pin_memory=False, worker_init_fn=init_worker, **options)  # fmt: skip


def reference(
    ds: Dataset, sampler: EpochSampler, epoch: int, batch_size: int = 5, drop_last: bool = False
) -> list:
    sampler.set_epoch(epoch)
    return list(DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last))


def same(batches: list, expected: list) -> bool:
    return len(batches) == len(expected) and all(
        all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        for a, b in zip(batches, expected, strict=True)
    )


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
@pytest.mark.parametrize(("workers", "persistent"), [(0, False), (2, True), (2, False)])
def test_batches_equal_a_dataloaders_and_are_kept_intact(
    folder_dataset: Path, workers: int, persistent: bool
) -> None:
    ds = face_dataset(folder_dataset)  # 36 items: 7 full batches of 5 and a last one of 1
    sampler = EpochSampler(len(ds), seed=3)
    loader = slot_loader(ds, sampler, workers, persistent)
    assert len(loader) == 8 and len(slot_loader(ds, sampler, workers, drop_last=True)) == 7
    for epoch in (1, 2):
        expected = reference(ds, sampler, epoch)
        sampler.set_epoch(epoch)
        kept = list(loader)  # every batch held at once: more than there are slots
        assert same(kept, expected)
        assert kept[0][0].dtype == torch.uint8 and kept[0][0].is_contiguous(memory_format=torch.channels_last)
        del kept  # lets the slots go before the next epoch
    assert (
        len(loader.pool.slots) == loader.pool.count
    )  # the pool never grows; held batches took PyTorch's path


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_slots_are_reused_when_the_caller_lets_each_batch_go(folder_dataset: Path) -> None:
    ds = face_dataset(folder_dataset)
    sampler = EpochSampler(len(ds), seed=3)
    loader = slot_loader(ds, sampler, workers=2)
    expected = reference(ds, sampler, 1)
    sampler.set_epoch(1)
    storages = []
    for (images, labels, index), (x, y, i) in zip(loader, expected, strict=True):
        storages.append(images.untyped_storage().data_ptr())
        assert torch.equal(images, x) and torch.equal(labels, y) and torch.equal(index, i)
    slots = {s.untyped_storage().data_ptr() for s in loader.pool.slots}
    assert set(storages) <= slots  # every batch was written in place by a worker, none copied


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_an_abandoned_epoch_gives_its_slots_back(folder_dataset: Path) -> None:
    ds = face_dataset(folder_dataset)
    sampler = EpochSampler(len(ds), seed=3)
    loader = slot_loader(ds, sampler, workers=2)
    sampler.set_epoch(1)
    for _ in loader:
        break  # the workers were still filling prefetched slots
    assert loader.pool.filling
    expected = reference(ds, sampler, 2)
    sampler.set_epoch(2)
    assert same(list(loader), expected)
    assert not loader.pool.filling


def test_too_little_shared_memory_names_the_fix(
    folder_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "deepfake.data.loader.shutil.disk_usage",
        lambda _: shutil._ntuple_diskusage(2**30, 2**30 - 2**20, 2**20),
    )
    ds = face_dataset(folder_dataset)
    loader = slot_loader(ds, EpochSampler(len(ds)), workers=2, batch_size=512)
    with pytest.raises(ConfigError, match=r"MiB of shared memory .* lower data\.prefetch_factor.*--shm-size"):
        next(iter(loader))


class WrongSize(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        return torch.zeros(3, SIZE + 1, SIZE, dtype=torch.uint8), 0, key[0]


def test_an_image_of_the_wrong_size_is_named() -> None:
    with pytest.raises(
        RuntimeError, match=r"sample 0 has shape \(3, 25, 24\) but the batch holds \(3, 24, 24\)"
    ):
        next(iter(slot_loader(WrongSize(), EpochSampler(4, shuffle=False), workers=0)))


def test_loading_in_the_main_process_leaves_the_training_rng_alone(folder_dataset: Path) -> None:
    """Without workers the samples are seeded in this process; dropout must draw as if they were not (the
    DataModule also gives each loader its own generator, so starting an epoch draws nothing either)."""
    ds = face_dataset(folder_dataset)
    sampler = EpochSampler(len(ds), seed=3)
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    for _ in slot_loader(ds, sampler, workers=0, generator=torch.Generator().manual_seed(0)):
        pass
    assert torch.equal(torch.rand(4), expected)


class Unreadable(Dataset):
    """Item 7 fails as an unreadable file does: a DataError naming the file."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index = key[0]
        if index == 7:
            raise DataError("cannot read image /data/bad.txt: not an image")
        return torch.full((3, SIZE, SIZE), index, dtype=torch.uint8), 0, index


def test_a_workers_user_error_comes_back_as_itself_and_stops_the_workers() -> None:
    """Torch re-raises a worker's error as a multi-line 'Caught DataError in DataLoader worker process 1...'
    and keeps persistent workers alive, which made evaluate.py hang at exit after printing it."""
    loader = slot_loader(Unreadable(), EpochSampler(12, shuffle=False), workers=2)
    with pytest.raises(DataError) as caught:
        list(loader)
    assert str(caught.value) == "cannot read image /data/bad.txt: not an image"
    assert loader.loader._iterator is None  # workers shut down: nothing left for the exit handler to join


def test_device_decodings_worker_error_comes_back_as_itself_too(tmp_path: Path) -> None:
    """data.decode=gpu's loader (run here on the CPU): the same one-line error, the same shutdown."""
    from deepfake.data.device_loader import DeviceDecodeLoader, PayloadFiles, collate_payloads
    from deepfake.data.samples import Sample

    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n")
    good = tmp_path / "face.png"
    Image.new("RGB", (SIZE, SIZE), (90, 90, 90)).save(good)
    samples = [Sample(path=str(p), label=0, video=str(p), method="") for p in (good, good, bad, good)]
    ds = FaceDataset(samples, None, seed=0, decode_size=SIZE, deferred=True)
    loader = DataLoader(PayloadFiles(ds), batch_size=2, sampler=EpochSampler(4, shuffle=False),
                        collate_fn=collate_payloads, num_workers=2, persistent_workers=True,
                        worker_init_fn=init_worker)  # fmt: skip
    device_loader = DeviceDecodeLoader(loader, SIZE, torch.device("cpu"))
    with pytest.raises(DataError) as caught:
        list(device_loader)
    assert str(caught.value).startswith(f"cannot read image {bad}: cannot identify image file")
    assert "\n" not in str(caught.value) and loader._iterator is None
