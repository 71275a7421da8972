"""The settings a row's probability depends on, and their fingerprint: what resume and shards check.

A row is keyed by its path and this fingerprint. The settings are what changes a probability or a column: the
checkpoints (by content, so the same file mounted elsewhere on another machine matches, and a retrained
`best.pt` at the same path does not), their temperatures, TTA, the ensemble mean, the autocast precision, the
aggregation and `no_face_prob`, the threshold (it sets `pred`), the crop settings of videos, and the columns.
Batch size, workers and the device are left out: they change speed, not the answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deepfake.evaluation.inference import LoadedDetector
from deepfake.runs.fileio import sha256_file
from deepfake.system.precision import Precision

#: Detector keys that set where and how fast detection runs, not which faces it finds.
_RUNTIME_KEYS = ("device", "batch_size", "threads")


def run_settings(
    cfg: DictConfig,
    loaded: Sequence[LoadedDetector],
    crop: DictConfig,
    precision: Precision,
    threshold: float,
    columns: Sequence[str],
) -> dict[str, Any]:
    """The settings of this run, as plain JSON values."""
    extraction = OmegaConf.to_container(crop, resolve=True)
    assert isinstance(extraction, dict)
    for key in _RUNTIME_KEYS:
        extraction["detector"].pop(key, None)
    return {
        "checkpoints": [sha256_file(d.path)[:16] for d in loaded],
        "temperatures": [d.temperature if cfg.calibrated else None for d in loaded],
        "tta": cfg.tta,
        "ensemble_mean": cfg.ensemble.mean,
        "precision": precision.name,
        "aggregation": OmegaConf.to_container(cfg.aggregation, resolve=True),
        "no_face_prob": cfg.no_face_prob,
        "threshold": float(threshold),
        "extraction": extraction,
        "columns": list(columns),
    }


def fingerprint(settings: Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of the settings' canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key: old -> new` for each setting that differs (dotted keys), in the settings' order."""
    before, after = _flat(old), _flat(new)
    keys = list(after) + [k for k in before if k not in after]
    return [
        f"{k}: {_short(before.get(k))} -> {_short(after.get(k))}"
        for k in keys
        if before.get(k) != after.get(k)
    ]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
