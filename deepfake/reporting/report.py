"""report.html: the one page a reviewer reads, self-contained (figures inline, no script, no network).

Written at the end of training (`<run>/report.html`, with `MODEL_CARD.md` beside it), by evaluate.py
(`<eval.out_dir>/report.html`, every set it scored) and on demand: `python -m deepfake.report <run dir>`. The
page is built from the files the run and its evaluations wrote (metrics.json, hardware.json,
model_summary.json, the checkpoint's small entries, `plots/`, `eval/<set>/`), so it can be rebuilt at any time,
e.g. after `evaluate.py perturb=...` (`<set>/robustness.png`, metrics.json's `robustness`, the example faces'
`robustness_examples/grid.png`) or `eval.explain=...` (`<set>/explain.png`, `embeddings.png`, metrics.json's
`faithfulness`) added a set's robustness grid or explanations. Sections, in order: the verdict table, the run, curves, per-method AUC, robustness, explanations, an
ensemble's members. Jinja2 renders `templates/report.html.j2` with autoescaping; figures are PNG data URIs.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepfake.errors import UserError
from deepfake.exits import run_reporting_errors
from deepfake.reporting.facts import (
    NOT_RECORDED,
    NOT_RUN,
    TABLE_FPR,
    interval,
    is_number,
    num,
    run_rows,
    text,
    validation_row,
    verdict_row,
)
from deepfake.reporting.render import render
from deepfake.reporting.run_facts import RunFacts, SetFacts, dig, read_checkpoint, read_run, read_sets
from deepfake.runs.fileio import atomic_write
from deepfake.version import __version__

log = logging.getLogger("deepfake")

REPORT_FILE = "report.html"
ROBUSTNESS_ROWS = 60  # rows of robustness.csv shown as a table (the PNG shows the whole grid)


def data_uri(path: Path | None) -> str | None:
    """A PNG file as a data URI; None when there is no such file."""
    if path is None or not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure_uri(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def csv_rows(path: Path | None, limit: int = ROBUSTNESS_ROWS) -> list[list[str]]:
    """The first `limit` rows of a CSV file (header first); [] when absent or unreadable."""
    if path is None:
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [row for _, row in zip(range(limit + 1), csv.reader(f), strict=False)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        log.warning("report: %s cannot be read (%s)", path, e)
        return []


def robustness_section(s: SetFacts) -> dict[str, Any] | None:
    """A set's robustness grid (robustness.png), the example faces under each setting, and the summary metrics.json
    keeps (clean, each type's mean over its levels, the mean of every setting); None when it was not run. A set
    scored before the summary existed shows robustness.csv's rows instead."""
    summary = s.metrics.get("robustness")
    summary = summary if isinstance(summary, dict) else {}
    figure, examples = data_uri(s.file("robustness.png")), data_uri(s.file("robustness_examples/grid.png"))
    table = robustness_rows(summary) if summary else csv_rows(s.file("robustness.csv"))
    if not (figure or examples or table):
        return None
    levels = ", ".join(str(x) for x in summary.get("levels", []) if isinstance(x, int))
    route = {"crops": "on the test crops", "frames": "on the video frames, before face detection"}
    where = route.get(str(summary.get("route")), "")
    return {
        "figure": figure,
        "examples": examples,
        "table": table,
        "note": ", ".join(x for x in (where, f"levels {levels}" if levels else "") if x),
    }


def robustness_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Header, the clean row, one row per perturbation type (mean over its levels), the mean of every setting; the
    drop is from the clean frame AUC."""
    clean = dig(summary, "clean", "frame_auc")

    def row(name: str, aucs: Any) -> list[str]:
        frame = dig(aucs, "frame_auc")
        change = f"{frame - clean:+.4f}" if is_number(frame) and is_number(clean) else NOT_RUN
        return [name, num(frame), num(dig(aucs, "video_auc")), change]

    per_type = summary.get("per_type") if isinstance(summary.get("per_type"), dict) else {}
    return [
        ["perturbation", "frame AUC", "video AUC", "frame AUC change from clean"],
        row("clean", summary.get("clean")),
        *(row(f"{name} (mean over levels)", aucs) for name, aucs in per_type.items()),
        row("every perturbed setting (mean)", summary.get("mean")),
    ]


def explanation_section(s: SetFacts) -> dict[str, Any] | None:
    """A set's explanation grid (explain.png), its embeddings' t-SNE (embeddings.png) and the faithfulness scores
    against the set's blend masks; None when none was run."""
    scores = s.metrics.get("faithfulness")
    scores = scores if isinstance(scores, dict) else {}
    grid, embeddings = data_uri(s.file("explain.png")), data_uri(s.file("embeddings.png"))
    if not (grid or embeddings or scores):
        return None
    faithfulness = [
        (label, num(scores.get(key)))
        for label, key in (
            ("pointing game (share of heat maxima inside the mask)", "pointing_game"),
            ("heat in mask (share of the heat inside the mask)", "heat_in_mask"),
            ("mask area (chance level of both)", "mask_area"),
        )
    ]
    if scores:
        faithfulness.insert(0, ("method, fakes with a mask", f"{text(scores.get('method'))}, "
                                                               f"{text(scores.get('fakes_with_mask'))}"))  # fmt: skip
    return {"grid": grid, "embeddings": embeddings, "faithfulness": faithfulness if scores else []}


def curves(run: RunFacts) -> list[dict[str, str]]:
    """Training and validation curves from `<run>/plots/` (written by the run's end or `python -m deepfake.plot`)."""
    if run.run_dir is None:
        return []
    plots = run.run_dir / "plots"
    named = (
        ("loss.png", "training and validation loss"),
        ("val_metrics.png", "validation metrics per epoch"),
        ("roc.png", "validation ROC, best epoch"),
        ("reliability.png", "validation reliability, best.pt"),
    )
    return [{"title": title, "uri": uri} for name, title in named if (uri := data_uri(plots / name))]


def set_section(s: SetFacts) -> dict[str, Any]:
    """One set's figures and tables for the curves, methods, robustness and explanation sections."""
    from deepfake.reporting.figures import method_auc_figure  # matplotlib: imported with the first report

    methods = data_uri(s.file("methods.png"))  # written with the set; drawn here for older evaluations
    per_method = s.metrics.get("per_method")
    if methods is None and isinstance(per_method, dict):
        bars = method_auc_figure(per_method, f"AUC per method: {s.name}")
        methods = figure_uri(bars) if bars is not None else None
    point = s.metrics.get("operating_point") or {}
    return {
        "name": s.name,
        "figures": [
            {"title": f"{kind}: {s.name}", "uri": uri}
            for kind, file in (
                ("ROC", "roc.png"),
                ("precision-recall", "pr.png"),
                ("reliability", "reliability.png"),
            )
            if (uri := data_uri(s.file(file)))
        ],
        "methods": methods,
        "robustness": robustness_section(s),
        "explanations": explanation_section(s),
        "at_threshold": {
            "threshold": num(point.get("threshold")),
            "target": text(point.get("target_fpr"), NOT_RUN),
            "fpr": num(point.get("fpr")),
            "tpr": num(point.get("tpr")),
            "val_fpr": num(dig(point, "validation", "fpr")),
        }
        if point
        else None,
    }


def ensemble_table(sets: Sequence[SetFacts]) -> dict[str, Any] | None:
    """Members side by side: one column per checkpoint (and the ensemble), one row per fact or metric."""
    scored = [s for s in sets if isinstance(s.metrics.get("members"), list) and s.metrics["members"]]
    if not scored:
        return None
    members = scored[0].metrics["members"]
    header = [f"#{k + 1}" for k in range(len(members))] + ["ensemble"]
    checkpoints = [text(dig(m, "checkpoint")) for m in members]
    facts = [read_checkpoint(Path(c)) if c != NOT_RECORDED and Path(c).is_file() else {} for c in checkpoints]
    rows = [
        ("checkpoint", [*checkpoints, f"mean of {text(dig(scored[0].metrics, 'ensemble', 'mean'))}"]),
        ("architecture", [*(text(f.get("architecture")) for f in facts), ""]),
        ("input size", [*(text(dig(m, "img_size")) for m in members), ""]),
        ("temperature", [*(num(dig(m, "calibration", "temperature"), 4, "none") for m in members), ""]),
    ]
    for s in scored:
        entries = [*s.metrics["members"], s.metrics]
        rows += [
            (f"{s.name}: AUC", [num(dig(e, "frame", "auc")) for e in entries]),
            (f"{s.name}: AUC CI", [interval(dig(e, "frame", "auc_ci")) for e in entries]),
            (f"{s.name}: TPR@1% FPR", [num(dig(e, "frame", "tpr_at_fpr", TABLE_FPR)) for e in entries]),
            (f"{s.name}: video AUC", [num(dig(e, "video", "auc")) for e in entries]),
            (f"{s.name}: ECE calibrated", [num(dig(e, "calibration", "calibrated", "ece")) for e in entries]),
        ]
    return {"header": header, "rows": rows}


def context(run: RunFacts, sets: Sequence[SetFacts], title: str) -> dict[str, Any]:
    """Everything the template shows, as text and data URIs."""
    checkpoints = next(
        (s.metrics["checkpoints"] for s in sets if isinstance(s.metrics.get("checkpoints"), list)), None
    )
    return {
        "title": title,
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "checkpoints": [str(c) for c in checkpoints] if checkpoints else [text(run.checkpoint_path)],
        "rows": [verdict_row(s) for s in sets],
        "validation": validation_row(run),
        "run": run_rows(run),
        "curves": curves(run),
        "sets": [set_section(s) for s in sets],
        "ensemble": ensemble_table(sets),
        "NOT_RUN": NOT_RUN,
    }


def write_report(path: Path, run: RunFacts, sets: Sequence[SetFacts], title: str) -> Path:
    html = render("report.html.j2", context(run, sets, title))
    atomic_write(path, lambda f: f.write(html.encode("utf-8")))
    return path


def scored_with(sets: Sequence[SetFacts], checkpoint: Path | None) -> list[SetFacts]:
    """The sets whose metrics.json says they were scored with `checkpoint` alone (not in an ensemble): the same
    file, or the same `checkpoints/<name>` of a run folder that has since moved (a restored backup, a copy)."""
    if checkpoint is None:
        return []
    return [
        s
        for s in sets
        if isinstance(s.metrics.get("checkpoint"), str) and _same(s.metrics["checkpoint"], checkpoint)
    ]


def _same(path: str, target: Path) -> bool:
    recorded = Path(path)
    try:
        if recorded.resolve() == target.resolve():
            return True
    except (OSError, RuntimeError, ValueError):
        return False
    return recorded.parts[-2:] == target.parts[-2:] and target.parent.name == "checkpoints"


def report_run(run_dir: Path, eval_dir: Path | None = None, sets: Sequence[str] | None = None) -> list[Path]:
    """`<run>/report.html` (the named sets of `eval_dir`, default `<run>/eval`; without names, every set there
    scored with the run's best.pt) and `<run>/MODEL_CARD.md` (every set there scored with best.pt)."""
    from deepfake.reporting.model_card import write_model_card

    run = read_run(run_dir)
    every = scored_with(read_sets(eval_dir or run_dir / "eval"), run.checkpoint_path)
    shown = every if sets is None else read_sets(eval_dir or run_dir / "eval", sets)
    return [
        write_report(run_dir / REPORT_FILE, run, shown, f"Detector report: run {run.name}"),
        write_model_card(run_dir, run, every),
    ]


def report_evaluation(out_dir: Path, sets: Sequence[str], checkpoints: Sequence[Path]) -> list[Path]:
    """evaluate.py's `<out_dir>/report.html`: the sets it scored, and the run of its (first) checkpoint. A run's
    best.pt scored alone into the run's own `eval/` also refreshes the run's MODEL_CARD.md (every set scored
    with it)."""
    from deepfake.reporting.model_card import write_model_card

    first = Path(checkpoints[0])
    # <run>/checkpoints/x.pt and <run>/export/x.safetensors belong to <run>; a loose file to its folder
    run_dir = first.parent.parent if first.parent.name in ("checkpoints", "export") else first.parent
    run = read_run(run_dir, first)
    names = ", ".join(Path(p).name for p in checkpoints)
    title = f"Evaluation report: {'ensemble of ' if len(checkpoints) > 1 else ''}{names}"
    written = [write_report(out_dir / REPORT_FILE, run, read_sets(out_dir, sets), title)]
    own = run_dir / "eval"
    best = first.parent.name == "checkpoints" and first.name == "best.pt"
    if len(checkpoints) == 1 and best and out_dir.resolve() == own.resolve():
        written.append(write_model_card(run_dir, run, scored_with(read_sets(own), first)))
    return written


def write_end_of_run(run_dir: Path, eval_dir: Path | None, sets: Sequence[str]) -> None:
    """The end of training: a failure is a warning with the command to retry; the run itself succeeded."""
    try:
        paths = report_run(run_dir, eval_dir, sets)
        log.info("report: %s", ", ".join(str(p.relative_to(run_dir)) for p in paths))
    except Exception as e:
        log.warning(
            "could not write the report (%s: %s); retry with: python -m deepfake.report %s",
            type(e).__name__, e, run_dir,
        )  # fmt: skip


def write_after_evaluation(out_dir: Path, sets: Sequence[str], checkpoints: Sequence[Path]) -> None:
    """evaluate.py's end: the results are on disk already, so a report failure is a warning."""
    try:
        for path in report_evaluation(out_dir, sets, checkpoints):
            log.info("wrote %s", path)
    except Exception as e:
        log.warning("could not write the report in %s (%s: %s)", out_dir, type(e).__name__, e)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deepfake.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (<base_path>/outputs/<date>/<time> or a sweep job)")
    parser.add_argument(
        "--eval-dir", help="the evaluation folder whose sets it shows (default <run dir>/eval)"
    )
    args = parser.parse_args(argv)

    def build() -> list[Path]:
        run_dir = Path(args.run_dir).expanduser()
        if not (run_dir / "metrics.json").is_file() and not (run_dir / "checkpoints").is_dir():
            raise UserError(f"{run_dir} is not a run directory (no metrics.json or checkpoints/); pass one")
        return report_run(run_dir, Path(args.eval_dir).expanduser() if args.eval_dir else None)

    for path in run_reporting_errors(build):
        print(path)


if __name__ == "__main__":
    main()
