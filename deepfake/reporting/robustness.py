"""What a robustness evaluation leaves in `<set>/`: robustness.csv, robustness_predictions.csv.gz, robustness.png
(AUC per perturbation type against level beside a type x level heatmap), the printed table, and with
`perturb.examples=N` the example faces under every setting (`robustness_examples/`, with `grid.png`).

The figures are drawn by `reporting.robustness_figures`, imported where they are due (matplotlib).
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich import box
from rich.console import Console
from rich.table import Table

from deepfake.config.checks import check_evaluate_perturb
from deepfake.data.module import DataModule
from deepfake.data.perturbed import PerturbedCrops, require_videos
from deepfake.data.samples import Sample
from deepfake.errors import UserError
from deepfake.evaluation.ensemble import Ensemble
from deepfake.evaluation.robustness import COLUMNS, setting_row, summarize
from deepfake.evaluation.scoring import reported_probs, set_logits
from deepfake.extraction.settings import extracted_sets
from deepfake.perturbations.protocol import CLEAN, Setting, settings
from deepfake.runs.fileio import atomic_write

log = logging.getLogger("deepfake")
Row = Mapping[str, object]  # a robustness.csv row: type, level, param, frame_auc, video_auc, ap, eer, n


def safe_name(text: str) -> str:
    """A file-name-safe version of a face's name: letters, digits, '.', '_' and '-' only, never '..'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "face"
    return cleaned[:80]


def save_image(image: np.ndarray, path: Path) -> Path:
    """A uint8 (H, W, 3) image as a lossless PNG, written atomically."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def write_rows(path: Path, rows: Sequence[Row]) -> Path:
    """robustness.csv: one row per setting, the clean one first; floats as Python writes them (exact)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    atomic_write(path, lambda f: f.write(buffer.getvalue().encode()))
    return path


def write_predictions(path: Path, scored: Sequence[tuple[Setting, Sequence[Sample], np.ndarray]]) -> Path:
    """robustness_predictions.csv.gz: every setting's probabilities (setting, path, video, label, prob), so each
    row of robustness.csv can be recomputed from a file, as metrics.json can from predictions.csv. Gzipped:
    35 settings of FF++'s test crops are 800k rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("setting", "path", "video", "label", "prob"))
    for setting, samples, probs in scored:
        for s, p in zip(samples, probs, strict=True):
            writer.writerow((setting.name, s.path, s.video, s.label, float(p)))
    atomic_write(path, lambda f: f.write(gzip.compress(buffer.getvalue().encode(), mtime=0)))
    return path


def save_examples(
    folder: Path, frames: Sequence[Sample], grid: Sequence[Setting], seed: int, count: int, title: str
) -> Path:
    """The first `count` faces under every setting of `grid`, each a lossless PNG at its own size, as
    `<folder>/<face>/clean.png` and `<TYPE>-<level>.png`, plus `<folder>/grid.png`; returns the grid's path."""
    from deepfake.reporting.figures import save_png  # matplotlib: only when figures are due
    from deepfake.reporting.robustness_figures import examples_figure

    count = min(count, len(frames))
    crops = {s: PerturbedCrops(frames, s, seed, size=0) for s in [Setting(CLEAN, 0), *grid]}
    faces, names = [], []
    for i in range(count):
        name = f"{i:03d}_{safe_name(frames[i].video)}_{safe_name(Path(frames[i].path).stem)}"
        face = {s.name: c.perturbed(i) for s, c in crops.items()}
        for key, image in face.items():
            save_image(image, folder / name / f"{key}.png")
        faces.append({k: _tile(v) for k, v in face.items()})
        names.append(name)
    path = folder / "grid.png"
    if faces:
        save_png(examples_figure(faces, names, title), path)
    return path


def _tile(image: np.ndarray) -> np.ndarray:
    """A face shrunk (antialiased) to at most TILE pixels on its longer side, for the grid only."""
    h, w = image.shape[:2]
    from deepfake.reporting.robustness_figures import TILE

    scale = TILE / max(h, w)
    if scale >= 1:
        return image
    small = Image.fromarray(image).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR
    )
    return np.asarray(small)


def write_robustness(
    out: Path,
    name: str,
    scored: Sequence[tuple[Setting, Sequence[Sample], np.ndarray]],
    eval_cfg: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows, robustness.csv, robustness_predictions.csv.gz and robustness.png of one set; returns the rows
    and their summary (`evaluation.robustness.summarize`)."""
    from deepfake.reporting.figures import save_png  # matplotlib: only when figures are due
    from deepfake.reporting.robustness_figures import robustness_figure

    rows = [setting_row(s, samples, probs, eval_cfg) for s, samples, probs in scored]
    summary = summarize(rows)
    write_rows(out / "robustness.csv", rows)
    write_predictions(out / "robustness_predictions.csv.gz", scored)
    metric = "video_auc" if _has_videos(scored[0][1]) else "frame_auc"
    save_png(
        robustness_figure(rows, f"Robustness: {name} ({metric.replace('_auc', ' AUC')})", metric),
        out / "robustness.png",
    )
    return rows, summary


def _has_videos(samples: Sequence[Sample]) -> bool:
    return len({s.video for s in samples}) < len(samples)


def robustness_table(name: str, summary: Mapping[str, Any], rows: Sequence[Row]) -> str:
    """Plain text: the video AUC of each type (rows) at each level (columns) and its mean, then the means."""
    levels = summary["levels"]
    table = Table(title=f"Robustness of {name}: video AUC per level", box=box.MARKDOWN)
    for column in ("type", *(f"L{lv}" for lv in levels), "mean", "frame mean"):
        table.add_column(column, justify="left" if column == "type" else "right")
    by_key = {(r["type"], int(r["level"])): r for r in rows}  # type: ignore[call-overload]
    clean = summary["clean"]
    if clean is not None:
        table.add_row("clean", *[""] * len(levels), _fmt(clean["video_auc"]), _fmt(clean["frame_auc"]))
    for kind, means in summary["per_type"].items():
        cells = [_fmt(by_key[(kind, lv)]["video_auc"]) if (kind, lv) in by_key else "" for lv in levels]
        table.add_row(kind, *cells, _fmt(means["video_auc"]), _fmt(means["frame_auc"]))
    table.add_row(
        "all", *[""] * len(levels), _fmt(summary["mean"]["video_auc"]), _fmt(summary["mean"]["frame_auc"])
    )
    console = Console(file=io.StringIO(), width=160, color_system=None, force_terminal=False)
    console.print(table)
    return console.file.getvalue().rstrip()


def _fmt(x: object) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.4f}"  # type: ignore[arg-type]


Scorer = Callable[[Setting], np.ndarray]  # a setting -> the set's probabilities under it, in sample order


def robustness_of_set(
    name: str,
    samples: Sequence[Sample],
    frames: Sequence[Sample],
    clean_probs: np.ndarray,
    score: Scorer,
    perturb: Mapping[str, Any],
    eval_cfg: Mapping[str, Any],
    out: Path,
) -> dict[str, Any]:
    """Score one set under every setting of `perturb.types` x `perturb.levels` (the crop route), write its
    files, print its table; returns what metrics.json keeps under "robustness". `frames` are the rows the
    crops come from (a clip model's `samples` hold one row per video)."""
    grid = settings(list(perturb["types"]), list(perturb["levels"]))
    if any(s.video for s in grid):
        require_videos(frames, name)
    scored: list[tuple[Setting, Sequence[Sample], np.ndarray]] = [(Setting(CLEAN, 0), samples, clean_probs)]
    for k, s in enumerate(grid):
        t0 = time.perf_counter()
        scored.append((s, samples, score(s)))
        log.info(
            "robustness %s: %s (%d/%d) in %.1f s",
            name,
            s.describe(),
            k + 1,
            len(grid),
            time.perf_counter() - t0,
        )
    if perturb["examples"]:
        save_examples(out / "robustness_examples", frames, grid, int(perturb["seed"]), int(perturb["examples"]),
                      f"{name}: the first faces under each perturbation")  # fmt: skip
    return report_robustness(name, scored, eval_cfg, out, {"route": "crops", "seed": int(perturb["seed"])})


def report_robustness(
    name: str,
    scored: Sequence[tuple[Setting, Sequence[Sample], np.ndarray]],
    eval_cfg: Mapping[str, Any],
    out: Path,
    info: Mapping[str, Any],
) -> dict[str, Any]:
    """Either route's end: the files (`write_robustness`), the printed table, and what metrics.json keeps
    under "robustness" (`info`: the route and its seed or sets, then the summary)."""
    rows, summary = write_robustness(out, name, scored, eval_cfg)
    log.info("\n%s", robustness_table(name, summary, rows))
    return {**info, "csv": "robustness.csv", **summary}


#: (set name, its clean probabilities, its results folder) -> what its metrics.json keeps under "robustness"
RobustnessHook = Callable[[str, np.ndarray, Path], dict[str, Any]]


def robustness_request(perturb: DictConfig) -> dict[str, Any]:
    """evaluate.py's `perturb` group, checked (and `perturb.extracted`'s sets found) before any loading."""
    check_evaluate_perturb(perturb)
    if perturb.extracted:
        extracted_sets(Path(perturb.extracted).expanduser())
    return OmegaConf.to_container(perturb, resolve=True)  # type: ignore[return-value]


def robustness_hook(
    perturb: Mapping[str, Any],
    names: Sequence[str],
    ensemble: Ensemble,
    data: Mapping[int, DataModule],
    device: torch.device,
    eval_cfg: Mapping[str, Any],
    modules_for: Callable[..., dict[int, DataModule]],
) -> RobustnessHook | None:
    """What scores a set under perturbations: its crops perturbed in the loaders (`perturb.types`), or the
    sets extract.py made from perturbed frames (`perturb.extracted`, each loaded by `modules_for([manifest])`);
    None when `perturb` asks for neither."""
    if perturb["extracted"] and len(names) != 1:
        raise UserError(
            f"perturb.extracted compares the extracted sets with one clean set, but {len(names)} test sets are "
            "named: pass only the clean one, data.test_sets=[<clean set's manifest.csv>]"
        )

    def probs_of(modules: Mapping[int, DataModule], name: str, setting: Setting | None = None) -> np.ndarray:
        loaders = {
            size: m.test_dataloader(name, setting, int(perturb["seed"])) for size, m in modules.items()
        }
        samples = next(iter(modules.values())).test_samples[name]
        raw = set_logits(ensemble, loaders, samples, device)
        for loader in loaders.values():
            loader.close()  # one loader per setting: its persistent workers are not kept to the end
        return reported_probs(ensemble, raw, eval_cfg["calibrated"])

    def crops(name: str, clean: np.ndarray, out: Path) -> dict[str, Any]:
        first = next(iter(data.values()))
        frames = first.test_frames[name] if first.clip_frames > 1 else first.test_samples[name]
        score = functools.partial(probs_of, data, name)
        return robustness_of_set(name, first.test_samples[name], frames, clean, score, perturb, eval_cfg, out)

    def extracted(name: str, clean: np.ndarray, out: Path) -> dict[str, Any]:
        scored: list[tuple[Setting, Sequence[Sample], np.ndarray]] = [
            (Setting(CLEAN, 0), next(iter(data.values())).test_samples[name], clean)
        ]
        sets = {}
        for (kind, level), manifest in extracted_sets(Path(perturb["extracted"]).expanduser()):
            if perturb["types"] and (kind not in perturb["types"] or level not in perturb["levels"]):
                continue
            modules = modules_for([str(manifest)])
            (set_name,) = {tuple(m.setup_test_sets()) for m in modules.values()}.pop()
            samples = next(iter(modules.values())).test_samples[set_name]
            scored.append((Setting(kind, level), samples, probs_of(modules, set_name)))
            sets[f"{kind}-{level}"] = str(manifest)
            log.info("robustness %s: %s-%d from %s", name, kind, level, manifest)
        return report_robustness(name, scored, eval_cfg, out, {"route": "frames", "sets": sets})

    if perturb["extracted"]:
        return extracted
    return crops if perturb["types"] else None
