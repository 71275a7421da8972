"""Probability of fake for new videos and images: what `python predict.py checkpoint=... input=...` runs.

Each input is a video or an image by its content (`deepfake.prediction.inputs`). Videos go through the
prediction room (decode, detect and crop as extract.py did, score, aggregate; `deepfake.prediction`). Images are
face crops, decoded and resized exactly as evaluation does (same dataset class, the checkpoint's size and
normalisation), batched through a DataLoader. A file that cannot be read is a row with an error in the output,
never the end of the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from deepfake.choices import AMP, ENSEMBLE_MEANS, FACE_AGGREGATION, PREDICTION_FORMATS, TTA, VIDEO_AGGREGATION
from deepfake.config import PredictConfig
from deepfake.data.dataset import FaceDataset
from deepfake.data.module import default_num_workers
from deepfake.data.samples import IMAGE_EXTENSIONS, Sample
from deepfake.data.transforms import eval_transform
from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.ensemble import Ensemble, Member, checkpoint_list, clip_length_of, load_ensemble
from deepfake.evaluation.inference import scoring_precision
from deepfake.prediction.inputs import NOT_A_VIDEO, VIDEO_EXTENSIONS, video_kind
from deepfake.prediction.rows import COLUMNS, image_row, write_csv
from deepfake.prediction.run import video_rows
from deepfake.runs.fileio import atomic_write, require_writable
from deepfake.system.hardware import HardwareManager
from deepfake.system.precision import Precision
from deepfake.system.thread_probe import paced

log = logging.getLogger("deepfake")

#: An image row's error when the checkpoint is a video-level clip model.
CLIP_MODEL_IMAGE = "the checkpoint is a video-level clip model ({frames} frames per clip): it scores videos, not single images"
LIST_SUFFIXES = (".txt", ".lst", ".list")
INPUT_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
FORMATS = PREDICTION_FORMATS


def list_inputs(source: str | Path) -> list[str]:
    """Image and video paths from one file, a folder (recursive, sorted) or a list file (one path per line).

    In a list file, blank lines and `#` comments are skipped and relative paths are relative to the file's
    folder; listed files that are missing become error rows later, like unreadable ones.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        found = sorted(
            # A dangling or looping link is kept: it gets a row with its error, as an unreadable file does.
            str(p)
            for p in path.rglob("*")
            if p.suffix.lower() in INPUT_EXTENSIONS and (p.is_file() or p.is_symlink())
        )
        if not found:
            raise UserError(f"input folder {path} holds no images or videos ({', '.join(INPUT_EXTENSIONS)})")
        return found
    if not path.is_file():
        raise UserError(
            f"input {path} does not exist; pass a video, an image, a folder or a text file listing them"
        )
    if path.suffix.lower() not in LIST_SUFFIXES:
        return [str(path)]
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    listed = [line for line in lines if line and not line.startswith("#")]
    if not listed:
        raise UserError(f"list file {path} names no images or videos (one path per line)")
    return [str(p if (p := Path(line).expanduser()).is_absolute() else path.parent / p) for line in listed]


class ImageFiles(Dataset):
    """Evaluation-decoded images; an unreadable file yields a blank image and its error instead of raising."""

    def __init__(self, paths: Sequence[str], img_size: int) -> None:
        samples = [Sample(path=p, label=0, video=p, method="") for p in paths]
        self.faces = FaceDataset(samples, eval_transform(img_size), decode_size=img_size)
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            image, _, _ = self.faces[index]
            return image, index, ""
        except Exception as e:  # any failure on one file is that file's problem: reported in its row
            cause = e.__cause__ or e.__context__ or e  # the decoder's own message, not the training hint
            blank = torch.zeros(3, self.img_size, self.img_size, dtype=torch.uint8)
            return blank, index, f"{type(cause).__name__}: {cause}"


def predict_paths(
    model: torch.nn.Module,
    paths: Sequence[str],
    img_size: int,
    precision: Precision,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """One model's fake probabilities (NaN where unreadable) and error messages ("" where fine), in order."""
    ensemble = Ensemble([Member(model=model, img_size=img_size)], precision=precision)
    return predict_images(ensemble, paths, device, batch_size, num_workers)


@torch.no_grad()
def predict_images(
    ensemble: Ensemble, paths: Sequence[str], device: torch.device, batch_size: int = 64, num_workers: int = 0
) -> tuple[np.ndarray, list[str]]:
    """The ensemble's probabilities (NaN where unreadable) and error messages, in `paths` order.

    Images are decoded once per distinct member input size, so each member scores exactly the pixels its
    single prediction would.
    """
    logits = torch.empty(len(ensemble.members), len(paths), device=device)
    errors = [""] * len(paths)
    for size, which in ensemble.groups().items():
        loader = DataLoader(
            ImageFiles(paths, size),
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        for member in which:
            ensemble.members[member].model.eval()
        for images, index, messages in paced(loader, ensemble.threads, units=lambda batch: len(batch[0])):
            rows = torch.tensor(which, device=device).unsqueeze(1)
            logits[rows, index.to(device).unsqueeze(0)] = ensemble.raw_logits(images.to(device), which)
            for i, message in zip(index.tolist(), messages, strict=True):
                errors[i] = errors[i] or message
    probs = ensemble.combine(ensemble.calibrated(logits))  # stays on the device: one transfer at the end
    out = probs.double().cpu().numpy()
    out[[bool(e) for e in errors]] = np.nan
    return out, errors


def output_format(output: str, fmt: str | None) -> str:
    chosen = fmt or Path(output).suffix.lower().lstrip(".")
    if chosen not in FORMATS:
        raise ConfigError(
            f"cannot tell the output format of {output!r}: name it .csv or .json, or set format=csv|json"
        )
    return chosen


def write_predictions(rows: list[dict[str, Any]], output: Path, fmt: str, meta: dict[str, Any]) -> None:
    """CSV (one row per input) or JSON ({meta..., predictions: [...]}), written atomically."""
    if fmt == "csv":
        write_csv(output, COLUMNS, rows)
        return
    text = json.dumps({**meta, "predictions": rows}, indent=2)
    atomic_write(output, lambda f: f.write(text.encode()))


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Score every input video and image and write `cfg.output`; returns the rows written."""
    cfg = _checked(cfg)
    fmt = output_format(cfg.output, cfg.format)
    output = Path(cfg.output).expanduser()
    # Checked now, not after inference: a long run must not end in a write that was bound to fail.
    require_writable(output.parent, "the output folder", "pass output=<a path in a writable folder>")
    checkpoints = checkpoint_list(cfg.checkpoint)
    paths = list_inputs(cfg.input)  # a wrong path fails before any checkpoint is read
    hw = HardwareManager(**cfg.hardware)
    precision = scoring_precision(hw.precision(cfg.amp), cfg.amp)
    ensemble, loaded = load_ensemble(
        checkpoints, hw.device, precision, cfg.tta, cfg.ensemble.mean, cfg.calibrated
    )
    workers = default_num_workers() if cfg.num_workers < 0 else cfg.num_workers
    hw.configure(workers, unit="batch", per="image")  # the first image batches time the thread count
    ensemble.threads = hw.threads
    kinds = [video_kind(p) for p in paths]
    clip = clip_length_of(loaded)
    names = ", ".join(str(d.path) for d in loaded)
    log.info("predicting %d inputs (%d videos) with %s (%s, %s)", len(paths), kinds.count("video"), names,
             hw.device, precision.name)  # fmt: skip
    by_path: dict[int, dict[str, Any]] = {}
    images = [i for i, k in enumerate(kinds) if k == "image"]
    if images and clip > 1:
        for i in images:
            by_path[i] = image_row(paths[i], None, CLIP_MODEL_IMAGE.format(frames=clip), cfg.threshold)
    elif images:
        probs, errors = predict_images(
            ensemble, [paths[i] for i in images], hw.device, cfg.batch_size, workers
        )
        for i, prob, error in zip(images, probs, errors, strict=True):
            by_path[i] = image_row(paths[i], float(prob), error, cfg.threshold)
    for i in (i for i, k in enumerate(kinds) if k == "not_video"):
        by_path[i] = {
            **image_row(paths[i], None, NOT_A_VIDEO, cfg.threshold),
            "frames_used": 0,
            "faces_found": 0,
        }
    videos = [i for i, k in enumerate(kinds) if k == "video"]
    if videos:
        found = video_rows(
            [paths[i] for i in videos], cfg, loaded[0], ensemble, clip, hw.device, workers, output
        )
        by_path.update(zip(videos, found, strict=True))
    rows = [by_path[i] for i in range(len(paths))]
    temps = [d.temperature if cfg.calibrated else None for d in loaded]  # None: raw probabilities
    meta = {
        "checkpoint": str(loaded[0].path) if len(loaded) == 1 else [str(d.path) for d in loaded],
        "threshold": cfg.threshold,
        "preprocess": loaded[0].model.preprocess
        if len(loaded) == 1
        else [d.model.preprocess for d in loaded],
        "tta": cfg.tta,
        "temperature": temps[0] if len(temps) == 1 else temps,
        "aggregation": dict(cfg.aggregation),
        "no_face_prob": cfg.no_face_prob,
    }
    if len(loaded) > 1:
        meta["ensemble_mean"] = cfg.ensemble.mean
    write_predictions(rows, output, fmt, meta)
    _report(rows, cfg)
    return rows


def _report(rows: list[dict[str, Any]], cfg: DictConfig) -> None:
    """The summary lines; a single input also gets its answer printed as one line on stdout."""
    bad = [row for row in rows if row["status"] == "error"]
    fake = sum(row["pred"] == "fake" for row in rows)
    scored = sum(row["pred"] is not None for row in rows)
    log.info(
        "wrote %d predictions to %s: %d fake, %d real at threshold %g",
        len(rows) - len(bad), cfg.output, fake, scored - fake, cfg.threshold,
    )  # fmt: skip
    for row in rows:
        if row["status"] == "no_face":
            log.warning("  %s: no face found (prob %s)", row["path"], row["prob"])
    if bad:
        log.warning("%d file(s) could not be read (listed in %s):", len(bad), cfg.output)
        for row in bad:
            log.warning("  %s: %s", row["path"], row["error"])
    if len(rows) == 1:
        row = rows[0]
        prob = "" if row["prob"] is None else f"{row['prob']:.4f} "
        print(f"{row['path']}: {prob}{row['pred'] or ''} ({row['status']})".replace("  ", " "), flush=True)


def _checked(cfg: DictConfig) -> DictConfig:
    """Merge onto the schema (Python callers may pass a dict) and check the values a type cannot."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(PredictConfig), cfg)
    except Exception as e:  # omegaconf raises several types; all mean "this config is malformed"
        raise ConfigError(f"invalid predict config: {e}") from None
    for key, example in (
        ("checkpoint", "<run directory or .pt file>"),
        ("input", "<video, image, folder or list.txt>"),
    ):
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(f"{key} is not set: pass {key}={example}")
    if not 0.0 <= cfg.threshold <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1] (got {cfg.threshold})")
    if cfg.batch_size <= 0:
        raise ConfigError(f"batch_size must be > 0 (got {cfg.batch_size})")
    for key, choices in (
        ("amp", AMP),
        ("tta", TTA),
        ("ensemble.mean", ENSEMBLE_MEANS),
        ("aggregation.faces", FACE_AGGREGATION),
        ("aggregation.frames", VIDEO_AGGREGATION),
    ):
        if OmegaConf.select(cfg, key) not in choices:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is not one of {', '.join(choices)}")
    if cfg.aggregation.k <= 0:
        raise ConfigError(f"aggregation.k must be > 0 (got {cfg.aggregation.k})")
    if cfg.no_face_prob is not None and not 0.0 <= cfg.no_face_prob <= 1.0:
        raise ConfigError(f"no_face_prob must be in [0, 1] or null (got {cfg.no_face_prob})")
    return cfg
