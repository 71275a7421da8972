"""The schemas of the scoring commands: `evaluate.py` (`EvaluateConfig`), `predict.py` (`PredictConfig`) and
`serve.py` (`ServeConfig`).

They sit beside the training schema (`deepfake.config.schema`), whose `Config` evaluate.py extends: a
checkpoint's training config plus what to score and how.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from deepfake.config.schema import Config, HardwareConfig, ShardConfig


@dataclass
class EnsembleConfig:
    mean: str = "prob"


@dataclass
class PerturbConfig:
    """evaluate.py's robustness settings (`conf/perturb/`): empty `types` = no robustness evaluation."""

    types: list[str] = field(default_factory=list)
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    seed: int = 0
    examples: int = 0
    extracted: str | None = None


@dataclass
class EvaluateConfig(Config):
    """`evaluate.py`: the training config (taken from the checkpoint) plus the checkpoint(s) to score."""

    checkpoint: Any = MISSING  # one path, or a list of them (an ensemble)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    perturb: PerturbConfig = field(default_factory=PerturbConfig)


@dataclass
class PredictFacesConfig:
    """Crop overrides for videos; null = the checkpoint's extraction settings, else extract.py's defaults."""

    policy: str | None = None
    min_size: float | None = None
    min_score: float | None = None
    margin: float | None = None
    size: int | None = None
    align: bool | None = None


@dataclass
class PredictDetectorConfig:
    kind: str | None = None
    model: str | None = None
    device: str | None = None
    batch_size: int | None = None
    max_side: int | None = None
    min_face_size: int | None = None


@dataclass
class PredictExtractionConfig:
    frames_per_video: int | None = None
    decode_max_side: int | None = None
    timeout_s: float | None = None
    detector: PredictDetectorConfig = field(default_factory=PredictDetectorConfig)
    faces: PredictFacesConfig = field(default_factory=PredictFacesConfig)


@dataclass
class PredictAggregationConfig:
    faces: str = "max"
    frames: str = "mean"
    k: int = 5


@dataclass
class ExplainConfig:
    """predict.py's `explain` group: `explain=gradcam` picks conf/explain/gradcam.yaml."""

    method: str = "none"
    layer: str | None = None


@dataclass
class PredictConfig:
    """`predict.py`: everything else (architecture, size, normalisation) comes from the checkpoint."""

    checkpoint: Any = MISSING  # one path, or a list of them (an ensemble)
    input: str = MISSING
    output: str = "preds.csv"
    format: str | None = None
    threshold: Any = 0.5  # a probability, or "val_fpr" (the checkpoint's validation threshold)
    batch_size: int = 64
    num_workers: int = -1
    amp: str = "auto"
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    no_face_prob: float | None = 0.5
    per_frame: bool = False
    preview: bool = False
    aggregation: PredictAggregationConfig = field(default_factory=PredictAggregationConfig)
    extraction: PredictExtractionConfig = field(default_factory=PredictExtractionConfig)
    tta: str = "none"
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    calibrated: bool = True
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    overwrite: bool = False
    shard: ShardConfig = field(default_factory=ShardConfig)
    progress: str = "auto"
    every_n_seconds: float = 30.0


@dataclass
class ServeSection:
    """`serve.py`'s own keys (conf/serve.yaml says what each means)."""

    max_concurrent: int = 1
    max_upload_mb: float = 200.0
    max_duration_s: float = 600.0
    token_env: str = "DEEPFAKE_SERVE_TOKEN"
    password_env: str = "DEEPFAKE_SERVE_PASSWORD"
    explain: bool = False
    page: bool = True
    shutdown_timeout_s: float = 30.0


@dataclass
class ServeConfig:
    """`serve.py`: predict.py's scoring keys (the same values give the same probabilities), the address and
    the `serve` section."""

    checkpoint: Any = MISSING
    host: str = "127.0.0.1"
    port: int = 8000
    threshold: float = 0.5
    batch_size: int = 64
    num_workers: int = 1
    amp: str = "auto"
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    no_face_prob: float | None = 0.5
    aggregation: PredictAggregationConfig = field(default_factory=PredictAggregationConfig)
    extraction: PredictExtractionConfig = field(default_factory=PredictExtractionConfig)
    tta: str = "none"
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    calibrated: bool = True
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    serve: ServeSection = field(default_factory=ServeSection)
