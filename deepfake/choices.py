"""The one list of allowed values for every choice key of the configs.

Validation (`deepfake.config.checks.validate`), the modules that take these values (data, progress, distributed,
predict) and their error messages all read these tuples; the `a | b | c` comments in `conf/` document them and
tests/test_config_sources.py fails when a comment and a tuple disagree. This module imports nothing from the
package, so any module may import it without a cycle.
"""

from __future__ import annotations

AMP = ("auto", "bf16", "fp16", "off")
GRAD_CLIP = ("norm", "value", "off")
MONITOR_MODES = ("max", "min")
ON_NAN = ("stop", "skip")
SCHEDULERS = ("cosine", "step", "multistep", "plateau", "onecycle", "constant", "linear")
PROGRESS = ("auto", "rich", "plain", "off")
DATA_KINDS = ("synthetic", "folder", "manifest", "generators")
#: `data.train_methods_mode`: train on the named methods, or on all but them (leave-one-out).
METHOD_MODES = ("only", "all_but")
#: `data.layout` of `data=generators`: found by looking, or named.
GENERATOR_LAYOUTS = ("auto", "genimage", "forensynths")
#: `data.geometry`: square centre crop resized to the input (faces), or crops at the input size, never resized.
GEOMETRIES = ("resize", "crop")
#: `data.format_align`: re-encode every training and validation image alike (none, or JPEG at quality 95).
FORMAT_ALIGN = ("none", "jpeg95")
BALANCE = ("none", "weighted_sampler", "pos_weight")
FAKE_SYNTHESIS = ("none", "sbi")
CACHES = ("none", "ram", "disk")
DECODERS = ("cpu", "gpu")
VIDEO_AGGREGATION = ("mean", "max", "median", "topk", "confident")
FACE_AGGREGATION = ("max", "mean")
BACKENDS = ("auto", "gloo", "nccl")
PREDICTION_FORMATS = ("csv", "jsonl", "parquet", "json")
TTA = ("none", "flip")
ENSEMBLE_MEANS = ("prob", "logit")
CALIBRATION = ("temperature", "none")
STREAMS = ("rgb", "srm", "dct")
FUSIONS = ("early", "late")
MASK_LOSSES = ("bce", "dice")
EXPLAIN_METHODS = ("none", "gradcam", "hirescam", "gradcam++")
WANDB_MODES = ("online", "offline")
#: Robustness perturbations (`deepfake.perturbations.protocol.TYPES` describes each): DeeperForensics-1.0's
#: seven, then real JPEG and an antialiased resize; each at levels 1 (mildest) to 5.
PERTURBATIONS = ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC", "JPEGQ", "RESIZE")
PERTURBATION_LEVELS = (1, 2, 3, 4, 5)

#: Choice keys of the training config (`conf/train.yaml`), by dotted key.
TRAIN: dict[str, tuple[str, ...]] = {
    "training.amp": AMP,
    "training.grad_clip.mode": GRAD_CLIP,
    "training.monitor_mode": MONITOR_MODES,
    "training.early_stopping.mode": MONITOR_MODES,
    "training.on_nan": ON_NAN,
    "training.scheduler.name": SCHEDULERS,
    "logging.progress": PROGRESS,
    "data.kind": DATA_KINDS,
    "data.train_methods_mode": METHOD_MODES,
    "data.layout": GENERATOR_LAYOUTS,
    "data.geometry": GEOMETRIES,
    "data.format_align": FORMAT_ALIGN,
    "data.balance": BALANCE,
    "data.fake_synthesis": FAKE_SYNTHESIS,
    "data.cache": CACHES,
    "data.decode": DECODERS,
    "eval.video_aggregation": VIDEO_AGGREGATION,
    "distributed.backend": BACKENDS,
    "eval.tta": TTA,
    "calibration": CALIBRATION,
    "model.fusion": FUSIONS,
    "training.mask_loss": MASK_LOSSES,
    "eval.explain": EXPLAIN_METHODS,
    "logger.wandb.mode": WANDB_MODES,
}

#: Choice keys of `conf/predict.yaml` (`format` may also be null: taken from the output file's extension).
PREDICT: dict[str, tuple[str, ...]] = {
    "amp": AMP,
    "format": PREDICTION_FORMATS,
    "aggregation.faces": FACE_AGGREGATION,
    "aggregation.frames": VIDEO_AGGREGATION,
    "tta": TTA,
    "ensemble.mean": ENSEMBLE_MEANS,
    "explain.method": EXPLAIN_METHODS,
    "progress": PROGRESS,
}
