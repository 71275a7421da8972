"""Atomic checkpoint files that load with `torch.load(weights_only=True)`.

A checkpoint holds only tensors and plain containers (no pickled classes), so loading one never runs code
and a file from an older version stays readable. Writes go to a temporary file in the same folder, are
fsynced, then renamed over the old file (`deepfake.runs.fileio.atomic_write`): a crash leaves the old
checkpoint or the new one, never half.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepfake.errors import UserError, one_line
from deepfake.runs.fileio import atomic_write
from deepfake.version import __version__

log = logging.getLogger("deepfake.checkpoint")  # the name train.log has always shown


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model under DDP / torch.compile wrappers, whose state_dict keys are stable."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Atomically save a checkpoint dict (see `build_state`)."""
    path = Path(path)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})") from None


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].copy()), "pos": int(np_state[2])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    np.random.set_state(("MT19937", state["numpy"]["key"].numpy(), state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def build_state(
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    ema: Any = None,
    train_state: dict[str, Any] | None = None,
    monitor: dict[str, Any] | None = None,
    config_yaml: str = "",
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    bare = unwrap(model)
    return {
        "version": __version__,
        "model": bare.state_dict(),
        "architecture": getattr(bare, "architecture", ""),
        "preprocess": getattr(bare, "preprocess", {}),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "ema": unwrap(ema.module).state_dict() if ema is not None else None,
        "train_state": train_state or {},
        "monitor": monitor or {},
        "rng": rng_state(),
        "config": config_yaml,
        "metrics": metrics or {},
    }


def saved_epoch(path: Path) -> int | None:
    """The epoch count a checkpoint was saved at; None when the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:  # mmap: reads the small train_state without loading every tensor
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return state.get("train_state", {}).get("epoch")


def load_weights(model: torch.nn.Module, weights: Any, refusal: str) -> None:
    """Load a state dict strictly; keys or shapes that do not fit are one UserError line, `refusal: <what>`
    (torch's own report, a line per key, is logged at debug level)."""
    try:
        result = model.load_state_dict(weights, strict=False)
    except (RuntimeError, TypeError, AttributeError) as e:  # shapes that differ, or no state dict at all
        log.debug("%s", e)
        raise UserError(f"{refusal}: {one_line(e)}") from None
    wrong = [
        (what, keys)
        for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if wrong:
        log.debug("%s: missing %s, unexpected %s", refusal, result.missing_keys, result.unexpected_keys)
        said = "; ".join(f"{len(keys)} {what} key(s) (e.g. {', '.join(keys[:3])})" for what, keys in wrong)
        raise UserError(f"{refusal}: {said}")
