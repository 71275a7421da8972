"""The robustness protocol: which perturbation types exist, their five levels, and how each is seeded.

DeeperForensics-1.0 (`add_distortion_to_video.py`, `get_distortion_parameter`) defines seven types at five
levels each; LipForensics, RealForensics and AltFreezing report AUC on FF++ c23 under all 35. `JPEGQ` (real
JPEG at a quality) and `RESIZE` (an antialiased down-up resize) stand beside them, because the protocol's
"JPEG" is pixelation.

Seeding: a frame's generator comes from (seed, video, frame), the same at every type and level. So the draws are
common to all settings (BW's blocks at level 2 include level 1's, GNC's noise field only scales), and a result
does not depend on the order, the workers or the other videos. The original drew from the unseeded global RNGs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deepfake.choices import PERTURBATION_LEVELS as LEVELS
from deepfake.config.checks import check_perturbations
from deepfake.errors import ConfigError
from deepfake.perturbations import image

ImageFn = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class PerturbationType:
    code: str
    name: str
    params: tuple[float, ...]  # the parameter at levels 1..5, milder to harsher
    apply: ImageFn | None  # per image; None for VC, which re-encodes a whole clip
    unit: str = ""  # what the parameter is, for logs


TYPES: dict[str, PerturbationType] = {
    t.code: t
    for t in (
        PerturbationType("CS", "colour saturation", (0.4, 0.3, 0.2, 0.1, 0.0), image.color_saturation, "chroma scale"),
        PerturbationType("CC", "contrast (a brightness scale)", (0.85, 0.725, 0.6, 0.475, 0.35),
                         image.color_contrast, "scale"),
        PerturbationType("BW", "block-wise", (16, 32, 48, 64, 80), image.block_wise, "blocks per 256 px"),
        PerturbationType("GNC", "colour Gaussian noise", (0.001, 0.002, 0.005, 0.01, 0.05),
                         image.gaussian_noise_color, "variance"),
        PerturbationType("GB", "Gaussian blur", (7, 9, 13, 17, 21), image.gaussian_blur, "kernel"),
        PerturbationType("JPEG", "pixelation (DeeperForensics' JPEG)", (2, 3, 4, 5, 6), image.pixelate,
                         "factor"),
        PerturbationType("VC", "H.264 video compression", (30, 32, 35, 38, 40), None, "CRF"),
        PerturbationType("JPEGQ", "JPEG", (90, 70, 50, 30, 10), image.jpeg, "quality"),
        PerturbationType("RESIZE", "antialiased down-up resize", (2, 3, 4, 5, 6), image.resize, "factor"),
    )
}  # fmt: skip
DEEPERFORENSICS = ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC")
CLEAN = "clean"


@dataclass(frozen=True)
class Setting:
    """One perturbation at one level; `Setting("clean", 0)` is the unperturbed reference."""

    type: str
    level: int

    @property
    def clean(self) -> bool:
        return self.type == CLEAN

    @property
    def param(self) -> float | None:
        return None if self.clean else TYPES[self.type].params[self.level - 1]

    @property
    def video(self) -> bool:
        """Whether it re-encodes a whole video (VC) rather than acting on each image alone."""
        return not self.clean and TYPES[self.type].apply is None

    @property
    def name(self) -> str:
        """`clean` or `<TYPE>-<level>`: the name of its CSV row and example files."""
        return CLEAN if self.clean else f"{self.type}-{self.level}"

    def describe(self) -> str:
        """For logs: `GB-5 (Gaussian blur, kernel 21)`."""
        if self.clean:
            return CLEAN
        kind = TYPES[self.type]
        return f"{self.name} ({kind.name}, {kind.unit} {self.param:g})"


def setting(type_: str, level: int, key: str = "perturb") -> Setting:
    """A checked setting: a known type and a level in 1..5 (the message names `key`)."""
    if type_ not in TYPES:
        raise ConfigError(f"{key}.type={type_!r} is not a perturbation type; known: {', '.join(TYPES)}")
    if isinstance(level, bool) or level not in LEVELS:
        raise ConfigError(f"{key}.level={level!r} must be one of {', '.join(map(str, LEVELS))}")
    return Setting(type_, int(level))


def settings(types: Sequence[str], levels: Sequence[int], key: str = "perturb") -> list[Setting]:
    """Every type at every level, type-major, after `config.checks.check_perturbations`."""
    check_perturbations(types, levels, key)
    return [Setting(t, int(lv)) for t in types for lv in levels]


def _key(part: str | int) -> int:
    if isinstance(part, int):
        return part
    return int.from_bytes(hashlib.blake2b(part.encode(), digest_size=8).digest(), "little")


def frame_rng(seed: int, video: str, frame: str | int) -> np.random.Generator:
    """The generator of one frame (an index, or a crop's file name) of one video under `seed`."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _key(video), _key(frame)]))


def perturb_image(s: Setting, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One image under an image setting (clean returns it as it is)."""
    if s.clean:
        return img
    apply = TYPES[s.type].apply
    if apply is None:
        raise ValueError(f"{s.name} re-encodes whole videos: use perturb_clip")
    return apply(img, TYPES[s.type].params[s.level - 1], rng)


def perturb_clip(
    s: Setting, frames: Sequence[np.ndarray], rngs: Sequence[np.random.Generator]
) -> list[np.ndarray]:
    """A video's frames under any setting: VC encodes them as one clip, the others act on each frame."""
    if s.video:
        from deepfake.perturbations.video import compress_clip  # PyAV: only where a clip is encoded

        return compress_clip(frames, int(TYPES[s.type].params[s.level - 1])).frames
    return [perturb_image(s, f, r) for f, r in zip(frames, rngs, strict=True)]


def perturb_single(s: Setting, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image on its own under any setting: VC encodes it as a one-frame clip (an intra frame)."""
    return perturb_clip(s, [img], [rng])[0] if s.video else perturb_image(s, img, rng)
