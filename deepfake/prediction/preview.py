"""`preview=true`: one PNG per video, the crops a person should look at first and the probability over time.

Sheets go to `<output stem>_preview/<video stem>.png`; names are reduced to safe characters and made unique,
and every path is checked to stay inside that folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

from deepfake.model.mask_head import mask_overlay
from deepfake.prediction.videos import VideoResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def preview_dir(output: Path) -> Path:
    return output.with_name(f"{output.stem}_preview")


def sheet_name(video: str, taken: set[str]) -> str:
    """A file name from the video's stem: safe characters only, at most 100, unique among `taken`."""
    stem = _UNSAFE.sub("_", Path(video).stem).strip("._")[:100] or "video"
    name, n = f"{stem}.png", 2
    while name in taken:
        name, n = f"{stem}_{n}.png", n + 1
    taken.add(name)
    return name


@torch.no_grad()
def overlay_masks(result: VideoResult, model: nn.Module, device: torch.device) -> None:
    """Paint the blend mask a `model.mask_head` detector predicts over each face of the sheet (in red), so the
    sheet shows where the model thinks the face was blended; a model without a mask head leaves them as they are."""
    if getattr(model, "mask_decoder", None) is None or not result.top_faces:
        return
    crops = np.stack([crop for crop, _, _ in result.top_faces])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).to(device)
    x = F.resize(x, [model.img_size, model.img_size], antialias=True)
    masks = model.predict_mask(x)[:, 0].float().cpu().numpy()
    result.top_faces = [
        (mask_overlay(crop, mask), prob, frame)
        for (crop, prob, frame), mask in zip(result.top_faces, masks, strict=True)
    ]


def verdict(result: VideoResult, threshold: float) -> str:
    """The sheet's headline: FAKE or REAL with the probability against the threshold, or why there is none."""
    if result.prob is None:
        return "no face found" if result.status == "no_face" else result.status
    call = "FAKE" if result.prob >= threshold else "REAL"
    return f"{call}: p(fake) {result.prob:.3f} {'>=' if call == 'FAKE' else '<'} threshold {threshold:.3f}"


def write_preview(
    result: VideoResult, folder: Path, name: str, threshold: float, checkpoint: str = ""
) -> Path:
    """The contact sheet of one video as `folder/name` (kept inside `folder`)."""
    path = (folder / name).resolve()
    if path.parent != folder.resolve():
        raise ValueError(f"preview name {name!r} leaves {folder}")
    fig = preview_figure(result, threshold, checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


def preview_figure(result: VideoResult, threshold: float, checkpoint: str = "") -> Figure:
    """The verdict, threshold and checkpoint in the title; the top faces (most suspicious first) over a strip of
    per-frame probabilities, where decoded frames without a face are marked."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, renders headless

    faces = result.top_faces
    cols = max(1, len(faces))
    fig = Figure(figsize=(max(6.0, 1.6 * cols), 4.6))
    grid = fig.add_gridspec(2, cols, height_ratios=[1.3, 1.0])
    for i, (crop, prob, frame) in enumerate(faces):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(crop)
        ax.set_title(f"{prob:.2f}\nframe {frame}", fontsize=8, color="red" if prob >= threshold else "black")
        ax.axis("off")
    strip = fig.add_subplot(grid[1, :])
    if result.frame_probs:
        frames, probs = zip(*result.frame_probs, strict=True)
        strip.plot(frames, probs, marker="o", ms=3, label="P(fake) of the frame")
    with_face = {frame for frame, _ in result.frame_probs}
    missing = [f for f in result.frames_seen if f not in with_face]
    if missing:
        strip.plot(missing, [0.0] * len(missing), "x", color="tab:red", ms=6, clip_on=False,
                   label=f"no face ({len(missing)} of {len(result.frames_seen)} frames)")  # fmt: skip
    strip.axhline(threshold, color="grey", ls="--", lw=0.8, label=f"threshold {threshold:.3f}")
    strip.set(ylim=(0, 1), xlabel="frame", ylabel="P(fake)")
    strip.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    source = f" · checkpoint {checkpoint}" if checkpoint else ""
    fig.suptitle(f"{Path(result.path).name}: {verdict(result, threshold)}{source}", fontsize=10)
    fig.set_layout_engine("constrained")
    return fig
