"""`model.weights`: load a local backbone file, and refuse one that does not fit the architecture.

timm loads a file whose keys do not match with only a "Missing keys" warning, so a wrong file trained from
random init without anyone noticing. Here at least `MIN_MATCHED` of the backbone's tensors (by count,
buffers included) must be found in the file under the same name and shape. The file may be a plain state
dict (timm's own `.safetensors`/`.pth`, also wrapped in `state_dict`/`model` as training scripts save it), or
one of this project's checkpoints or safetensors exports: then its backbone is taken and its head dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from timm.models import clean_state_dict
from torch import nn

from deepfake.errors import ConfigError

log = logging.getLogger("deepfake.weights")  # the name train.log has always shown

#: The share of the backbone's tensors that must load from `model.weights`.
MIN_MATCHED = 0.9
#: Keys under which training scripts nest the state dict (timm's train.py, ours, common others).
_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model")


def load_backbone_weights(backbone: nn.Module, path: Path, architecture: str) -> None:
    """Copy the matching tensors of `path` into `backbone`; ConfigError when fewer than MIN_MATCHED fit."""
    state, kind = read_weights(path)
    expected = backbone.state_dict()
    matched = {k: v for k, v in state.items() if k in expected and v.shape == expected[k].shape}
    if len(matched) < MIN_MATCHED * len(expected):
        raise ConfigError(
            f"model.weights={path} does not fit {architecture}: only {len(matched)} of its backbone's "
            f"{len(expected)} tensors are in that {kind} with the same name and shape, and at least "
            f"{MIN_MATCHED:.0%} must be. Pass weights of {architecture}, or set model.architecture to the "
            "architecture the file was saved from."
        )
    missing = sorted(set(expected) - set(matched))
    if missing:
        log.warning(
            "model.weights: %d of %d backbone tensors are not in %s and keep their random init: %s",
            len(missing), len(expected), path, ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else ""),
        )  # fmt: skip
    backbone.load_state_dict(matched, strict=False)
    log.info(
        "model.weights: loaded %d of %d backbone tensors from %s (%s)",
        len(matched),
        len(expected),
        path,
        kind,
    )


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone tensors a file holds, and what kind of file it was (for messages)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            content: Any = load_file(str(path))
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch raise many types; all mean "not a weights file"
        raise ConfigError(
            f"model.weights={path} cannot be read as weights ({type(e).__name__}: {e}); "
            "pass a .safetensors or .pth state dict"
        ) from None
    kind = "file"
    if isinstance(content, dict) and isinstance(content.get("architecture"), str) and "model" in content:
        content, kind = content["model"], f"{content['architecture']} checkpoint"
    elif isinstance(content, dict):
        for key in _WRAPPERS:
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict):
        raise ConfigError(f"model.weights={path} holds no state dict (a mapping of names to tensors)")
    state = clean_state_dict({k: v for k, v in content.items() if isinstance(v, torch.Tensor)})
    detector_head = ("head.1.weight", "head.fc.1.weight")  # per-image, clip model (`model.temporal`)
    if any(k in state for k in detector_head) and any(k.startswith("backbone.") for k in state):
        # A detector of this project (checkpoint or safetensors export): its backbone, without the head.
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        kind = kind if kind != "file" else "detector export"
    return state, kind
