"""Probability of fake for new videos and images: what `python predict.py checkpoint=... input=...` runs.

The inputs (`sources`: a file, a folder, a list file or a manifest, read lazily) are counted once (`plan`:
each input once, this shard's slice, less those with a row already in the output), then scored a window at a
time in input order (`windows`: images through the ensemble, videos through decode -> detect -> score) and each
row is committed to the output as it comes (`store`: .csv/.jsonl appended, .parquet/.json written at the end;
resume, shards and the merged output). Memory stays flat: no list of rows is ever kept. A file that cannot be
read is a row with an error, never the end of the run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from deepfake.choices import (
    AMP,
    ENSEMBLE_MEANS,
    EXPLAIN_METHODS,
    FACE_AGGREGATION,
    PREDICTION_FORMATS,
    PROGRESS,
    TTA,
    VIDEO_AGGREGATION,
)
from deepfake.config import PredictConfig
from deepfake.data.workers import default_num_workers
from deepfake.errors import ConfigError, UserError
from deepfake.evaluation.ensemble import Ensemble, checkpoint_list, clip_length_of, load_ensemble
from deepfake.evaluation.inference import LoadedDetector, scoring_precision
from deepfake.evaluation.threshold import checked_val_threshold, reported_threshold
from deepfake.prediction.explanations import Explainer
from deepfake.prediction.fingerprint import fingerprint, run_settings
from deepfake.prediction.images import predict_images, predict_paths
from deepfake.prediction.plan import Plan, Selection
from deepfake.prediction.report import Summary, answer, plan_line
from deepfake.prediction.rows import SETTINGS, columns, typed
from deepfake.prediction.run import VideoRows
from deepfake.prediction.settings import crop_settings
from deepfake.prediction.sources import list_inputs, open_source
from deepfake.prediction.store import Layout, OutputStore
from deepfake.prediction.threshold import check_threshold, resolve_threshold, threshold_source
from deepfake.prediction.windows import Scoring, scored
from deepfake.runs.fileio import require_writable
from deepfake.runs.rowfiles import read_document
from deepfake.system.console import ItemProgress
from deepfake.system.hardware import HardwareManager

__all__ = ["Predictions", "checked_config", "list_inputs", "predict", "predict_images", "predict_paths"]

log = logging.getLogger("deepfake")

FORMATS = PREDICTION_FORMATS


def output_format(output: str, fmt: str | None) -> str:
    chosen = fmt or Path(output).suffix.lower().lstrip(".")
    if chosen not in FORMATS:
        raise ConfigError(
            f"cannot tell the output format of {output!r}: name it .csv, .jsonl, .parquet or .json, "
            "or set format=csv|jsonl|parquet|json"
        )
    if chosen == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401  (checked now: a long run must not end in a missing package)
        except ImportError:
            raise UserError(
                "output=.parquet needs pyarrow: pip install 'deepfake[parquet]', or write .csv, .jsonl or .json"
            ) from None
    return chosen


class Predictions(Sequence):
    """The rows a run left in its output (the merged file, or this shard's part while others still run), read
    back from disk on demand, in order; `plan` and `summary` describe the run."""

    def __init__(self, path: Path, kind: str, plan: Plan, summary: Summary, missing: int) -> None:
        self.path, self.kind, self.plan, self.summary, self.missing = path, kind, plan, summary, missing
        self._cached: list[dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        _, rows = read_document(self.path, self.kind)
        return (typed(row) for row in rows)

    def _rows(self) -> list[dict[str, Any]]:
        if self._cached is None:
            self._cached = list(iter(self))  # not list(self): that asks __len__ first
        return self._cached

    def __len__(self) -> int:
        return len(self._rows())

    def __getitem__(self, index: Any) -> Any:
        return self._rows()[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self._rows() == list(other)

    __hash__ = None  # type: ignore[assignment]


def _meta(
    cfg: DictConfig, loaded: Sequence[LoadedDetector], explainer: Explainer | None, given: Any
) -> dict[str, Any]:
    """What a JSON document (and a Parquet file's metadata) says about the run besides its rows."""
    temps = [d.temperature if cfg.calibrated else None for d in loaded]  # None: raw probabilities
    one = len(loaded) == 1
    meta = {
        "checkpoint": str(loaded[0].path) if one else [str(d.path) for d in loaded],
        "threshold": cfg.threshold,
        "threshold_source": threshold_source(given),
        "preprocess": loaded[0].model.preprocess if one else [d.model.preprocess for d in loaded],
        "tta": cfg.tta,
        "temperature": temps[0] if one else temps,
        "aggregation": OmegaConf.to_container(cfg.aggregation, resolve=True),
        "no_face_prob": cfg.no_face_prob,
    }
    if one:  # evaluate's acc_at_val_threshold, for `python -m deepfake.evaluation.from_predictions`
        d = loaded[0]
        meta["val_threshold"] = reported_threshold(
            checked_val_threshold(d.checkpoint.get("metrics")), temps[0] if temps[0] is not None else 1.0
        )
    else:
        meta["ensemble_mean"] = cfg.ensemble.mean
    if explainer is not None:
        meta["explain"] = {"method": cfg.explain.method, "folder": str(explainer.folder)}
    return meta


def predict(cfg: DictConfig | Mapping[str, Any]) -> Predictions:
    """Score every input of this shard that has no row yet, committing each row to `cfg.output` as it comes;
    write the merged output once every input has a row. Returns the output's rows (read on demand)."""
    cfg = checked_config(cfg)
    fmt = output_format(cfg.output, cfg.format)
    output = Path(cfg.output).expanduser()
    # Checked now, not after inference: a long run must not end in a write that was bound to fail.
    _refuse_folders(output, cfg.per_frame)
    require_writable(output.parent, "the output folder", "pass output=<a path in a writable folder>")
    checkpoints = checkpoint_list(cfg.checkpoint)
    source = open_source(cfg.input)  # a wrong path fails before any checkpoint is read
    hw = HardwareManager(**cfg.hardware)
    precision = scoring_precision(hw.precision(cfg.amp), cfg.amp)
    ensemble, loaded = load_ensemble(
        checkpoints, hw.device, precision, cfg.tta, cfg.ensemble.mean, cfg.calibrated
    )
    given = cfg.threshold
    cfg.threshold = resolve_threshold(given, loaded, cfg.calibrated, cfg.tta)
    workers = default_num_workers() if cfg.num_workers < 0 else cfg.num_workers
    hw.configure(workers, unit="batch", per="image")  # the first image batches time the thread count
    ensemble.threads = hw.threads
    clip = clip_length_of(loaded)
    explainer = _explainer(cfg, ensemble, output, hw.device, clip)  # grad-cam checked before any scoring
    crop = crop_settings(loaded[0], cfg.extraction)
    cols = columns(source.carried)
    settings = run_settings(cfg, loaded, crop, precision, cfg.threshold, cols)
    key = fingerprint(settings)
    layout = Layout(output, fmt, cfg.shard.index, cfg.shard.count)
    store = OutputStore(layout, cols, settings, key, _meta(cfg, loaded, explainer, given))
    if cfg.overwrite:
        store.clear()
    done = store.open()
    selection = Selection(source, cfg.shard.index, cfg.shard.count)
    plan = selection.plan(done)
    log.info(plan_line(plan, source.describe(), cfg.shard.index, cfg.shard.count))
    names = ", ".join(str(d.path) for d in loaded)
    log.info("scoring with %s (%s, %s); settings %s", names, hw.device, precision.name, key)
    scoring = Scoring(
        ensemble, hw.device, cfg.batch_size, workers, cfg.threshold, clip,
        videos=lambda: VideoRows(cfg, loaded[0], crop, ensemble, clip, hw.device, workers, output, bool(done),
                                 explainer),
        explainer=explainer,
    )  # fmt: skip
    t0 = time.perf_counter()
    summary = Summary()
    with (
        scoring,
        store.writer(cfg.per_frame) as sink,
        ItemProgress(plan.todo, "inputs", None, cfg.progress, cfg.every_n_seconds) as progress,
    ):
        for entry, result in scored(selection.todo(done), scoring):
            result.row = {**result.row, **entry.carried, SETTINGS: key}
            sink.write(result)
            summary.add(result.row, result.seconds, result.frames_decoded)
            progress.update()
    missing = store.assemble(selection)
    for line in summary.lines(plan, time.perf_counter() - t0, str(output), cfg.threshold):
        log.info(line)
    return _finish(layout, plan, summary, missing)


def _explainer(
    cfg: DictConfig, ensemble: Ensemble, output: Path, device: torch.device, clip: int
) -> Explainer | None:
    """`explain=`'s explainer over the ensemble's members (grad-cam and the layers checked now), or None."""
    if cfg.explain.method == "none":
        return None
    return Explainer(
        ensemble.members, cfg.explain.method, cfg.explain.layer, cfg.tta, output, cfg.input, device,
        min(cfg.batch_size, 32), clip,
    )  # fmt: skip


def _finish(layout: Layout, plan: Plan, summary: Summary, missing: int) -> Predictions:
    """The rows left on disk: the merged output when every input has a row, else this shard's part."""
    output = layout.output
    complete = missing == 0 and (output.is_file() or layout.streams)
    if not complete:
        log.info("%d input(s) have no row yet (other shards?); the merged %s is written by the last shard to "
                 "finish, or by a rerun of any shard after they all have", missing, output)  # fmt: skip
    found = Predictions(output if complete else layout.journal, layout.fmt if complete else layout.kind, plan,
                        summary, missing)  # fmt: skip
    if plan.inputs == 1 and complete:
        print(answer(found[0]), flush=True)
    return found


def _refuse_folders(output: Path, per_frame: bool) -> None:
    """The output (and per_frame's file beside it) must be files: a folder there fails only at the first
    write, after inference."""
    frames = Layout(output, "csv").frames_output
    for path, what in ((output, "output"), (frames, "per_frame's file") if per_frame else (None, "")):
        if path is not None and path.is_dir():
            raise UserError(
                f"{what} {path} is a folder, not a file: pass output=<file>.csv (or .jsonl, .json, .parquet), "
                f"e.g. output={output / 'preds.csv'}"
            )


def checked_config(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
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
    check_threshold(cfg.threshold)
    if cfg.batch_size <= 0:
        raise ConfigError(f"batch_size must be > 0 (got {cfg.batch_size})")
    if not 0 <= cfg.shard.index < cfg.shard.count:
        raise ConfigError(f"shard.index={cfg.shard.index} must be in [0, shard.count={cfg.shard.count})")
    if cfg.overwrite and cfg.shard.count > 1:
        raise ConfigError(
            "overwrite=true with shard.count > 1 would delete the other shards' rows while they write them: "
            f"delete {cfg.output} and {cfg.output}.parts/ first, or pass another output="
        )
    for key, choices in (
        ("progress", PROGRESS),
        ("amp", AMP),
        ("tta", TTA),
        ("ensemble.mean", ENSEMBLE_MEANS),
        ("aggregation.faces", FACE_AGGREGATION),
        ("aggregation.frames", VIDEO_AGGREGATION),
        ("explain.method", EXPLAIN_METHODS),
    ):
        if OmegaConf.select(cfg, key) not in choices:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is not one of {', '.join(choices)}")
    if cfg.aggregation.k <= 0:
        raise ConfigError(f"aggregation.k must be > 0 (got {cfg.aggregation.k})")
    if cfg.no_face_prob is not None and not 0.0 <= cfg.no_face_prob <= 1.0:
        raise ConfigError(f"no_face_prob must be in [0, 1] or null (got {cfg.no_face_prob})")
    timeout = cfg.extraction.timeout_s
    if timeout is not None and not 0 < timeout < math.inf:  # NaN fails both comparisons
        raise ConfigError(f"extraction.timeout_s must be a number of seconds > 0 (got {timeout})")
    return cfg
