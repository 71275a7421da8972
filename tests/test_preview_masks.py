"""`predict.py preview=true` with a `model.mask_head=true` detector: the sheet's faces carry its predicted mask."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from deepfake.model.detector import get_model
from deepfake.model.mask_head import mask_overlay
from deepfake.prediction.preview import overlay_masks
from deepfake.prediction.videos import VideoResult


def faces(n: int, size: int) -> list[tuple[np.ndarray, float, int]]:
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), 0.9 - 0.1 * i, i) for i in range(n)]


def test_the_predicted_blend_mask_is_painted_over_each_face_of_the_sheet() -> None:
    torch.manual_seed(0)
    model = get_model("tiny", img_size=32, mask_head=True).eval()
    result = VideoResult("clip.mp4", top_faces=faces(2, 48))
    originals = [crop.copy() for crop, _, _ in result.top_faces]
    overlay_masks(result, model, torch.device("cpu"))
    x = F.resize(torch.from_numpy(np.stack(originals)).permute(0, 3, 1, 2), [32, 32], antialias=True)
    masks = model.predict_mask(x)[:, 0].numpy()
    for (painted, prob, frame), crop, mask, (_, want_prob, want_frame) in zip(
        result.top_faces, originals, masks, faces(2, 48), strict=True
    ):
        assert (prob, frame) == (want_prob, want_frame)
        assert np.array_equal(painted, mask_overlay(crop, mask))
        assert not np.array_equal(painted, crop)  # a sigmoid mask is never all zero


def test_a_model_without_a_mask_head_leaves_the_faces_alone() -> None:
    result = VideoResult("clip.mp4", top_faces=faces(2, 48))
    before = [crop.copy() for crop, _, _ in result.top_faces]
    overlay_masks(result, get_model("tiny", img_size=32).eval(), torch.device("cpu"))
    assert all(np.array_equal(a, b) for (a, _, _), b in zip(result.top_faces, before, strict=True))
