"""The plain-text results tables evaluate.py prints and writes: one row per test set (and per ensemble member),
and each set's per-method rows."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from deepfake.evaluation.metrics import fpr_key
from deepfake.evaluation.scoring import VIDEO_KEYS

TABLE_FPR = 0.01  # the results table's operating-point column: TPR at 1% FPR
TPR_COLUMN = "TPR@1%"


def results_table(reports: Mapping[str, dict]) -> str:
    """One plain-text table of all sets (frame metrics, AUC interval, calibration, video metrics); an
    ensemble's members get a row each (`<set> #k`) above the ensemble's row, and a legend of checkpoints."""
    table = Table(title="Test sets (label 1 = fake)", box=box.MARKDOWN)
    columns = ("set", "images", "videos", "AUC", "AUC CI", "AP", "EER", TPR_COLUMN, "ACC", "bACC", "log loss")
    faithful = any("faithfulness" in r for r in reports.values())  # eval.explain on a set with masks
    explained = ("pointing game", "heat in mask", "mask area") if faithful else ()
    for column in (*columns, "LL raw", "LL cal", "ECE raw", "ECE cal", "video AUC", "video ACC", "video EER",
                   *explained):  # fmt: skip
        table.add_column(column, justify="left" if column == "set" else "right")
    legend: dict[str, str] = {}
    for name, r in reports.items():
        rows = [(f"{name} #{k + 1}", m) for k, m in enumerate(r.get("members", []))]
        legend.update({f"#{k + 1}": m["checkpoint"] for k, m in enumerate(r.get("members", []))})
        for label, entry in [*rows, (f"{name} ensemble" if rows else name, r)]:
            f, v, c = entry["frame"], entry["video"], entry["calibration"]
            table.add_row(
                label,
                str(r["counts"]["images"]),
                str(r["counts"]["videos"]),
                _fmt(f["auc"]),
                _fmt_ci(f["auc_ci"]),
                _fmt(f["ap"]),
                _fmt(f["eer"]),
                _fmt(f.get("tpr_at_fpr", {}).get(fpr_key(TABLE_FPR))),
                *(_fmt(f[k]) for k in ("acc", "balanced_acc", "loss")),
                *(_fmt(c[when][k]) for k in ("log_loss", "ece") for when in ("raw", "calibrated")),
                *(_fmt(v[k]) for k in VIDEO_KEYS),
                *(_faithfulness(entry if entry is r else {}) if faithful else ()),
            )
    console = Console(file=io.StringIO(), width=220, color_system=None, force_terminal=False)
    console.print(table)
    for key, path in legend.items():
        console.print(f"{key}: {path}")
    return console.file.getvalue().rstrip()


def method_table(reports: Mapping[str, dict]) -> str:
    """Each set's per-method (per-generator) rows: counts, ranking metrics and accuracies (`per_method`)."""
    table = Table(
        title="Per method (AUC, AP: its fakes against its own reals, else the set's shared reals; ACC: its images)",
        box=box.MARKDOWN,
    )
    columns = ("set", "method", "images", "real", "fake", "reals", "AUC", "AP", "video AUC", "ACC",
               "ACC real", "ACC fake", "ACC@val thr")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("set", "method", "reals") else "right")
    for name, r in reports.items():
        for method, m in r.get("per_method", {}).items():
            table.add_row(
                name, method, str(m["n"]), str(m["n_real"]), str(m["n_fake"]), m["reals"] or "-",
                *(_fmt(m[k]) for k in ("auc", "ap", "video_auc", "acc", "real_acc", "fake_acc", "acc_at_val_threshold")),
            )  # fmt: skip
    console = Console(file=io.StringIO(), width=220, color_system=None, force_terminal=False)
    console.print(table)
    thresholds = {n: r["val_threshold"] for n, r in reports.items() if r.get("val_threshold") is not None}
    for name, t in thresholds.items():
        console.print(f"{name}: validation-chosen threshold {t:.4f} (best balanced accuracy on validation)")
    return console.file.getvalue().rstrip()


def _faithfulness(report: Mapping[str, Any]) -> tuple[str, ...]:
    """The pointing game, heat in mask and its chance level (the mask area) of a set, "n/a" without masks."""
    scores = report.get("faithfulness", {})
    return tuple(_fmt(scores.get(k, math.nan)) for k in ("pointing_game", "heat_in_mask", "mask_area"))


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.4f}"


def _fmt_ci(ci: Sequence[float]) -> str:
    return "n/a" if any(math.isnan(c) for c in ci) else f"{ci[0]:.4f}-{ci[1]:.4f}"
