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

from omegaconf import DictConfig, OmegaConf

from deepfake.choices import PERTURBATION_LEVELS, PERTURBATIONS
from deepfake.errors import UserError
from deepfake.extraction.bounds import MAX_FRAMES, MAX_SIDE
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


def _int_in(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


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
        "decode_max_side": int(cfg.decode_max_side),
        "detector": {k: cfg.detector[k] for k in _DETECTOR},
        "faces": {k: cfg.faces[k] for k in _FACES},
        "perturb": {k: perturb[k] for k in _PERTURB} if perturb is not None and perturb.type else None,
    }


#: Keys beyond prediction's that change what a crop is, or which videos an output holds: recorded too, so a
#: rerun into the same output can be checked against them.
_ALSO = {"faces": ("format", "jpeg_quality"), "detector": ("thresholds", "score_threshold", "model")}


def recorded(cfg: DictConfig) -> dict[str, Any]:
    """What extraction.json holds: prediction's settings, plus the other keys a resumed run must share."""
    out = settings_of(cfg)
    for section, keys in _ALSO.items():
        out[section].update({k: OmegaConf.to_container(cfg[section], resolve=True)[k] for k in keys})
    out["dataset"] = OmegaConf.to_container(cfg.dataset, resolve=True)
    return out


def write_settings(out: Path, cfg: DictConfig) -> Path:
    path = out / SETTINGS_FILE
    text = json.dumps(recorded(cfg), indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


def _perturbation_name(p: Any) -> str:
    if isinstance(p, dict):
        return f"{p.get('type')}-{p.get('level')} (seed {p.get('seed')})"
    return "none" if p is None else str(p)


def changed_settings(out: Path, cfg: DictConfig) -> list[str]:
    """`key: old -> new` for each recorded setting that differs from the extraction.json in `out` (keys an
    older file lacks are not compared); empty when there is no file."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return []
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} cannot be read as JSON ({e}); pass overwrite=true to start over") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} holds no settings mapping; pass overwrite=true to start over")
    mine = recorded(cfg)
    for settings in (saved, mine):  # null or a mapping: compared as one value, not key by key
        if "perturb" in settings:
            settings["perturb"] = _perturbation_name(settings["perturb"])
    old, new = _flat(saved), _flat(mine)
    return [f"{k}: {old[k]} -> {new[k]}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]


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
    if not _int_in(fpv, 1, MAX_FRAMES):
        raise bad("frames_per_video")
    # Extractions before the decode cap saved none; they are read with today's default cap.
    side = raw.get("decode_max_side", MAX_SIDE)
    if not _int_in(side, 0, 16384):
        raise bad("decode_max_side")
    out: dict[str, Any] = {"frames_per_video": fpv, "decode_max_side": side}
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
