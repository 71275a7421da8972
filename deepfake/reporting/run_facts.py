"""What a run directory, its checkpoint and its evaluation folders say, read for report.html and MODEL_CARD.md.

Everything here is read, never run: checkpoints load with `weights_only=True` (memory-mapped, so only the small
entries are read), configs are parsed as plain YAML (no interpolation, no `_target_`), safetensors give their
metadata only. A file that is missing leaves its facts out; one that cannot be read is logged and left out too,
so a damaged or older run still gets a page that says what is missing instead of no page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("deepfake")

#: The checkpoint entries a report reads (weights, optimizer and RNG state are never touched).
CHECKPOINT_FACTS = (
    "version", "architecture", "preprocess", "train_state", "monitor", "calibration", "operating_point",
    "extraction",
)  # fmt: skip
METRICS_FILE = "metrics.json"


def dig(node: Any, *keys: Any) -> Any:
    """node[k1][k2]... or None where a level is missing or not a mapping (or a list index out of range)."""
    for key in keys:
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
            node = node[key]
        else:
            return None
    return node


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; {} when the file is missing, or (with a warning) unreadable or not an object."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log.warning("report: %s cannot be read (%s); its facts are left out", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The small entries of a checkpoint (`CHECKPOINT_FACTS`, plus its config parsed as YAML under `config`);
    a `.safetensors` export gives its metadata. {} (with a warning) when the file cannot be read."""
    try:
        if path.suffix == ".safetensors":
            state = _safetensors_metadata(path)
        else:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(state, dict):
            raise ValueError("not a checkpoint dictionary")
        facts = {k: state[k] for k in CHECKPOINT_FACTS if k in state}
        facts["config"] = _yaml(state.get("config"))
    except Exception as e:  # any damage is the report's "not recorded", never the end of training
        log.warning("report: %s cannot be read (%s: %s); its facts are left out", path, type(e).__name__, e)
        return {}
    return facts


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out: dict[str, Any] = {"architecture": meta.get("architecture"), "config": meta.get("config")}
    for key in ("preprocess", "calibration", "operating_point", "extraction"):
        if key in meta:
            out[key] = json.loads(meta[key])
    return out


def _yaml(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        data = yaml.load(
            text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )  # the C loader: 10x faster
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class RunFacts:
    """One training run as its files record it; every part may be empty."""

    run_dir: Path | None = None
    checkpoint_path: Path | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)  # read_checkpoint's entries
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json
    hardware: dict[str, Any] = field(default_factory=dict)  # hardware.json
    summary: dict[str, Any] = field(default_factory=dict)  # model_summary.json

    @property
    def config(self) -> dict[str, Any]:
        return self.checkpoint.get("config") or {}

    @property
    def name(self) -> str:
        """A run's name: `<date>_<time>` of its folder, or the checkpoint's file name."""
        if self.run_dir is not None and self.run_dir.parent.name:
            return f"{self.run_dir.parent.name}_{self.run_dir.name}"
        return self.checkpoint_path.stem if self.checkpoint_path is not None else "detector"


def read_run(run_dir: Path | None, checkpoint: Path | None = None) -> RunFacts:
    """The facts of `run_dir` and of `checkpoint` (default: the run's best.pt, else last.pt)."""
    if checkpoint is None and run_dir is not None:
        folder = run_dir / "checkpoints"
        checkpoint = next((p for p in (folder / "best.pt", folder / "last.pt") if p.is_file()), None)
    facts = RunFacts(run_dir=run_dir, checkpoint_path=checkpoint)
    if checkpoint is not None and checkpoint.is_file():
        facts.checkpoint = read_checkpoint(checkpoint)
    if run_dir is not None and run_dir.is_dir():
        facts.metrics = read_json(run_dir / METRICS_FILE)
        facts.hardware = read_json(run_dir / "hardware.json")
        facts.summary = read_json(run_dir / "model_summary.json")
    return facts


@dataclass
class SetFacts:
    """One evaluated set: its `eval/<set>/` folder and metrics.json."""

    name: str
    folder: Path
    metrics: dict[str, Any]

    def file(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.is_file() else None


def read_sets(eval_dir: Path | None, names: Sequence[str] | None = None) -> list[SetFacts]:
    """The named sets under `eval_dir` in that order (one without a metrics.json still gets an entry: its
    figures may be there), or every folder holding a metrics.json, by name, when `names` is None."""
    if eval_dir is None or not eval_dir.is_dir():
        return []
    if names is None:
        names = sorted(p.parent.name for p in eval_dir.glob(f"*/{METRICS_FILE}"))
    return [SetFacts(name, eval_dir / name, read_json(eval_dir / name / METRICS_FILE)) for name in names]
