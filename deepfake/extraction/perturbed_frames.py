"""The paper's robustness route: a perturbation applied to whole video frames before face detection.

`extract.py perturb.type=GB perturb.level=3` decodes each video's kept frames as usual and perturbs each full
frame (upright, RGB) in the decode worker, with the generator of (perturb.seed, the video's path under the root,
the frame's index); VC first re-encodes the whole video with libx264 at the level's CRF into a temporary file
(deleted at once) and decodes the kept frames from that. Detection, cropping and writing then run unchanged, so
the output is an ordinary crop set. Unlike the original code, the perturbed frames are not written back through
`cv2.VideoWriter` (a second lossy encode of every type but VC); they go to the face detector as they are.
Worker side: imports no torch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from deepfake.extraction.bounds import MAX_SIDE, TIMEOUT_S, not_regular
from deepfake.extraction.video import DECODE_ERRORS, Decoded, read_frames
from deepfake.perturbations.protocol import Setting, frame_rng, perturb_image, setting
from deepfake.perturbations.video import reencode_file


@dataclass(frozen=True)
class FramePerturbation:
    """One setting for every video of an extraction; picklable, so it travels to the decode workers."""

    setting: Setting
    seed: int
    root: str  # the dataset root: a video's key is its path under it

    def read(
        self, path: str, frames_per_video: int, max_side: int = MAX_SIDE, timeout_s: float = TIMEOUT_S
    ) -> Decoded:
        """`read_frames`, with the kept frames perturbed (VC: taken from the re-encoded video)."""
        if self.setting.video:
            return self._reencoded(path, frames_per_video, max_side, timeout_s)
        decoded = read_frames(path, frames_per_video, max_side, timeout_s)
        key = Path(os.path.relpath(path, self.root)).as_posix()
        decoded.frames = [
            (i, perturb_image(self.setting, frame, frame_rng(self.seed, key, i)))
            for i, frame in decoded.frames
        ]
        return decoded

    def _reencoded(self, path: str, frames_per_video: int, max_side: int, timeout_s: float) -> Decoded:
        if why := not_regular(path):  # the re-encode would open it: a FIFO would block it forever
            return Decoded(path, error=why)
        with tempfile.TemporaryDirectory(prefix="deepfake-vc-") as tmp:
            copy = Path(tmp) / "reencoded.mp4"
            try:
                reencode_file(path, copy, int(self.setting.param or 0))
            except DECODE_ERRORS as e:
                return Decoded(path, error=f"{self.setting.name} re-encode failed: {type(e).__name__}: {e}")
            decoded = read_frames(copy, frames_per_video, max_side, timeout_s)
        decoded.path = path
        return decoded


def perturbation_of(cfg: DictConfig) -> FramePerturbation | None:
    """extract.py's `perturb` section as a reader for the decode workers; None for an ordinary extraction."""
    if not cfg.perturb.type:
        return None
    root = str(Path(cfg.root).expanduser().resolve())
    return FramePerturbation(setting(cfg.perturb.type, cfg.perturb.level), int(cfg.perturb.seed), root)
