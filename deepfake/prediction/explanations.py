"""`predict.py ... explain=gradcam`: where the detector looked, per scored face, beside the predictions.

`<output stem>_explain/` gets, for every scored image and every scored face of a video, an overlay PNG (the
crop, its heatmap over it, the probability in the corner; a mask-head detector's predicted blend mask in a
second panel) and the heatmap as `.npy` (float32, the crop's H x W, in [0, 1]). Names mirror the inputs below
the input folder: `<folder>/<image stem>.png`, `<folder>/<video stem>/<frame>_<face>.png`
(`deepfake.explain.overlay`). The maps are those of the scorer's members and views: each ensemble member at its
own input size and, with `tta=flip`, the mirrored face's map mirrored back, averaged (`deepfake.explain.cam`).

An image is the centre square the model scores (`deepfake.data.decode.fit`'s geometry), at its own resolution.
A clip model's video is explained on the frames its clip was made of.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from deepfake.data.clips import clip_positions
from deepfake.data.decode import decode_file, fit
from deepfake.explain.cam import Explained, explain_crops, require_gradcam, resize_map
from deepfake.explain.overlay import Names, face_overlay, mirrored, write_face
from deepfake.explain.target import cam_target

log = logging.getLogger("deepfake")


def explain_dir(output: Path) -> Path:
    return output.with_name(f"{output.stem}_explain")


def input_base(source: str | Path) -> Path:
    """The folder input names are mirrored below: the input folder, or the folder of a file or list file."""
    path = Path(source).expanduser()
    return path if path.is_dir() else path.parent


class Explainer:
    """One run's explanations: the members, the method and layer, the output folder and the names used."""

    def __init__(
        self,
        members: Sequence[Explained],
        method: str,
        layer: str | None,
        tta: str,
        output: Path,
        source: str | Path,
        device: torch.device,
        batch_size: int = 32,
        frames: int = 1,
    ) -> None:
        require_gradcam("explain")
        for member in members:  # an unknown layer fails now, before any scoring
            cam_target(member.model, layer)
        self.members, self.method, self.layer, self.tta = list(members), method, layer, tta
        self.folder, self.base, self.device = explain_dir(output), input_base(source), device
        self.batch_size, self.frames = batch_size, frames  # frames > 1: a clip model
        self.names = Names()
        self.size = max(m.img_size for m in self.members)  # decode once, at the largest input size
        self.masker = next(
            (m for m in self.members if getattr(m.model, "mask_decoder", None) is not None), None
        )

    def maps(self, crops: torch.Tensor) -> np.ndarray:
        """Mean heatmaps (N, S, S) of uint8 crops (N, 3, S, S) on the device."""
        return explain_crops(
            self.members, crops, self.method, self.layer, self.tta, batch_size=self.batch_size
        )

    @torch.no_grad()
    def masks(self, crops: torch.Tensor) -> list[np.ndarray | None]:
        """A mask-head member's predicted blend masks (h, w) of the crops, else None each."""
        if self.masker is None:
            return [None] * len(crops)
        x = TF.resize(crops, [self.masker.img_size] * 2, antialias=True)
        return list(self.masker.model.predict_mask(x)[:, 0].float().cpu().numpy())

    def images(self, paths: Sequence[str], probs: Sequence[float | None]) -> None:
        """Explain each scored image (prob not None), in batches; files as the module docstring says."""
        scored = [(p, prob) for p, prob in zip(paths, probs, strict=True) if prob is not None]
        for start in range(0, len(scored), self.batch_size):
            batch = scored[start : start + self.batch_size]
            crops = torch.stack([decode_file(p, self.size) for p, _ in batch]).to(self.device)
            for (path, prob), heat, mask in zip(batch, self.maps(crops), self.masks(crops), strict=True):
                full = decode_file(path, None)
                crop = fit(full, min(full.shape[-2:])).permute(1, 2, 0).numpy()  # the centre square, as is
                heat = resize_map(heat, crop.shape[:2])
                name = self.names.claim(mirrored(path, self.base))
                write_face(self.folder, name, face_overlay(crop, heat, prob, mask), heat)
        if scored:
            log.info("explanations of %d image(s) in %s", len(scored), self.folder)

    def video(
        self, path: str, keys: Sequence[tuple[int, int]], crops: np.ndarray, probs: np.ndarray
    ) -> dict[int, np.ndarray]:
        """Explain a video's scored faces (keys: frame, face; uint8 crops (N, S, S, 3)); a clip model's, only
        the faces its clip was made of. Returns each explained face's overlay by index."""
        # a clip model's clip: its evenly spaced crops (a short video repeats some), explained as one clip
        shown = clip_positions(len(crops), self.frames) if self.frames > 1 else list(range(len(crops)))
        x = torch.from_numpy(crops[shown]).permute(0, 3, 1, 2).to(self.device)
        heats = dict(zip(shown, self.maps(x), strict=True))  # a repeated crop keeps its last frame's map
        chosen = sorted(heats)
        masks = self.masks(torch.from_numpy(crops[chosen]).permute(0, 3, 1, 2).to(self.device))
        folder = self.names.claim(mirrored(path, self.base))
        overlays = {}
        for i, mask in zip(chosen, masks, strict=True):
            frame, face = keys[i]
            overlays[i] = face_overlay(crops[i], heats[i], float(probs[i]), mask)
            write_face(self.folder, folder / f"{frame:06d}_{face}", overlays[i], heats[i])
        return overlays
