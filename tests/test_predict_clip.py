"""predict.py with a video-level clip model (`model=temporal`): a video is one clip, an image is refused in its row.

The clip goes through the same scorer as per-image models (the Ensemble: temperature, flip TTA, members), so a
clip model's video probability equals the model's own output on the clip, divided by its temperature.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from deepfake.data.clips import clip_positions
from deepfake.evaluation.ensemble import Ensemble, Member
from deepfake.model.detector import get_model
from deepfake.prediction.driver import predict
from deepfake.prediction.score import clip_scorer
from deepfake.runs.checkpoint import build_state, save_checkpoint


def clip_model(frames: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("tiny", img_size=32, frames=frames).eval()


@torch.no_grad()
def test_a_clip_scorer_scores_a_videos_crops_as_one_clip_of_evenly_spaced_ones() -> None:
    model = clip_model(3)
    crops = torch.randint(
        0, 256, (7, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    score = clip_scorer(Ensemble([Member(model, 32, temperature=2.0)]), 3)
    probs = score(crops)
    positions = clip_positions(7, 3)
    assert len(set(positions)) == 3
    clip = torch.nn.functional.interpolate(
        crops[positions].float(), size=(32, 32), mode="bilinear", antialias=True
    )
    expected = torch.sigmoid(model(clip.round().clamp(0, 255).to(torch.uint8).unsqueeze(0)) / 2.0)
    assert probs.shape == (7,)
    assert torch.all(probs == probs[0])  # every crop carries the clip's probability
    assert probs[0].item() == pytest.approx(expected.item(), abs=2e-3)


def test_predict_with_a_clip_model_gives_each_image_an_error_row(tmp_path: Path) -> None:
    checkpoint = save_checkpoint(tmp_path / "clip.pt", build_state(model=clip_model(3)))
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "images" / "face.png")
    out = tmp_path / "p.json"
    cfg = {
        "checkpoint": str(checkpoint),
        "input": str(tmp_path / "images"),
        "output": str(out),
        "num_workers": 0,
    }
    predict(OmegaConf.create(cfg))
    (row,) = json.loads(out.read_text())["predictions"]
    assert row["status"] == "error" and row["prob"] is None
    assert row["error"] == (
        "the checkpoint is a video-level clip model (3 frames per clip): it scores videos, not single images"
    )


@pytest.mark.slow
def test_a_clip_model_scores_a_video_once_and_every_frame_row_carries_it(test_videos, tmp_path: Path) -> None:
    """The video path (decode, MTCNN, crops) with a clip model: one clip per video, its probability everywhere."""
    import csv

    checkpoint = save_checkpoint(tmp_path / "clip.pt", build_state(model=clip_model(2)))
    out = tmp_path / "p.csv"
    (row,) = predict(
        {
            "checkpoint": str(checkpoint),
            "input": str(test_videos.pan),
            "output": str(out),
            "num_workers": 0,
            "per_frame": True,
            "extraction": {"frames_per_video": 3},
        }
    )
    assert row["status"] == "ok" and row["frames_used"] == 3 and 0.0 < row["prob"] < 1.0
    with open(out.with_name("p.frames.csv"), newline="") as f:
        frames = list(csv.DictReader(f))
    assert len(frames) == 3
    assert [float(r["face_prob"]) for r in frames] == [pytest.approx(row["prob"], abs=1e-6)] * 3
