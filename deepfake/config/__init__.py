"""The run configuration: the schema (`schema`; evaluate's and predict's in `scoring`), its value checks (`checks`) and the one way in, `to_config`.

Hydra merges `conf/` onto the schema, so an unknown key or a wrong type fails at composition time with the key's
full name; `validate()` adds the value checks a type cannot express (ranges, choices). Python users build the
same tree directly: `Config(base_path=..., use_drive=True)`.

On the ground floor with `errors`, `choices` and `exits`. May import: those only.
"""

from __future__ import annotations

import warnings

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from deepfake.choices import MONITOR_MODES
from deepfake.config.augment import (
    AugmentConfig,
    BlurConfig,
    ColorJitterConfig,
    CutoutConfig,
    DownscaleConfig,
    GrayscaleConfig,
    JpegConfig,
    NoiseConfig,
)
from deepfake.config.checks import validate
from deepfake.config.schema import (
    DRIVE_MIRROR,
    DRIVE_SUBDIR,
    BackupConfig,
    CheckpointConfig,
    Config,
    CsvLoggerConfig,
    DataConfig,
    DebugConfig,
    DistributedConfig,
    EarlyStoppingConfig,
    EmaConfig,
    EvalConfig,
    GradClipConfig,
    HardwareConfig,
    LoggerConfig,
    LoggingConfig,
    LrFinderConfig,
    MlflowLoggerConfig,
    ModelConfig,
    ProfilerConfig,
    SamConfig,
    SbiConfig,
    SchedulerConfig,
    ShardConfig,
    SyntheticConfig,
    TensorBoardLoggerConfig,
    TrainingConfig,
    WandbLoggerConfig,
)
from deepfake.config.scoring import (
    EnsembleConfig,
    EvaluateConfig,
    ExplainConfig,
    PredictAggregationConfig,
    PredictConfig,
    PredictDetectorConfig,
    PredictExtractionConfig,
    PredictFacesConfig,
    ServeConfig,
)
from deepfake.errors import ConfigError

__all__ = [
    "DRIVE_MIRROR",
    "DRIVE_SUBDIR",
    "AugmentConfig",
    "BackupConfig",
    "BlurConfig",
    "CheckpointConfig",
    "ColorJitterConfig",
    "Config",
    "CsvLoggerConfig",
    "CutoutConfig",
    "DataConfig",
    "DebugConfig",
    "DistributedConfig",
    "DownscaleConfig",
    "EarlyStoppingConfig",
    "EmaConfig",
    "EnsembleConfig",
    "EvalConfig",
    "EvaluateConfig",
    "ExplainConfig",
    "GradClipConfig",
    "GrayscaleConfig",
    "HardwareConfig",
    "JpegConfig",
    "LoggerConfig",
    "LoggingConfig",
    "LrFinderConfig",
    "MlflowLoggerConfig",
    "ModelConfig",
    "NoiseConfig",
    "PredictAggregationConfig",
    "PredictConfig",
    "PredictDetectorConfig",
    "PredictExtractionConfig",
    "PredictFacesConfig",
    "ProfilerConfig",
    "SamConfig",
    "SbiConfig",
    "SchedulerConfig",
    "ServeConfig",
    "ShardConfig",
    "SyntheticConfig",
    "TensorBoardLoggerConfig",
    "TrainingConfig",
    "WandbLoggerConfig",
    "register_configs",
    "to_config",
    "validate",
]


def register_configs() -> None:
    """Register the schemas so `conf/{train,evaluate,predict}.yaml` can name them first in their defaults."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=_train_schema())
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="predict_schema", node=PredictConfig)
    store.store(name="serve_schema", node=ServeConfig)
    # conf/hydra/launcher/submitit_slurm.yaml shares the plugin's name, so `hydra/launcher=submitit_slurm` selects
    # it; Hydra then checks it against the plugin's schema of that name and warns that this matching is deprecated.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_slurm' is validated against ConfigStore schema"
    )
    # conf/hparams_search/optuna.yaml: the study's direction follows training.monitor_mode.
    OmegaConf.register_new_resolver("optuna_direction", _optuna_direction, replace=True)


def _train_schema() -> DictConfig:
    """`Config` with an empty `logger` node: Hydra merges the chosen `logger=` options onto it and cannot remove a
    key, so TensorBoard (the Python default) must not be there already for `logger=csv` to mean CSV alone."""
    schema = OmegaConf.structured(Config)
    schema.logger.tensorboard = None
    return schema


def _optuna_direction(mode: str) -> str:
    if mode not in MONITOR_MODES:
        raise ConfigError(f"training.monitor_mode={mode!r} is not one of {', '.join(MONITOR_MODES)}")
    return "maximize" if mode == "max" else "minimize"


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
