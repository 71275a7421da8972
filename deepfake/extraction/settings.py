"""The crop settings an extraction used, saved as `<out>/extraction.json` so prediction can crop the same way.

extract.py writes the file; training on `data=manifest` copies it into each checkpoint (key `extraction`);
predict.py reads it back from the checkpoint. The file and the checkpoint are untrusted input: `checked`
accepts only the known keys with values of the right type and range, and nothing in them is ever run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from deepfake.errors import UserError
from deepfake.extraction.crops import POLICIES
from deepfake.extraction.video import MAX_FRAMES, MAX_SIDE
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


def settings_of(cfg: DictConfig) -> dict[str, Any]:
    """The part of an extract config that decides what a crop looks like."""
    return {
        "frames_per_video": int(cfg.frames_per_video),
        "decode_max_side": int(cfg.decode_max_side),
        "detector": {k: cfg.detector[k] for k in _DETECTOR},
        "faces": {k: cfg.faces[k] for k in _FACES},
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
