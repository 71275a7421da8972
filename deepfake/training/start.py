"""What `train(cfg)` checks before it opens a run folder or a process group: the config merged and validated
once, the recipes that are not training (`check=true`, `find_lr=true`) sent to their own entry points, and the
pretrained weights and trackers reachable. A refusal removes the fresh run folder Hydra made for this call."""

from __future__ import annotations

from omegaconf import DictConfig

from deepfake.config import Config, to_config
from deepfake.errors import ConfigError, UserError
from deepfake.model.detector import check_pretrained
from deepfake.tracking.trackers import check_trackers
from deepfake.training.run_dir import discard_fresh_run_dir


def checked_training_config(cfg: Config | DictConfig | dict) -> DictConfig:
    """The run's config, merged onto the schema and validated; a `UserError` when this is no training run."""
    try:
        cfg = to_config(cfg)
        if cfg.check:
            raise ConfigError(
                "check=true runs the pre-flight check, not training: use `python train.py check=true ...`, "
                "or deepfake.training.preflight.check(cfg) from Python"
            )
        if cfg.find_lr:
            raise ConfigError(
                "find_lr=true runs the LR range test, not training: use `python train.py find_lr=true ...`, "
                "or deepfake.training.lr_finder.find_lr(cfg) from Python"
            )
        if not cfg.resume:  # a resumed run's model comes from its checkpoint
            check_pretrained(cfg.model.architecture, cfg.model.pretrained, cfg.model.weights)
        check_trackers(cfg.logger)  # a missing package or a misread URI: refused before anything is built
    except UserError:
        discard_fresh_run_dir()
        raise
    return cfg
