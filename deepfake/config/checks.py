"""The value checks a type cannot express: ranges, choices, and which keys combine, each refused with the key's
full name and an example of a value that works."""

from __future__ import annotations

import math
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from deepfake.choices import PERTURBATION_LEVELS, PERTURBATIONS, STREAMS
from deepfake.choices import TRAIN as CHOICES
from deepfake.errors import ConfigError

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
    "hardware.adapt_margin",
    "eval.explain_faces",
    "eval.embedding_samples",
)
#: Optional sizes: null means the model's or the loader's own choice.
_POSITIVE_OR_NULL: tuple[str, ...] = ("data.img_size", "model.img_size", "hardware.num_threads")
#: Input sizes are bounded, from the command line and from files alike: an image side (4096 px is 48 MB a uint8
#: image, 200 MB a float one, per image of a batch) and the frames of a clip (a clip's frames are one item).
MAX_IMG_SIZE = 4096
MAX_CLIP_FRAMES = 1024
_AT_MOST: dict[str, int] = {"data.img_size": MAX_IMG_SIZE, "model.img_size": MAX_IMG_SIZE,
                            "model.frames": MAX_CLIP_FRAMES}  # fmt: skip
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
    "calibration_min_samples",
    "eval.faithfulness_faces",
    "logger.flush_timeout_s",
)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value is None and OmegaConf.select(cfg, key.rpartition(".")[0]) is None:
            continue  # an optional section that is off (logger.wandb unless logger=wandb)
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
    for key, most in _AT_MOST.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value > most:
            raise ConfigError(f"{key}={value} is more than {most}, the most this project takes; lower it")
    _check_single_keys(cfg)
    _check_recipes(cfg)
    _check_optimisation(cfg.training, cfg.model.freeze_backbone)
    _check_perturb_augment(cfg.data)
    _check_data_protocols(cfg)


def _check_data_protocols(cfg: DictConfig) -> None:
    """Method selection, the validation share and `data.geometry=crop`'s native pixels (docs/protocols.md)."""
    data = cfg.data
    if not 0.0 <= data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), e.g. 0.1 (got {data.val_fraction})")
    for key in ("train_methods", "test_methods"):
        names = [str(m) for m in data[key]]
        if any(not m for m in names) or len(set(names)) != len(names):
            raise ConfigError(
                f"data.{key} must name each method once (got {names}), e.g. data.{key}=[Deepfakes]"
            )
    if data.format_align != "none" and data.decode == "gpu":
        raise ConfigError(
            f"data.format_align={data.format_align} re-encodes images on the CPU after decoding, but data.decode=gpu "
            "decodes on the GPU: use data.decode=cpu with it"
        )
    if data.geometry != "crop":
        return
    # Each of these works on the canonical square crop resized to the input, which geometry=crop never makes.
    clashes = {
        "data.cache": data.cache != "none",
        "data.decode=gpu": data.decode == "gpu",
        "data.fake_synthesis=sbi": data.fake_synthesis == "sbi",
        "model.frames > 1 (clips)": cfg.model.frames > 1,
    }
    found = [name for name, on in clashes.items() if on]
    if found:
        raise ConfigError(
            f"data.geometry=crop reads every image at its own size, which {', '.join(found)} cannot: they store or "
            "make resized square crops. Use data.cache=none, data.decode=cpu, data.fake_synthesis=none and a "
            "single-frame model with it, or data.geometry=resize"
        )


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
    target = cfg.eval.get("target_fpr")
    if target is not None and not 0.0 < target < 1.0:
        raise ConfigError(f"eval.target_fpr must be in (0, 1), e.g. 0.01, or null for none (got {target})")
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
    if cfg.data.kind in ("folder", "generators") and not cfg.data.root:
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


def check_perturbations(types: Sequence[object], levels: Sequence[object], key: str) -> None:
    """`<key>.types` and `<key>.levels`: known perturbation types and levels, each once, neither empty."""
    unknown = [str(t) for t in types if t not in PERTURBATIONS]
    if unknown:
        raise ConfigError(
            f"{key}.types holds unknown type(s) {', '.join(unknown)}; known: {', '.join(PERTURBATIONS)}"
        )
    if not levels or any(isinstance(lv, bool) or lv not in PERTURBATION_LEVELS for lv in levels):
        raise ConfigError(
            f"{key}.levels must be a non-empty list of {', '.join(map(str, PERTURBATION_LEVELS))} (got {list(levels)})"
        )
    if len(set(types)) != len(types) or len(set(levels)) != len(levels):
        raise ConfigError(
            f"{key}.types and {key}.levels must not repeat an entry (got {list(types)}, {list(levels)})"
        )


def check_evaluate_perturb(perturb: DictConfig) -> None:
    """evaluate.py's `perturb` group: the settings to score, the examples to save."""
    if perturb.types:
        check_perturbations(list(perturb.types), list(perturb.levels), "perturb")
    if perturb.examples < 0:
        raise ConfigError(f"perturb.examples must be >= 0 (got {perturb.examples}); 0 = save no examples")
    if perturb.examples and not perturb.types:
        raise ConfigError(
            "perturb.examples shows faces under perturb.types, which is empty: pick perturb=deeperforensics or set perturb.types"
        )


def _check_perturb_augment(data: DictConfig) -> None:
    """`data.augment.perturb`: known types and levels, and CPU decoding (the perturbations are numpy code)."""
    section = data.augment.perturb
    if not section.enabled:
        return
    check_perturbations(list(section.types), list(section.levels), "data.augment.perturb")
    if data.decode == "gpu":
        raise ConfigError(
            "data.augment.perturb runs on the CPU in the loader workers, but data.decode=gpu augments on the "
            "GPU: use data.decode=cpu with it"
        )


def _finite(value: float) -> bool:
    """NaN and infinity pass every `<`/`<=` test, so ranges check them first."""
    return math.isfinite(value)


def _example(key: str) -> str:
    return {"training.learning_rate": "1e-4", "logging.every_n_seconds": "30"}.get(key, "1")
