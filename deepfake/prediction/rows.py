"""What predict.py writes: one row per input (video or image), and with per_frame=true one row per face.

Columns of a row: path, prob, pred, frames_used (frames with a face, whose probabilities the video's is made
of), faces_found (faces scored), status (ok | no_face | error) and error. Images are face crops scored as they
are: frames_used and faces_found stay empty.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from deepfake.prediction.videos import VideoResult
from deepfake.runs.fileio import atomic_write

COLUMNS = ("path", "prob", "pred", "frames_used", "faces_found", "status", "error")
FRAME_COLUMNS = ("path", "frame", "face", "face_prob", "frame_prob")


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


def frames_path(output: Path) -> Path:
    """`preds.csv` -> `preds.frames.csv` (whatever the output's format)."""
    return output.with_name(f"{output.stem}.frames.csv")


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


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """CSV with empty cells for None, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    text = buffer.getvalue()
    atomic_write(path, lambda f: f.write(text.encode()))
