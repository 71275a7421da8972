"""What predict.py writes: one row per input (video or image), and with per_frame=true one row per face.

Columns of a row: path, prob, pred, frames_used (frames with a face, whose probabilities the video's is made
of), faces_found (faces scored), status (ok | no_face | error) and error; then the manifest's columns when the
input is a manifest that has them (label, split, video, method, identity); last `settings`, the fingerprint of
the settings the row was scored with (`deepfake.prediction.fingerprint`), which resume checks. Images are face
crops scored as they are: frames_used and faces_found stay empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deepfake.prediction.videos import VideoResult

COLUMNS = ("path", "prob", "pred", "frames_used", "faces_found", "status", "error")
SETTINGS = "settings"  # the last column: the settings fingerprint
FRAME_COLUMNS = ("path", "frame", "face", "face_prob", "frame_prob")
#: Column types (Parquet's schema, and reading a CSV back); any other column is text.
TYPES = {"prob": "float", "frames_used": "int", "faces_found": "int", "label": "int",
         "frame": "int", "face": "int", "face_prob": "float", "frame_prob": "float"}  # fmt: skip
STATUSES = ("ok", "no_face", "error")


@dataclass
class Scored:
    """One input's row, its per-face rows (videos) and the seconds it took (decode, detect, score)."""

    row: dict[str, Any]
    frames: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    frames_decoded: int | None = None  # videos: frames decoded (the summary flags few with a face)


def columns(carried: Sequence[str]) -> tuple[str, ...]:
    """The output's columns for an input that carries the manifest columns `carried`."""
    return (*COLUMNS, *carried, SETTINGS)


def typed(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row read back from CSV (text, None for an empty cell) with its numbers as numbers."""
    out = dict(row)
    for key, kind in TYPES.items():
        value = out.get(key)
        if isinstance(value, str):
            out[key] = float(value) if kind == "float" else int(value)
    return out


def label(prob: float | None, threshold: float) -> str | None:
    return None if prob is None else ("fake" if prob >= threshold else "real")


def video_row(result: VideoResult, threshold: float, no_face_prob: float | None) -> dict[str, Any]:
    """The row of one video; a video without a face gets `no_face_prob` (the DFDC solutions' 0.5)."""
    prob = no_face_prob if result.status == "no_face" else result.prob
    return {
        "path": result.path,
        "prob": prob,
        "pred": label(prob, threshold),
        "frames_used": result.frames_used,
        "faces_found": result.faces_found,
        "status": result.status,
        "error": result.error or None,
    }


def image_row(path: str, prob: float | None, error: str, threshold: float) -> dict[str, Any]:
    prob = None if error else prob
    return {"path": path, "prob": prob, "pred": label(prob, threshold), "frames_used": None,
            "faces_found": None, "status": "error" if error else "ok", "error": error or None}  # fmt: skip


def frame_rows(result: VideoResult) -> list[dict[str, Any]]:
    """One row per scored face, with its frame's aggregated probability beside it."""
    frame_prob = dict(result.frame_probs)
    return [
        {
            "path": result.path,
            "frame": frame,
            "face": face,
            "face_prob": prob,
            "frame_prob": frame_prob[frame],
        }
        for frame, face, prob in result.face_probs
    ]
