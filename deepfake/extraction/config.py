"""The schema of `python extract.py`: every key it accepts, with its type and default.

Hydra merges `conf/extract/` onto it, so an unknown key or a wrong type fails at composition naming the key;
`validate()` adds the range and choice checks a type cannot express.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from deepfake.config.schema import ShardConfig
from deepfake.errors import ConfigError
from deepfake.extraction.bounds import MAX_FRAMES, MAX_SIDE, TIMEOUT_S
from deepfake.perturbations.protocol import setting


@dataclass
class DatasetConfig:
    kind: str = "folder"
    compression: str = "c23"
    methods: list[str] | None = None
    sources: list[str] = field(default_factory=lambda: ["youtube"])
    splits_dir: str | None = None
    real_dirs: list[str] = field(default_factory=lambda: ["real"])
    fake_dirs: list[str] = field(default_factory=lambda: ["fake"])
    reuse_source_boxes: bool = False
    masks: bool = False


@dataclass
class DetectorConfig:
    kind: str = "mtcnn"
    model: str | None = None
    device: str = "auto"
    batch_size: int = 32
    max_side: int = 640
    min_face_size: int = 40
    thresholds: list[float] = field(default_factory=lambda: [0.85, 0.95, 0.95])
    threads: int | None = None
    score_threshold: float = 0.6


@dataclass
class FacesConfig:
    policy: str = "largest"
    min_size: float = 32.0
    min_score: float = 0.9
    margin: float = 1.3
    size: int = 256
    align: bool = False
    format: str = "png"
    jpeg_quality: int = 95


@dataclass
class PerturbConfig:
    type: str | None = None
    level: int | None = None
    seed: int = 0


@dataclass
class ExtractConfig:
    root: str = MISSING
    out: str = MISSING
    frames_per_video: int = 32
    decode_max_side: int = MAX_SIDE
    timeout_s: float = TIMEOUT_S
    overwrite: bool = False
    val_fraction: float = 0.0
    num_workers: int = -1
    progress: str = "auto"
    every_n_seconds: float = 30.0
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)
    splits: list[str] | None = None


def register_extract_config() -> None:
    """Register the schema so `conf/extract/extract.yaml` can name it first in its defaults."""
    ConfigStore.instance().store(name="extract_schema", node=ExtractConfig)


_CHOICES: dict[str, tuple[str, ...]] = {
    "dataset.kind": ("ffpp", "celebdf", "dfdc", "folder"),
    "detector.kind": ("mtcnn", "yunet"),
    "faces.policy": ("largest", "all"),
    "faces.format": ("png", "jpg"),
    "progress": ("auto", "rich", "plain", "off"),
}
_POSITIVE = (
    "frames_per_video",
    "detector.batch_size",
    "detector.min_face_size",
    "faces.size",
    "shard.count",
    "every_n_seconds",
    "timeout_s",
)
MAX_CROP = 4096  # faces.size: the largest crop extraction.json accepts back
#: Inclusive ranges (low, high, what the bounds mean).
_RANGES: dict[str, tuple[float, float, str]] = {
    "frames_per_video": (1, MAX_FRAMES, ": a video's kept frames are held in memory together"),
    "decode_max_side": (0, 16384, f" (0 = decode at full size; default {MAX_SIDE})"),
    "faces.size": (1, MAX_CROP, ""),
    "faces.margin": (1, math.inf, " (1.3 is the field's convention)"),
    "faces.jpeg_quality": (1, 100, ""),
    "detector.max_side": (0, math.inf, " (0 = detect at full size)"),
}


def _floats(node: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float leaf of a config, with its dotted key."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _floats(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _floats(v, f"{prefix[:-1]}[{i}].")
    elif isinstance(node, float):
        yield prefix[:-1], node


def validate(cfg: DictConfig | ExtractConfig) -> DictConfig:
    """Merge onto the schema and raise ConfigError naming the first key whose value cannot work."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(ExtractConfig), cfg)
    except Exception as e:  # omegaconf raises several types; all mean "this config is malformed"
        raise ConfigError(f"invalid config: {e}") from None
    for key in ("root", "out"):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(
                f"{key} is not set: pass {key}=/path/to/{'dataset' if key == 'root' else 'faces'}"
            )
    _check_values(cfg)
    if cfg.dataset.reuse_source_boxes and cfg.dataset.kind != "ffpp":
        raise ConfigError("dataset.reuse_source_boxes=true is for dataset=ffpp (frame-aligned fakes) only")
    _check_robustness(cfg)
    if cfg.dataset.masks and cfg.dataset.kind != "ffpp":
        raise ConfigError("dataset.masks=true crops FF++'s mask videos: it is for dataset=ffpp only")
    return cfg


def _check_values(cfg: DictConfig) -> None:
    """Finite numbers, known choices, and each number in its range."""
    for key, value in _floats(OmegaConf.to_container(cfg, resolve=True)):
        if not math.isfinite(value):  # NaN passes every range check below (each comparison is False)
            raise ConfigError(f"{key}={value} is not a finite number")
    for key, choices in _CHOICES.items():
        if OmegaConf.select(cfg, key) not in choices:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is not one of {', '.join(choices)}")
    for key in _POSITIVE:
        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"{key} must be > 0 (got {OmegaConf.select(cfg, key)})")
    if not 0 <= cfg.shard.index < cfg.shard.count:
        raise ConfigError(f"shard.index={cfg.shard.index} must be in [0, shard.count={cfg.shard.count})")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction={cfg.val_fraction} must be in [0, 1), e.g. 0.1 for Celeb-DF (no val split)"
        )
    for key, (low, high, note) in _RANGES.items():
        value = OmegaConf.select(cfg, key)
        if not low <= value <= high:
            bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
            raise ConfigError(f"{key}={value} must be {bounds}{note}")


def _check_robustness(cfg: DictConfig) -> None:
    """`perturb` (a known type at a level in 1..5, or neither) and `splits` (null, or a non-empty list)."""
    if cfg.perturb.type is not None:
        if cfg.perturb.level is None:
            raise ConfigError(f"perturb.type={cfg.perturb.type} needs perturb.level: 1 (mildest) to 5")
        setting(cfg.perturb.type, cfg.perturb.level)  # a known type at a level in 1..5, or one clear error
    elif cfg.perturb.level is not None:
        raise ConfigError(
            "perturb.level is set but perturb.type is not: pass both, e.g. perturb.type=GB perturb.level=3"
        )
    if cfg.splits is not None and not cfg.splits:
        raise ConfigError("splits=[] keeps no video: pass e.g. splits=[test], or leave it null for all")
