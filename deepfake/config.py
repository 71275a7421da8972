"""The structured-config schema: every key a run accepts, with its type and default.

Hydra merges `conf/` onto this schema, so an unknown key or a wrong type fails at composition time with
the key's full name. `validate()` adds the value checks a type cannot express (ranges, choices).
Python users build the same tree directly: `Config(base_path=..., use_drive=True)`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from deepfake.choices import MONITOR_MODES, STREAMS
from deepfake.choices import TRAIN as CHOICES
from deepfake.errors import ConfigError


@dataclass
class ModelConfig:
    _target_: str = "deepfake.models.get_model"
    architecture: str = "tiny"
    pretrained: bool = False
    weights: str | None = None
    dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    img_size: int | None = None
    channels_last: bool = True
    compile: bool = False
    grad_checkpointing: bool = False
    frames: int = 1
    temporal_layers: int = 1
    temporal_heads: int = 4
    freeze_backbone: bool = False
    streams: list[str] = field(default_factory=lambda: ["rgb"])
    fusion: str = "early"
    mask_head: bool = False


@dataclass
class SchedulerConfig:
    _target_: str = "deepfake.training.schedulers.create_scheduler"
    _partial_: bool = True
    name: str = "cosine"
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    warmup_start_factor: float = 0.01
    min_lr: float = 1e-6
    step_epochs: float = 10.0
    milestones: list[float] = field(default_factory=lambda: [30.0, 60.0])
    gamma: float = 0.1
    plateau_patience: int = 2
    mode: str = "${training.monitor_mode}"
    onecycle_max_lr_factor: float = 1.0
    decay_start_epochs: float = 0.0


@dataclass
class GradClipConfig:
    mode: str = "norm"
    max: float = 1.0


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False
    monitor: str = "${training.monitor}"
    mode: str = "${training.monitor_mode}"
    patience: int = 5
    min_delta: float = 0.0


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.999
    warmup: bool = True


@dataclass
class SamConfig:
    enabled: bool = False
    rho: float = 0.05
    adaptive: bool = False


@dataclass
class CheckpointConfig:
    every_n_steps: int | None = None
    keep_top_k: int = 0


@dataclass
class TrainingConfig:
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_epochs: int = 10
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    optimizer: Any = field(
        default_factory=lambda: {"_target_": "torch.optim.AdamW", "_partial_": True, "betas": [0.9, 0.999]}
    )
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    amp: str = "auto"
    grad_clip: GradClipConfig = field(default_factory=GradClipConfig)
    grad_accum_steps: int = 1
    monitor: str = "val/auc"
    monitor_mode: str = "max"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    on_nan: str = "stop"
    log_every_n_steps: int = 20
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    auto_batch_size: bool = False
    auto_resume: bool = False
    sam: SamConfig = field(default_factory=SamConfig)
    backbone_lr_scale: float = 1.0
    layer_decay: float | None = None
    unfreeze_at_epoch: int | None = None
    unfreeze_warmup_epochs: float = 0.0
    mask_loss: str = "bce"
    mask_loss_weight: float = 1.0


@dataclass
class SyntheticConfig:
    videos_per_split: dict[str, int] = field(default_factory=lambda: {"train": 300, "val": 100, "test": 100})
    frames_per_video: int = 8
    img_size: int = 64
    seed: int = 0


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


@dataclass
class SbiConfig:
    ratio: float = 1.0
    real_only: bool = False


@dataclass
class DataConfig:
    _target_: str = "deepfake.data.DataModule"
    kind: str = "synthetic"
    root: str | None = None
    manifest: str | None = None
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val", "test": "test"})
    real_dirs: list[str] = field(default_factory=lambda: ["real"])
    fake_dirs: list[str] = field(default_factory=lambda: ["fake"])
    img_size: int | None = None
    num_workers: int = -1
    persistent_workers: bool = True
    prefetch_factor: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    frames_per_video: int | None = None
    balance: str = "none"
    fake_synthesis: str = "none"
    sbi: SbiConfig = field(default_factory=SbiConfig)
    cache: str = "none"
    decode: str = "cpu"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    test_sets: list[str] = field(default_factory=list)


@dataclass
class HardwareConfig:
    device: str = "auto"
    cudnn_benchmark: bool = True
    tf32: bool = True
    deterministic: bool = False
    num_threads: int | None = None
    sample_every_n_seconds: float = 2.0


#: The Google Drive preset (`backup=drive`, `use_drive=True`): the mount point Colab's drive.mount uses.
DRIVE_MIRROR = "/content/drive/MyDrive"
DRIVE_SUBDIR = "deepfake"


@dataclass
class DistributedConfig:
    backend: str = "auto"
    sync_batchnorm: bool = False
    timeout_min: float = 30.0


@dataclass
class BackupConfig:
    _target_: str = "deepfake.runs.backup.ProjectBackup"
    enabled: bool = True
    every_n_epochs: int = 0
    keep_last: int = 3
    include: list[str] = field(default_factory=lambda: ["last.pt", "best.pt"])
    mirror: str | None = None
    mirror_subdir: str | None = None
    min_free_gb: float = 1.0


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    progress: str = "auto"
    every_n_seconds: float = 30.0
    images_every_n_epochs: int = 1
    num_images: int = 16


@dataclass
class EvalConfig:
    video_aggregation: str = "mean"
    video_topk: int = 5
    threshold: float = 0.5
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    out_dir: str | None = None
    tta: str = "none"
    calibrated: bool = True


@dataclass
class EnsembleConfig:
    mean: str = "prob"


@dataclass
class LrFinderConfig:
    min_lr: float = 1e-8
    max_lr: float = 1.0
    num_steps: int = 100
    early_stop_threshold: float | None = 4.0


@dataclass
class ProfilerConfig:
    enabled: bool = False
    wait: int = 1
    warmup: int = 1
    active: int = 3
    row_limit: int = 15


@dataclass
class DebugConfig:
    fast: bool = False
    overfit_batches: int = 0
    overfit_loss: float = 0.05
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)


@dataclass
class Config:
    """The root of a run's configuration (the original design's `Config(base_path, use_drive)`)."""

    base_path: str = "."
    use_drive: bool = False
    seed: int = 42
    resume: str | None = None
    check: bool = False
    check_on_start: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    find_lr: bool = False
    lr_finder: LrFinderConfig = field(default_factory=LrFinderConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    calibration: str = "temperature"


@dataclass
class EvaluateConfig(Config):
    """`evaluate.py`: the training config (taken from the checkpoint) plus the checkpoint(s) to score."""

    checkpoint: Any = MISSING  # one path, or a list of them (an ensemble)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)


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
    detector: PredictDetectorConfig = field(default_factory=PredictDetectorConfig)
    faces: PredictFacesConfig = field(default_factory=PredictFacesConfig)


@dataclass
class PredictAggregationConfig:
    faces: str = "max"
    frames: str = "mean"
    k: int = 5


@dataclass
class PredictConfig:
    """`predict.py`: everything else (architecture, size, normalisation) comes from the checkpoint."""

    checkpoint: Any = MISSING  # one path, or a list of them (an ensemble)
    input: str = MISSING
    output: str = "preds.csv"
    format: str | None = None
    threshold: float = 0.5
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


def register_configs() -> None:
    """Register the schemas so `conf/{train,evaluate,predict}.yaml` can name them first in their defaults."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=Config)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="predict_schema", node=PredictConfig)
    # conf/hydra/launcher/submitit_slurm.yaml shares the plugin's name, so `hydra/launcher=submitit_slurm` selects
    # it; Hydra then checks it against the plugin's schema of that name and warns that this matching is deprecated.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_slurm' is validated against ConfigStore schema"
    )
    # conf/hparams_search/optuna.yaml: the study's direction follows training.monitor_mode.
    OmegaConf.register_new_resolver("optuna_direction", _optuna_direction, replace=True)


def _optuna_direction(mode: str) -> str:
    if mode not in MONITOR_MODES:
        raise ConfigError(f"training.monitor_mode={mode!r} is not one of {', '.join(MONITOR_MODES)}")
    return "maximize" if mode == "max" else "minimize"


_POSITIVE: tuple[str, ...] = (
    "data.sbi.ratio",
    "training.batch_size",
    "eval.video_topk",
    "training.num_epochs",
    "training.learning_rate",
    "training.grad_accum_steps",
    "training.log_every_n_steps",
    "logging.every_n_seconds",
    "distributed.timeout_min",
)
#: Optional sizes: null means the model's or the loader's own choice.
_POSITIVE_OR_NULL: tuple[str, ...] = ("data.img_size", "model.img_size")
_NON_NEGATIVE: tuple[str, ...] = (
    "training.weight_decay",
    "training.scheduler.warmup_epochs",
    "training.scheduler.min_lr",
    "model.dropout_rate",
    "model.drop_path_rate",
    "training.early_stopping.patience",
    "training.early_stopping.min_delta",
    "backup.every_n_epochs",
    "backup.keep_last",
    "logging.images_every_n_epochs",
    "logging.num_images",
    "eval.bootstrap_samples",
    "backup.min_free_gb",
    "training.checkpoint.keep_top_k",
    "hardware.sample_every_n_seconds",
    "training.mask_loss_weight",
)


def to_config(cfg: Config | DictConfig | dict) -> DictConfig:
    """Merge any accepted form onto the schema and check values; the one entry point for `train()`."""
    schema = OmegaConf.structured(Config)
    if isinstance(cfg, Config):
        merged = OmegaConf.merge(schema, OmegaConf.structured(cfg))
    else:
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=False)
        cfg = {k: v for k, v in cfg.items() if k != "hydra"}
        try:
            merged = OmegaConf.merge(schema, cfg)
            # The optimizer is whatever the config names, not a merge with the default AdamW's keys: SGD takes
            # no `betas` (`training.optimizer._target_=torch.optim.SGD ~training.optimizer.betas`).
            if "optimizer" in (cfg.get("training") or {}):
                merged.training.optimizer = cfg["training"]["optimizer"]
        except Exception as e:  # omegaconf raises several types; all mean "this config is malformed"
            raise ConfigError(f"invalid config: {e}") from None
    _select_drive(merged)
    validate(merged)
    return merged


def _select_drive(cfg: DictConfig) -> None:
    """`use_drive=True` is the Python spelling of `backup=drive`: it fills in the Drive mirror."""
    if not cfg.use_drive:
        return
    if cfg.backup.mirror not in (None, DRIVE_MIRROR):
        raise ConfigError(
            f"use_drive=true mirrors to {DRIVE_MIRROR}, but backup.mirror={cfg.backup.mirror} is set too; "
            "drop one of them"
        )
    cfg.backup.mirror = DRIVE_MIRROR
    if cfg.backup.mirror_subdir is None:
        cfg.backup.mirror_subdir = DRIVE_SUBDIR


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
    for key in _POSITIVE:
        value = OmegaConf.select(cfg, key)
        if value is None or not _finite(value) or value <= 0:
            raise ConfigError(f"{key} must be > 0 (got {value}); set e.g. {key}={_example(key)}")
    for key in _NON_NEGATIVE:
        value = OmegaConf.select(cfg, key)
        if value is not None and (not _finite(value) or value < 0):
            raise ConfigError(f"{key} must be >= 0 (got {value})")
    for key in _POSITIVE_OR_NULL:
        value = OmegaConf.select(cfg, key)
        if value is not None and (not _finite(value) or value <= 0):
            raise ConfigError(f"{key} must be > 0, or null for the default (got {value})")
    _check_single_keys(cfg)
    _check_recipes(cfg)
    _check_optimisation(cfg.training, cfg.model.freeze_backbone)


def _check_optimisation(tc: DictConfig, freeze_backbone: bool) -> None:
    """SAM, per-part learning rates and unfreezing (`deepfake.training.optimizer`, `.freezing`)."""
    if tc.sam.enabled and not (_finite(tc.sam.rho) and tc.sam.rho > 0):
        raise ConfigError(f"training.sam.rho must be > 0 (got {tc.sam.rho}); SAM's paper uses 0.05")
    if not (_finite(tc.backbone_lr_scale) and tc.backbone_lr_scale > 0):
        raise ConfigError(
            f"training.backbone_lr_scale must be > 0 (got {tc.backbone_lr_scale}); "
            "to keep the backbone fixed, set model.freeze_backbone=true"
        )
    if tc.layer_decay is not None and not 0 < tc.layer_decay <= 1:
        raise ConfigError(
            f"training.layer_decay must be in (0, 1], e.g. 0.75, or null (got {tc.layer_decay})"
        )
    if tc.unfreeze_at_epoch is not None and not freeze_backbone:
        raise ConfigError(
            f"training.unfreeze_at_epoch={tc.unfreeze_at_epoch} needs a frozen start: add model.freeze_backbone=true"
        )
    if tc.unfreeze_at_epoch is not None and tc.unfreeze_at_epoch < 1:
        raise ConfigError(f"training.unfreeze_at_epoch must be >= 1 (got {tc.unfreeze_at_epoch})")
    if not (_finite(tc.unfreeze_warmup_epochs) and tc.unfreeze_warmup_epochs >= 0):
        raise ConfigError(f"training.unfreeze_warmup_epochs must be >= 0 (got {tc.unfreeze_warmup_epochs})")


def _check_single_keys(cfg: DictConfig) -> None:
    """The ranges and requirements particular to one key (or one key given another)."""
    if not 0.0 <= cfg.model.dropout_rate < 1.0:
        raise ConfigError(f"model.dropout_rate must be in [0, 1) (got {cfg.model.dropout_rate})")
    if cfg.training.eval_batch_size is not None and cfg.training.eval_batch_size <= 0:
        raise ConfigError(f"training.eval_batch_size must be > 0 (got {cfg.training.eval_batch_size})")
    if cfg.training.grad_clip.mode != "off" and cfg.training.grad_clip.max <= 0:
        raise ConfigError(f"training.grad_clip.max must be > 0 (got {cfg.training.grad_clip.max})")
    if not 0.0 < cfg.eval.threshold < 1.0:
        raise ConfigError(f"eval.threshold must be in (0, 1) (got {cfg.eval.threshold})")
    if not 0.0 < cfg.eval.confidence < 1.0:
        raise ConfigError(f"eval.confidence must be in (0, 1), e.g. 0.95 (got {cfg.eval.confidence})")
    every = cfg.training.checkpoint.every_n_steps
    if every is not None and every <= 0:
        raise ConfigError(
            f"training.checkpoint.every_n_steps must be > 0 or null (got {every}); null saves once per epoch"
        )
    _check_families(cfg)
    if cfg.model.mask_head and cfg.data.fake_synthesis != "sbi":
        raise ConfigError(
            f"model.mask_head=true learns the blend masks SBI makes, but data.fake_synthesis="
            f"{cfg.data.fake_synthesis}; add data.fake_synthesis=sbi or set model.mask_head=false"
        )
    if cfg.data.kind == "manifest" and not cfg.data.manifest:
        raise ConfigError(
            "data.manifest is not set for data.kind=manifest: pass data.manifest=/path/to/manifest.csv"
        )
    if cfg.data.kind == "folder" and not cfg.data.root:
        raise ConfigError(
            f"data.root is not set for data.kind={cfg.data.kind}: pass data.root=/path/to/dataset"
        )


def _check_recipes(cfg: DictConfig) -> None:
    """`find_lr` and `debug` (conf/debug/): ranges, and which of them combine."""
    lf, debug = cfg.lr_finder, cfg.debug
    if not 0 < lf.min_lr < lf.max_lr or not _finite(lf.max_lr):
        raise ConfigError(
            f"lr_finder needs 0 < min_lr < max_lr (got {lf.min_lr} and {lf.max_lr}), e.g. 1e-8 and 1"
        )
    if lf.num_steps < 2:
        raise ConfigError(f"lr_finder.num_steps must be >= 2 (got {lf.num_steps}); the default is 100")
    if lf.early_stop_threshold is not None and not lf.early_stop_threshold > 1:
        raise ConfigError(
            f"lr_finder.early_stop_threshold must be > 1, or null to never stop early (got {lf.early_stop_threshold})"
        )
    for key in ("limit_train_batches", "limit_val_batches"):
        value = debug[key]
        if value is not None and (not _finite(value) or value <= 0 or (value > 1 and value != int(value))):
            raise ConfigError(
                f"debug.{key} must be a fraction in (0, 1] or a whole count of batches > 1 (got {value}); "
                f"e.g. debug.{key}=0.1 or debug.{key}=20"
            )
    if debug.overfit_batches < 0:
        raise ConfigError(f"debug.overfit_batches must be >= 0 (got {debug.overfit_batches}); 0 = off")
    if debug.overfit_batches and not 0 < debug.overfit_loss < 1:
        raise ConfigError(f"debug.overfit_loss must be in (0, 1) (got {debug.overfit_loss}), e.g. 0.05")
    profiler = debug.profiler
    if profiler.wait < 0 or profiler.warmup < 0 or profiler.active < 1 or profiler.row_limit < 1:
        raise ConfigError(
            "debug.profiler needs wait >= 0, warmup >= 0, active >= 1 and row_limit >= 1 "
            f"(got {profiler.wait}, {profiler.warmup}, {profiler.active}, {profiler.row_limit})"
        )
    limits = debug.limit_train_batches is not None or debug.limit_val_batches is not None
    if debug.fast and debug.overfit_batches:
        raise ConfigError("debug.fast and debug.overfit_batches each set the batches to train: pick one")
    if debug.fast and limits:
        raise ConfigError("debug.fast trains and validates one batch: drop debug.limit_train/val_batches")
    if debug.overfit_batches and debug.limit_train_batches is not None:
        raise ConfigError("debug.overfit_batches sets the train batches: drop debug.limit_train_batches")
    if cfg.find_lr and cfg.check:
        raise ConfigError("find_lr=true and check=true are two different commands: pass one of them")


def _check_families(cfg: DictConfig) -> None:
    """The detector families' combinations, refused before a run directory exists (`get_model` checks too)."""
    streams = list(cfg.model.streams)
    if not streams or streams[0] != "rgb" or len(set(streams)) != len(streams) or set(streams) - set(STREAMS):
        raise ConfigError(
            f"model.streams={streams} is not valid: give rgb first, then any of srm, dct once each "
            "(e.g. model.streams=[rgb,srm,dct])"
        )
    if cfg.model.mask_head and cfg.model.fusion == "late" and len(streams) > 1:
        raise ConfigError(
            "model.mask_head=true cannot follow model.fusion=late (several backbones, no single feature "
            "map); use model.fusion=early or model.mask_head=false"
        )


def _finite(value: float) -> bool:
    """NaN and infinity pass every `<`/`<=` test, so ranges check them first."""
    return math.isfinite(value)


def _example(key: str) -> str:
    return {"training.learning_rate": "1e-4", "logging.every_n_seconds": "30"}.get(key, "1")
