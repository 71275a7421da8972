"""Rebuild a trained detector from what its checkpoint carries, so no training config needs repeating.

A checkpoint (`.pt` from training, or `.safetensors` from `deepfake.evaluation.export`) holds the weights, the timm
`architecture`, the `preprocess` the loaders applied (input size, mean, std) and the resolved run config; the
model is rebuilt from those alone. Evaluate, predict and export all load through here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from deepfake.config.checks import MAX_CLIP_FRAMES, MAX_IMG_SIZE
from deepfake.errors import UserError
from deepfake.evaluation.calibration import checked_temperature
from deepfake.evaluation.operating_point import checked_operating_point
from deepfake.model.detector import DeepfakeDetector, get_model
from deepfake.runs.checkpoint import load_checkpoint, load_weights
from deepfake.runs.safe_config import trusted_config
from deepfake.system.precision import Precision

#: What a checkpoint holds for training alone (the network, resume state, its run's record); every other entry
#: (`extraction`, `calibration`, a validation `threshold`, ...) is what prediction needs, and exports carry it.
TRAINING_ONLY = frozenset(
    {"version", "model", "architecture", "preprocess", "config", "optimizer", "scheduler", "scaler", "ema",
     "train_state", "monitor", "rng", "metrics", "trackers"}
)  # fmt: skip
#: The safetensors metadata key listing the carried entries (each stored as JSON under its own name).
CARRIED = "carried"

#: Model keys that shape the network or its memory layout; the rest (pretrained, compile, ...) only train.
_BUILD_KEYS = (
    "dropout_rate", "drop_path_rate", "img_size", "channels_last", "frames", "temporal_layers", "temporal_heads",
    "streams", "fusion", "mask_head",
)  # fmt: skip


@dataclass
class LoadedDetector:
    model: DeepfakeDetector
    path: Path  # the checkpoint file
    config: DictConfig | None  # the training run's resolved config, when the checkpoint has one
    checkpoint: dict[str, Any]  # everything else the file holds (metrics, train_state, ...)
    temperature: float | None = (
        None  # fitted at the end of training (checked: finite, > 0); None = uncalibrated
    )
    operating_point: dict[str, Any] | None = None  # the validation threshold for eval.target_fpr (checked)

    @property
    def img_size(self) -> int:
        return int(self.model.img_size)

    @property
    def run_dir(self) -> Path:
        """The training run directory: `<run>/checkpoints/x.pt` -> `<run>`; a loose file -> its folder."""
        folder = self.path.parent
        return folder.parent if folder.name == "checkpoints" else folder


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or a run directory's `checkpoints/best.pt`."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "best.pt"):
            if candidate.is_file():
                return candidate
        raise UserError(
            f"{path} holds no checkpoints/best.pt (did its first epoch finish?); "
            f"pass a checkpoint file instead, e.g. checkpoint={path / 'checkpoints' / 'last.pt'}"
        )
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a run directory or a .pt/.safetensors file")
    return path


def load_detector(path: str | Path) -> LoadedDetector:
    """Load and rebuild a detector on the CPU, in eval mode, with the checkpoint's own preprocessing."""
    path = resolve_checkpoint(path)
    state = _read_safetensors(path) if path.suffix == ".safetensors" else load_checkpoint(path)
    for key in ("model", "architecture", "preprocess"):
        if not state.get(key):
            raise UserError(f"{path} is not a deepfake detector checkpoint: it has no '{key}'")
    # evaluate instantiates its data section: checked, and legacy targets moved to today's paths
    config = trusted_config(state["config"], str(path)) if state.get("config") else None
    temperature = checked_temperature(str(path), state.get("calibration"))
    point = checked_operating_point(str(path), state.get("operating_point"))
    preprocess = _checked_preprocess(path, state["preprocess"])
    try:
        model = build_detector(str(state["architecture"]), preprocess, config)
    except (
        TypeError,
        ValueError,
        AssertionError,
    ) as e:  # a saved value the builder cannot take (e.g. frames='x')
        raise UserError(
            f"{path}: its saved model settings cannot build a detector ({type(e).__name__}: {str(e)[:200]}); "
            "export the checkpoint again from its run, or retrain"
        ) from None
    load_weights(
        model, state["model"], f"the weights in {path} do not fit architecture {state['architecture']}"
    )
    return LoadedDetector(
        model=model.eval(),
        path=path.resolve(),
        config=config,
        checkpoint=state,
        temperature=temperature,
        operating_point=point,
    )


def scoring_precision(precision: Precision, amp: str) -> Precision:
    """The autocast to score with: `precision` (resolved from `amp`) on accelerators, fp32 on the CPU for `auto`.

    bf16 keeps 8 bits of mantissa, so CPU autocast rounds probabilities to a few hundred distinct values
    and moves threshold metrics (EER, accuracy) for a small speed gain; an explicit bf16 is still honoured.
    """
    if precision.device_type == "cpu" and amp == "auto":
        return Precision("cpu", None)
    return precision


def build_detector(
    architecture: str, preprocess: dict[str, Any], config: DictConfig | None
) -> DeepfakeDetector:
    """An untrained detector shaped like the saved one, normalising exactly as its training loaders did."""
    model_cfg = config.get("model", {}) if config is not None else {}
    kwargs = {k: model_cfg[k] for k in _BUILD_KEYS if model_cfg.get(k) is not None}
    kwargs.setdefault("img_size", int(preprocess["img_size"]))
    kwargs.setdefault("frames", int(preprocess.get("frames", 1)))  # a clip model says so in its preprocess
    model = get_model(architecture=architecture, pretrained=False, **kwargs)
    model.img_size = int(preprocess["img_size"])
    model.explain_layer = model_cfg.get("explain_layer")  # where Grad-CAM reads it, as trained
    with torch.no_grad():
        model.mean.copy_(torch.tensor(preprocess["mean"]).view_as(model.mean))
        model.std.copy_(torch.tensor(preprocess["std"]).view_as(model.std))
    return model


def _checked_preprocess(path: Path, preprocess: Any) -> dict[str, Any]:
    """The saved `preprocess`, refused unless it is {img_size: int > 0, mean: 3 numbers, std: 3 numbers > 0}."""
    try:
        size, mean, std = int(preprocess["img_size"]), list(preprocess["mean"]), list(preprocess["std"])
        frames = preprocess.get("frames", 1)
        ok = (
            0 < size <= MAX_IMG_SIZE  # a size read from a file must not size an allocation unchecked
            and type(frames) is int
            and 1 <= frames <= MAX_CLIP_FRAMES
            and len(mean) == len(std) == 3
            and all(math.isfinite(float(v)) for v in mean + std)
            and all(float(v) > 0 for v in std)
        )
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise UserError(
            f"{path} is not a deepfake detector checkpoint: its 'preprocess' ({str(preprocess)[:120]}) is not "
            f"{{img_size (1 to {MAX_IMG_SIZE}), mean[3], std[3], frames (clip models, 1 to {MAX_CLIP_FRAMES})}}"
        )
    return preprocess


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a Mapping)
    except Exception as e:
        raise UserError(f"{path} cannot be read as safetensors ({type(e).__name__}: {e})") from None
    # Exports older than `carried` held `calibration` alone.
    carried = _json_metadata(path, meta, CARRIED, '["calibration"]')
    if not (
        isinstance(carried, list) and all(isinstance(k, str) and k not in TRAINING_ONLY for k in carried)
    ):
        raise UserError(
            f"{path}: its '{CARRIED}' metadata is not a list of entry names; export the checkpoint again"
        )
    return {
        "model": weights,
        "architecture": meta.get("architecture", ""),
        "preprocess": _json_metadata(path, meta, "preprocess", "{}"),
        "config": meta.get("config", ""),
        **{key: _json_metadata(path, meta, key, "null") for key in carried},
    }


def _json_metadata(path: Path, meta: dict[str, str], key: str, default: str) -> Any:
    try:
        return json.loads(meta.get(key, default))
    except ValueError:
        raise UserError(f"{path}: its '{key}' metadata is not JSON; export the checkpoint again") from None
