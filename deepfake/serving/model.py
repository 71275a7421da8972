"""The detector a server holds: loaded once, then one file at a time scored exactly as predict.py scores it.

`ServedModel` sets up what `deepfake.prediction.driver.predict` sets up once per run (the ensemble, the crop
settings, the face finder and the aggregation), from the same keys, checked by the same function; `score(path)`
then takes a video through `prediction.videos.predict_videos` and `rows.video_row`, and anything else through
`prediction.windows.scored` (images, files that are no video), so a file's row is the row predict.py writes for
it. Besides the row it keeps what a page shows: per-frame probabilities and the most suspicious face crops
(their Grad-CAM overlays with `serve.explain=true`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from deepfake.data.decode import decode_file, fit
from deepfake.data.workers import default_num_workers
from deepfake.evaluation.ensemble import checkpoint_list, clip_length_of, load_ensemble
from deepfake.evaluation.inference import scoring_precision
from deepfake.prediction.driver import checked_config
from deepfake.prediction.explanations import Explainer
from deepfake.prediction.inputs import video_kind
from deepfake.prediction.rows import video_row
from deepfake.prediction.run import VideoRows
from deepfake.prediction.settings import crop_settings
from deepfake.prediction.sources import Entry
from deepfake.prediction.videos import predict_videos
from deepfake.prediction.windows import Scoring, scored
from deepfake.reporting.model_card import CARD_FILE
from deepfake.system.hardware import HardwareManager

log = logging.getLogger("deepfake")

#: serve.yaml's keys that are predict.py's scoring keys, handed over as they are.
SCORING_KEYS = ("checkpoint", "threshold", "batch_size", "num_workers", "amp", "hardware", "no_face_prob",
                "aggregation", "extraction", "tta", "ensemble", "calibrated")  # fmt: skip


@dataclass
class Answer:
    """One file's row (predict.py's columns) and what the page shows beside it."""

    row: dict[str, Any]
    frame_probs: list[tuple[int, float]] = field(default_factory=list)  # (frame index, prob), videos only
    faces: list[tuple[np.ndarray, float, int]] = field(default_factory=list)  # (RGB uint8, prob, frame index)
    seconds: float = 0.0


def predict_config(cfg: DictConfig, workdir: Path) -> DictConfig:
    """The predict.py config that scores as `cfg` does (checked by predict.py's own checks)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    given = {key: values[key] for key in SCORING_KEYS}
    method = cfg.explain.method if cfg.serve.explain else "none"
    explain = {"method": method, "layer": cfg.explain.layer}
    return checked_config({**given, "input": str(workdir), "output": str(workdir / "upload.json"),
                           "explain": explain, "progress": "off"})  # fmt: skip


class ServedModel:
    """The checkpoint(s), face finder and settings of a server, set up once and shared by every request.

    `score` may run in several threads at once (`serve.max_concurrent`): the models are only read. Grad-CAM
    registers hooks on the models, so explanations take turns.
    """

    def __init__(self, cfg: DictConfig, workdir: Path) -> None:
        self.pcfg = pcfg = predict_config(cfg, workdir)
        hw = HardwareManager(**pcfg.hardware)
        self.device = hw.device
        self.precision = scoring_precision(hw.precision(pcfg.amp), pcfg.amp)
        self.ensemble, self.loaded = load_ensemble(
            checkpoint_list(pcfg.checkpoint), hw.device, self.precision, pcfg.tta, pcfg.ensemble.mean,
            pcfg.calibrated,
        )  # fmt: skip
        self.workers = max(1, default_num_workers() if pcfg.num_workers < 0 else pcfg.num_workers)
        hw.configure(self.workers)
        self.clip = clip_length_of(self.loaded)
        self.crop = crop_settings(self.loaded[0], pcfg.extraction)
        self.explain = pcfg.explain.method if pcfg.explain.method != "none" else None
        if self.explain is not None:  # grad-cam and the layer checked now, not at the first request
            self._explainer(workdir)
        self.videos = VideoRows(pcfg, self.loaded[0], self.crop, self.ensemble, self.clip, hw.device,
                                self.workers, workdir / "upload.json").__enter__()  # fmt: skip
        self._explaining = threading.Lock()

    def close(self) -> None:
        self.videos.__exit__(None, None, None)

    def _explainer(self, folder: Path) -> Explainer:
        p = self.pcfg
        return Explainer(self.ensemble.members, p.explain.method, p.explain.layer, p.tta, folder / "upload.json",
                         folder, self.device, min(p.batch_size, 32), self.clip)  # fmt: skip

    def score(self, path: Path, name: str) -> Answer:
        """Score the file at `path` (inside a request's own folder, where explanations go too); the row's
        `path` is `name`, the uploaded file's name."""
        answer = self._video(path) if video_kind(str(path)) == "video" else self._other(path)
        answer.row["path"] = name
        return answer

    def _video(self, path: Path) -> Answer:
        v, p = self.videos, self.pcfg
        explainer = self._explainer(path.parent) if self.explain else None
        with self._explaining if explainer else contextlib.nullcontext():
            (result,) = predict_videos(
                [str(path)], v.settings, v.detector, v.score, v.agg, v.device, 1, v.batch_size,
                explainer.video if explainer else None,
            )  # fmt: skip
        row = video_row(result, p.threshold, p.no_face_prob)
        return Answer(row, result.frame_probs, result.top_faces, result.seconds)

    def _other(self, path: Path) -> Answer:
        explainer = self._explainer(path.parent) if self.explain else None
        scoring = Scoring(self.ensemble, self.device, self.pcfg.batch_size, 0, self.pcfg.threshold, self.clip,
                          videos=lambda: self.videos, explainer=explainer)  # fmt: skip
        with self._explaining if explainer else contextlib.nullcontext():
            ((_, result),) = scored([Entry(str(path))], scoring)
        row = dict(result.row)
        faces = []
        if row["prob"] is not None:
            overlays = sorted(explainer.folder.rglob("*.png")) if explainer else []
            face = _read_rgb(overlays[0]) if overlays else _centre(path)
            faces.append((face, float(row["prob"]), 0))
        return Answer(row, [], faces, result.seconds)

    def info(self) -> dict[str, Any]:
        """What /api/info tells: each checkpoint's card fields, the calibration and the crop settings."""
        p = self.pcfg
        return {
            "checkpoints": [_card(d, p.calibrated) for d in self.loaded],
            "threshold": p.threshold,
            "aggregation": OmegaConf.to_container(p.aggregation, resolve=True),
            "tta": p.tta,
            "ensemble_mean": p.ensemble.mean,
            "calibrated": p.calibrated,
            "no_face_prob": p.no_face_prob,
            "extraction": OmegaConf.to_container(self.crop, resolve=True),
            "explain": self.explain,
            "device": str(self.device),
            "precision": self.precision.name,
        }


def _card(d: Any, calibrated: bool) -> dict[str, Any]:
    """A checkpoint's model card fields: what it is, how it was trained and validated."""
    ck = d.checkpoint
    return {
        "path": str(d.path),
        "architecture": ck.get("architecture", ""),
        "img_size": d.img_size,
        "preprocess": d.model.preprocess,
        "version": ck.get("version"),
        "epoch": (ck.get("train_state") or {}).get("epoch"),
        "best": (ck.get("monitor") or {}).get("best"),
        "metrics": {k: v for k, v in (ck.get("metrics") or {}).items() if isinstance(v, int | float | str)},
        "temperature": d.temperature,
        "temperature_used": d.temperature if calibrated else None,
        "operating_point": ck.get(
            "operating_point"
        ),  # eval.target_fpr's validation threshold (threshold=val_fpr)
        "model_card": _model_card(Path(d.path)),
    }


#: A card is a page of Markdown; anything near this size is not one.
_MAX_CARD = 256 << 10


def _model_card(path: Path) -> str | None:
    """The MODEL_CARD.md written beside an export or in the run folder of a checkpoints/*.pt, when there is one."""
    for folder in (path, path.parent, path.parent.parent):
        card = folder / CARD_FILE
        if card.is_file():
            with card.open("rb") as f:
                return f.read(_MAX_CARD).decode("utf-8", errors="replace")
    return None


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _centre(path: Path) -> np.ndarray:
    """The centre square a model scores of an image, at its own resolution (as the explanations show it)."""
    full = decode_file(str(path), None)
    return fit(full, min(full.shape[-2:])).permute(1, 2, 0).numpy()
