"""The `data.augment` schema: the training-time augmentations (`deepfake.data.augment`), each with its
switch and probability; `AugmentConfig` is `DataConfig.augment` (`deepfake.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ColorJitterConfig:
    enabled: bool = False
    p: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05


@dataclass
class JpegConfig:
    enabled: bool = False
    p: float = 0.5
    quality: list[int] = field(default_factory=lambda: [30, 95])


@dataclass
class BlurConfig:
    enabled: bool = False
    p: float = 0.3
    sigma: list[float] = field(default_factory=lambda: [0.2, 2.0])


@dataclass
class DownscaleConfig:
    enabled: bool = False
    p: float = 0.3
    scale: list[float] = field(default_factory=lambda: [0.25, 0.75])


@dataclass
class NoiseConfig:
    enabled: bool = False
    p: float = 0.3
    sigma: list[float] = field(default_factory=lambda: [2.0, 12.0])


@dataclass
class GrayscaleConfig:
    enabled: bool = False
    p: float = 0.1


@dataclass
class PerturbAugmentConfig:
    enabled: bool = False
    p: float = 0.3
    types: list[str] = field(default_factory=lambda: ["CS", "CC", "BW", "GNC", "GB", "JPEG", "VC"])
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])


@dataclass
class CutoutConfig:
    enabled: bool = False
    p: float = 0.3
    scale: list[float] = field(default_factory=lambda: [0.02, 0.15])


@dataclass
class AugmentConfig:
    crop: bool = True
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])
    hflip: bool = True
    color_jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    grayscale: GrayscaleConfig = field(default_factory=GrayscaleConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    downscale: DownscaleConfig = field(default_factory=DownscaleConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)
    cutout: CutoutConfig = field(default_factory=CutoutConfig)
    perturb: PerturbAugmentConfig = field(default_factory=PerturbAugmentConfig)
