"""The structured-config schema: every key a run accepts, with its type and default.

Hydra merges `conf/` onto these dataclasses, so an unknown key or a wrong type fails at composition time with
the key's full name. Python users build the same tree directly: `Config(base_path=..., use_drive=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deepfake.config.augment import AugmentConfig


@dataclass
class ModelConfig:
    _target_: str = "deepfake.model.detector.get_model"
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
    explain_layer: str | None = None


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
    train_methods: list[str] = field(default_factory=list)
    train_methods_mode: str = "only"
    test_methods: list[str] = field(default_factory=list)
    val_fraction: float = 0.0
    layout: str = "auto"
    geometry: str = "resize"
    format_align: str = "none"


@dataclass
class HardwareConfig:
    device: str = "auto"
    cudnn_benchmark: bool = True
    tf32: bool = True
    deterministic: bool = False
    num_threads: int | None = None
    adapt_threads: bool = False
    adapt_margin: float = 0.25
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
class TensorBoardLoggerConfig:
    """`logger=tensorboard`: event files in the run directory (what it draws is set under `logging`)."""


@dataclass
class CsvLoggerConfig:
    """`logger=csv`: `<run dir>/metrics.csv`, one row per logged step and per epoch."""


@dataclass
class MlflowLoggerConfig:
    tracking_uri: str | None = None
    experiment_name: str = "deepfake"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class WandbLoggerConfig:
    project: str = "deepfake"
    entity: str | None = None
    mode: str = "online"
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    """The `logger` group: which trackers observe the run. A tracker is on when its node is set; from Python the
    default is TensorBoard alone (`register_configs` gives Hydra an empty node, so `logger=csv` means CSV alone)."""

    tensorboard: TensorBoardLoggerConfig | None = field(default_factory=TensorBoardLoggerConfig)
    csv: CsvLoggerConfig | None = None
    mlflow: MlflowLoggerConfig | None = None
    wandb: WandbLoggerConfig | None = None
    log_model: bool = False
    flush_timeout_s: float = 60.0


@dataclass
class EvalConfig:
    video_aggregation: str = "mean"
    video_topk: int = 5
    threshold: float = 0.5
    target_fpr: float | None = 0.01
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    out_dir: str | None = None
    tta: str = "none"
    calibrated: bool = True
    score_test_split: bool = True
    explain: str = "none"
    explain_faces: int = 8
    faithfulness_faces: int = 256
    embeddings: bool = False
    embedding_samples: int = 2000


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
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    find_lr: bool = False
    lr_finder: LrFinderConfig = field(default_factory=LrFinderConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    calibration: str = "temperature"
    calibration_min_samples: int = 200


@dataclass
class ShardConfig:
    """One deterministic slice of a job's inputs (extract.py's videos, predict.py's inputs): every `count`-th
    one, starting at `index`."""

    index: int = 0
    count: int = 1
