"""Crop settings: extract.py saves them, training on its manifest keeps them, predict.py uses them first."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from deepfake.config import PredictExtractionConfig
from deepfake.errors import UserError
from deepfake.extraction.config import validate
from deepfake.extraction.settings import manifest_settings, read_settings, write_settings
from deepfake.prediction.preview import sheet_name
from deepfake.prediction.settings import crop_settings


def _extracted(tmp_path: Path, **faces: object) -> Path:
    cfg = validate({"root": str(tmp_path), "out": str(tmp_path), "frames_per_video": 8, "faces": faces})
    return write_settings(tmp_path, cfg)


def test_extraction_settings_round_trip_and_reach_a_manifest_run(tmp_path: Path) -> None:
    path = _extracted(tmp_path, margin=1.5, size=128, align=True)
    saved = json.loads(path.read_text())
    assert (
        saved["frames_per_video"] == 8 and saved["faces"]["margin"] == 1.5 and saved["faces"]["align"] is True
    )
    # What prediction reads back: its own keys (the file also records what a rerun must share: format, ...).
    prediction = {
        "frames_per_video": 8,
        "decode_max_side": 4096,
        "detector": {k: saved["detector"][k] for k in ("kind", "max_side", "min_face_size")},
        "faces": {
            k: saved["faces"][k] for k in ("policy", "min_size", "min_score", "margin", "size", "align")
        },
        "perturb": None,
    }
    assert read_settings(tmp_path) == prediction and saved["faces"]["format"] == "png"
    data = OmegaConf.create({"kind": "manifest", "manifest": str(tmp_path / "manifest.csv")})
    assert manifest_settings(data) == prediction
    assert manifest_settings(OmegaConf.create({"kind": "folder", "manifest": None})) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("margin", "__import__('os')"), ("size", 1.5), ("align", "yes"), ("policy", "biggest"), ("margin", 0.5)],
)
def test_a_tampered_settings_file_is_refused(tmp_path: Path, key: str, value: object) -> None:
    path = _extracted(tmp_path)
    saved = json.loads(path.read_text())
    saved["faces"][key] = value
    path.write_text(json.dumps(saved))
    with pytest.raises(UserError, match=rf"extraction setting faces\.{key} is missing or invalid"):
        read_settings(tmp_path)


def _loaded(extraction: object = None) -> SimpleNamespace:
    checkpoint = {} if extraction is None else {"extraction": extraction}
    return SimpleNamespace(checkpoint=checkpoint, path=Path("run/best.pt"))


def test_command_line_over_checkpoint_over_defaults(tmp_path: Path) -> None:
    saved = json.loads(_extracted(tmp_path, margin=1.5, size=128).read_text())
    overrides = OmegaConf.structured(PredictExtractionConfig)
    overrides.faces.size = 64
    got = crop_settings(_loaded(saved), overrides)
    assert (got.faces.size, got.faces.margin, got.frames_per_video) == (64, 1.5, 8)  # line, file, file
    default = crop_settings(_loaded(), OmegaConf.structured(PredictExtractionConfig))
    assert (default.faces.size, default.faces.margin, default.frames_per_video) == (256, 1.3, 32)
    assert default.detector.kind == "mtcnn" and default.faces.min_score == 0.9
    with pytest.raises(UserError, match="extraction setting detector is missing"):
        crop_settings(_loaded({"frames_per_video": 8, "faces": "x"}), overrides)
    overrides.faces.margin = 0.2
    with pytest.raises(UserError, match=r"the command line: extraction setting faces\.margin"):
        crop_settings(_loaded(saved), overrides)


def test_preview_names_are_safe_and_unique() -> None:
    taken: set[str] = set()
    assert sheet_name("/a/../../etc/passwd.mp4", taken) == "passwd.png"
    assert sheet_name("/b/passwd.mp4", taken) == "passwd_2.png"
    assert sheet_name("/c/a b;rm -rf$.mp4", taken) == "a_b_rm_-rf.png"
    assert sheet_name("/d/....mp4", taken) == "video.png"
