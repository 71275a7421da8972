"""Self-blended fakes: changes stay inside the blend mask, landmarks shape the mask, datasets add SBI fakes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake.data import DataModule
from deepfake.data.sbi import landmark_path, load_landmarks, self_blend
from deepfake.errors import DataError

OFF = {"crop": False, "hflip": False}


def face(size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(40, 200, (3, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("seed", range(6))
def test_output_differs_from_its_source_only_inside_the_mask(seed: int) -> None:
    src = face()
    out, mask = self_blend(src, torch.Generator().manual_seed(seed))
    assert out.shape == src.shape and out.dtype == torch.uint8 and mask.shape == (64, 64)
    changed = (out != src).any(0)
    assert not (changed & (mask == 0)).any()
    assert changed.sum() > 0.5 * (mask > 0.1).sum() > 0
    # Landmark-free: an ellipse around the face centre, never touching the corners.
    assert mask[32, 32] > 0 and mask[:6, :6].max() == 0 and mask[-6:, -6:].max() == 0


def test_same_generator_seed_gives_the_same_fake() -> None:
    a, _ = self_blend(face(), torch.Generator().manual_seed(3))
    b, _ = self_blend(face(), torch.Generator().manual_seed(3))
    c, _ = self_blend(face(), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_landmarks_shape_the_mask() -> None:
    points = torch.tensor([[4.0, 4.0], [26.0, 5.0], [24.0, 24.0], [5.0, 26.0], [14.0, 14.0]])
    out, mask = self_blend(face(), torch.Generator().manual_seed(0), landmarks=points)
    ys, xs = torch.nonzero(mask > 0.2, as_tuple=True)  # blend ratios go down to 0.5
    assert len(ys) > 50 and xs.float().mean() < 20 and ys.float().mean() < 20
    assert mask[40:, 40:].max() == 0 and not ((out != face()).any(0) & (mask == 0)).any()


def test_landmark_files_are_found_and_mapped(tmp_path: Path) -> None:
    frame = tmp_path / "c23" / "frames" / "000" / "0001.png"
    frame.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(frame)
    assert landmark_path(str(frame)) is None
    lm = tmp_path / "c23" / "landmarks" / "000" / "0001.npy"
    lm.parent.mkdir(parents=True)
    np.save(lm, np.array([[20.0, 10.0], [10.0, 0.0]]))
    assert landmark_path(str(frame)) == str(lm)
    # 40x20 frame: centre-cropped to 20x20 (x offset 10), resized to 64
    mapped = load_landmarks(str(lm), (40, 20), 64)
    assert torch.allclose(mapped, torch.tensor([[32.0, 32.0], [0.0, 0.0]]))
    np.save(frame.with_suffix(".npy"), np.zeros((3, 2)))
    assert landmark_path(str(frame)) == str(frame.with_suffix(".npy"))


def test_datamodule_adds_sbi_fakes_to_train_only(folder_dataset: Path) -> None:
    dm = DataModule(kind="folder", root=str(folder_dataset), img_size=32, num_workers=0, augment=OFF,
                    fake_synthesis="sbi", sbi={"ratio": 0.5, "real_only": True})  # fmt: skip
    dm.setup()
    train, val = dm.dataset("train"), dm.dataset("val")
    assert [s.label for s in train.samples] == [0] * 12  # real_only dropped the 12 fake frames
    assert len(train) == 18 and train.labels.tolist() == [0] * 12 + [1] * 6
    assert len(val) == 24 and not val.sbi_sources
    for index in range(12, 18):
        fake, label, _ = train[(index, 0)]
        source = train.load(index)
        assert label == 1 and train.videos[index].endswith("#sbi")
        assert not torch.equal(fake, source)
        assert torch.equal(fake, train[(index, 0)][0]) and not torch.equal(fake, train[(index, 1)][0])
    real, label, _ = train[(0, 0)]
    assert label == 0 and torch.equal(real, train.load(0))


def test_sbi_fakes_follow_their_source_with_the_same_augmentation(folder_dataset: Path) -> None:
    noise = {**OFF, "noise": {"enabled": True, "p": 1.0, "sigma": [20.0, 20.0]}}
    dm = DataModule(kind="folder", root=str(folder_dataset), img_size=32, num_workers=0, augment=noise,
                    fake_synthesis="sbi", batch_size=4)  # fmt: skip
    dm.setup()
    train = dm.dataset("train")
    assert train.sbi_sources == [i for i, s in enumerate(train.samples) if s.label == 0]
    sampler = dm.train_dataloader().sampler
    sampler.set_epoch(1)
    order = [i for i, _ in sampler]
    assert sorted(order) == list(range(len(train)))
    for k, source in enumerate(train.sbi_sources):
        fake = len(train.samples) + k
        assert order[order.index(source) + 1] == fake  # the pair shares a batch
        a, b = train[(fake, 1)][0], train[(source, 1)][0]
        # the blend never reaches the corners, and the noise there is the same: one augmentation seed
        assert torch.equal(a[:, :4, :4], b[:, :4, :4]) and not torch.equal(a, b)


def test_sbi_needs_real_faces(tmp_path: Path, folder_dataset: Path) -> None:
    fakes = sorted((folder_dataset / "train" / "fake").rglob("*.png"))
    vals = sorted((folder_dataset / "val").rglob("*.png"))
    lines = (
        ["path,label,split"]
        + [f"{p},fake,train" for p in fakes]
        + [f"{p},{'fake' if 'fake' in p.parts else 'real'},val" for p in vals]
    )
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    dm = DataModule(kind="manifest", manifest=str(tmp_path / "m.csv"), fake_synthesis="sbi")
    with pytest.raises(DataError, match="makes fakes from real faces, but the train split has none"):
        dm.setup()
