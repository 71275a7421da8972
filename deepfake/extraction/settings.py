"""The crop settings an extraction used, saved as `<out>/extraction.json` so prediction can crop the same way.

extract.py writes the file; training on `data=manifest` copies it into each checkpoint (key `extraction`);
predict.py reads it back from the checkpoint. The file and the checkpoint are untrusted input: `checked`
accepts only the known keys with values of the right type and range, and nothing in them is ever run.
`perturb` records the robustness perturbation the frames went through (`extract.py perturb.type=...`), null
for an ordinary extraction; evaluate.py's `perturb.extracted` reads it to know which setting a set is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from deepfake.choices import PERTURBATION_LEVELS, PERTURBATIONS
from deepfake.errors import UserError
from deepfake.extraction.crops import POLICIES
from deepfake.runs.fileio import atomic_write

SETTINGS_FILE = "extraction.json"
DETECTORS = ("mtcnn", "yunet")
#: The saved keys and the check each value must pass (what predict needs to crop as extract.py did).
_FACES = {
    "policy": lambda v: v in POLICIES,
    "min_size": lambda v: _number(v) and v >= 0,
    "min_score": lambda v: _number(v) and 0 <= v <= 1,
    "margin": lambda v: _number(v) and v >= 1,
    "size": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096,
    "align": lambda v: isinstance(v, bool),
}
_DETECTOR = {
    "kind": lambda v: v in DETECTORS,
    "max_side": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "min_face_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


_PERTURB = {
    "type": lambda v: v in PERTURBATIONS,
    "level": lambda v: v in PERTURBATION_LEVELS and not isinstance(v, bool),
    "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
}


def settings_of(cfg: DictConfig) -> dict[str, Any]:
    """The part of an extract config that decides what a crop looks like."""
    perturb = cfg.get("perturb")
    return {
        "frames_per_video": int(cfg.frames_per_video),
        "detector": {k: cfg.detector[k] for k in _DETECTOR},
        "faces": {k: cfg.faces[k] for k in _FACES},
        "perturb": {k: perturb[k] for k in _PERTURB} if perturb is not None and perturb.type else None,
    }


def write_settings(out: Path, cfg: DictConfig) -> Path:
    path = out / SETTINGS_FILE
    text = json.dumps(settings_of(cfg), indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def checked(raw: Any, source: str) -> dict[str, Any]:
    """`raw` as saved settings, or UserError naming the first key that is missing or wrong."""

    def bad(key: str) -> UserError:
        return UserError(
            f"{source}: extraction setting {key} is missing or invalid; extract the faces again, or give the "
            f"settings on the command line (extraction.{key}=...)"
        )

    if not isinstance(raw, dict):
        raise bad("(the whole section)")
    fpv = raw.get("frames_per_video")
    if not (isinstance(fpv, int) and not isinstance(fpv, bool) and fpv > 0):
        raise bad("frames_per_video")
    out: dict[str, Any] = {"frames_per_video": fpv}
    for section, rules in (("detector", _DETECTOR), ("faces", _FACES)):
        values = raw.get(section)
        if not isinstance(values, dict):
            raise bad(section)
        for key, ok in rules.items():
            if not ok(values.get(key)):
                raise bad(f"{section}.{key}")
        out[section] = {k: values[k] for k in rules}
    perturb = raw.get("perturb")  # absent in files written before robustness extraction: none
    if perturb is not None and not (
        isinstance(perturb, dict) and all(ok(perturb.get(k)) for k, ok in _PERTURB.items())
    ):
        raise bad("perturb")
    out["perturb"] = {k: perturb[k] for k in _PERTURB} if perturb is not None else None
    return out


def read_settings(folder: Path) -> dict[str, Any] | None:
    """The checked settings saved in `folder`, or None when the folder has none (an older extraction)."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} cannot be read as JSON ({e}); extract the faces again") from None
    return checked(raw, str(path))


def manifest_settings(data: DictConfig) -> dict[str, Any] | None:
    """The settings beside a `data=manifest` run's manifest.csv (written by extract.py), else None."""
    if data.get("kind") != "manifest" or not data.get("manifest"):
        return None
    return read_settings(Path(data.manifest).expanduser().parent)


def extracted_sets(folder: Path) -> list[tuple[tuple[str, int], Path]]:
    """The crop sets under `folder` that extract.py made with a robustness perturbation, as
    ((type, level), manifest.csv), in the order of the type list then by level. A set folder is any folder
    directly under `folder` (or `folder` itself) holding manifest.csv and an extraction.json whose `perturb`
    is set; two sets of one setting are refused."""
    if not folder.is_dir():
        raise UserError(
            f"perturb.extracted={folder} is not a folder; pass the folder holding the extracted sets"
        )
    found: dict[tuple[str, int], Path] = {}
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        settings = read_settings(candidate) if (candidate / "manifest.csv").is_file() else None
        if settings is None or settings["perturb"] is None:
            continue
        key = (settings["perturb"]["type"], settings["perturb"]["level"])
        if key in found:
            raise UserError(
                f"{found[key].parent} and {candidate} both hold {key[0]}-{key[1]}; keep one of them"
            )
        found[key] = candidate / "manifest.csv"
    if not found:
        raise UserError(
            f"no set under {folder} was extracted with a perturbation (manifest.csv and extraction.json with "
            "perturb set): run `extract.py ... perturb.type=<TYPE> perturb.level=<level> out=<folder>/<TYPE>-<level>` first"
        )
    return sorted(found.items(), key=lambda kv: (PERTURBATIONS.index(kv[0][0]), kv[0][1]))
