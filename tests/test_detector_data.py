"""The blend masks through the data path (`model.mask_head`), the mask head learning them, and their
TensorBoard grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from deepfake.data.augment import build_augment
from deepfake.data.dataset import FaceDataset
from deepfake.data.samples import scan_split
from deepfake.data.sbi import MASK_SCALE, UNKNOWN_MASK, self_blend
from deepfake.model.detector import get_model
from deepfake.model.mask_head import mask_loss
from deepfake.reporting.masks import log_mask_grid
from tests.conftest import make_folder_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    root = make_folder_dataset(tmp_path_factory.mktemp("masks") / "data", videos=2, frames=2)
    return scan_split(root, "train", ["real"], ["fake"])


def datasets(samples: list[Any], transform: Any) -> tuple[FaceDataset, FaceDataset, list[int]]:
    reals = [i for i, s in enumerate(samples) if s.label == 0]
    kwargs = {"seed": 3, "decode_size": 32, "sbi_sources": reals}
    return (
        FaceDataset(samples, transform, masks=True, **kwargs),
        FaceDataset(samples, transform, **kwargs),
        reals,
    )


def test_batches_carry_sbi_masks_empty_real_masks_and_unknown_fake_masks(samples: list[Any]) -> None:
    with_masks, plain, reals = datasets(samples, build_augment(32, {"crop": True, "hflip": True}))
    fake = next(i for i, s in enumerate(samples) if s.label == 1)
    sbi = len(samples)  # the first SBI fake
    for index in (reals[0], fake, sbi):
        item, _, _ = with_masks[(index, 1)]
        assert item.shape == (4, 32, 32) and item.dtype == torch.uint8
        assert torch.equal(item[:3], plain[(index, 1)][0])  # the image is augmented exactly as without masks
    assert (with_masks[(reals[0], 1)][0][3] == 0).all()
    assert (with_masks[(fake, 1)][0][3] == UNKNOWN_MASK).all()
    mask = with_masks[(sbi, 1)][0][3]
    assert 0 < mask.max() <= MASK_SCALE and mask.float().mean() < MASK_SCALE / 2


def test_an_unaugmented_sbi_mask_covers_every_changed_pixel(samples: list[Any]) -> None:
    with_masks, _, reals = datasets(samples, None)
    item = with_masks[(len(samples), 0)][0]
    source = with_masks.load(reals[0])
    changed = (item[:3] != source).any(0)
    assert changed.any() and (item[3][changed] > 0).all()


def test_the_mask_head_loss_falls_on_sbi_data_in_a_few_steps(samples: list[Any]) -> None:
    with_masks, _, reals = datasets(samples, None)
    keys = [*reals, *range(len(samples), len(with_masks))]
    batch = torch.stack([with_masks[(i, 0)][0] for i in keys])
    torch.manual_seed(0)
    model = get_model("tiny", img_size=32, mask_head=True).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        _, masks = model(batch)
        loss = mask_loss(masks, batch[:, 3:], "bce")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


class _Board:
    """A TensorBoardLogger stand-in that keeps what was logged."""

    writer = object()

    def __init__(self) -> None:
        self.grids: list[tuple[str, torch.Tensor, int, int]] = []

    def image_grid(self, tag: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
        self.grids.append((tag, images, step, nrow))


def test_tensorboard_shows_blended_faces_true_and_predicted_masks(samples: list[Any], tmp_path: Path) -> None:
    dataset = FaceDataset(samples, None, decode_size=32)
    model = get_model("tiny", img_size=32, mask_head=True).train()
    board = _Board()
    log_mask_grid(board, model, dataset, step=7, count=2)  # type: ignore[arg-type]
    ((tag, rows, step, nrow),) = board.grids
    assert (tag, step, nrow) == ("val/blend_masks", 7, 3)
    assert rows.shape == (6, 3, 32, 32) and rows.dtype == torch.uint8
    first_real = next(i for i, s in enumerate(samples) if s.label == 0)
    fake, truth = self_blend(dataset.load(first_real), torch.Generator().manual_seed(first_real))
    assert torch.equal(rows[0], fake)
    assert torch.equal(rows[1][0], (truth * 255).round().to(torch.uint8))
    assert model.training  # the model is handed back in the mode it came in
