"""report.html and MODEL_CARD.md: what they say (read back from the DOM and the Hub's own parser), that they
stand alone (no script, style, font or image from anywhere), and that missing parts read "not run"."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake.reporting.model_card import write_model_card
from deepfake.reporting.report import REPORT_FILE, main, report_run, write_report
from deepfake.reporting.run_facts import RunFacts, SetFacts, read_run, read_sets
from tests.conftest import ROOT
from tests.pages import Page, parse

SECTIONS = ["verdict", "run", "curves", "methods", "robustness", "explanations", "ensemble"]


def read_page(path: Path) -> Page:
    return parse(path.read_text(encoding="utf-8"))


def copy_run(run: Path, to: Path) -> Path:
    """A private copy of the session's run (without its backups), which tests may change."""
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("backups"))
    return to


def fmt(x: float | None) -> str:
    return "not run" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def assert_self_contained(page: Page) -> None:
    """Nothing to fetch: images are data URIs, no URL attribute points anywhere, no script, link or font."""
    assert page.images and all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert not [u for u in page.urls if not u.startswith("data:")]
    assert not page.tags & {"script", "link", "iframe", "object", "embed", "base"}


@pytest.mark.slow
def test_the_end_of_training_writes_a_self_contained_report(trained_run: dict) -> None:
    run = trained_run["run"]
    page = read_page(run / REPORT_FILE)
    assert page.sections == SECTIONS
    assert_self_contained(page)
    rows = page.tables["verdict-table"]
    assert rows[0][:4] == ["set", "images", "videos", "AUC"] and rows[0][7] == "TPR@1% FPR"
    assert [r[0] for r in rows[1:3]] == ["celebdf", "dfdc"] and rows[3][0].startswith(
        "validation, best epoch"
    )
    for row in rows[1:3]:
        m = json.loads((run / "eval" / row[0] / "metrics.json").read_text())
        assert row[1:4] == [str(m["counts"]["images"]), str(m["counts"]["videos"]), fmt(m["frame"]["auc"])]
        assert row[7] == "not run"  # fewer than 100 reals: TPR at 1% FPR is not measurable
        assert row[11] == fmt(m["calibration"]["calibrated"]["ece"])
        # the set's own ROC figure, inlined byte for byte
        roc = next(i for i in page.images if i["alt"] == f"ROC: {row[0]}")
        assert (
            base64.b64decode(roc["src"].split(",", 1)[1]) == (run / "eval" / row[0] / "roc.png").read_bytes()
        )
    facts = dict(page.tables["run-table"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert facts["seed"] == "42" and facts["model"] == "tiny (timm test_resnet)"
    assert facts["validation threshold"].startswith(
        f"{metrics['operating_point']['threshold']:.4f} for FPR 0.1"
    )
    assert facts["preprocessing (extraction.json)"].startswith("not recorded (data.kind=folder")
    assert "cpu" in facts["hardware"] and facts["training time"] != "not recorded"
    if (ROOT / ".git").exists():  # the commit the code came from, captured when the run started
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert facts["code"].startswith(f"git commit {head.stdout.strip()}")
    threshold = page.tables["threshold-table"]
    assert [r[0] for r in threshold[1:]] == ["celebdf", "dfdc"]
    methods = next(i for i in page.images if i["alt"] == "AUC per method: celebdf")
    assert (
        base64.b64decode(methods["src"].split(",", 1)[1])
        == (run / "eval" / "celebdf" / "methods.png").read_bytes()
    )
    for name in ("celebdf", "dfdc"):
        assert f"{name}: robustness grid not run (evaluate.py perturb=deeperforensics)." in page.text
        assert f"{name}: explanation grid not run (evaluate.py eval.explain=gradcam)." in page.text
    assert "Ensemble: not run (one checkpoint)." in page.text


@pytest.mark.slow
def test_the_model_card_follows_the_hub_layout_and_its_model_index_reads_back(trained_run: dict) -> None:
    from huggingface_hub import ModelCard

    run = trained_run["run"]
    text = (run / "MODEL_CARD.md").read_text(encoding="utf-8")
    card = ModelCard(text)  # the Hub's own parser: front matter and model-index
    results = {(r.dataset_name, r.metric_type, r.metric_config): r for r in card.data.eval_results}
    assert {name for name, _, _ in results} == {"celebdf", "dfdc"}
    for name in ("celebdf", "dfdc"):
        m = json.loads((run / "eval" / name / "metrics.json").read_text())
        assert results[(name, "roc_auc", "frame")].metric_value == round(m["frame"]["auc"], 4)
        assert results[(name, "roc_auc", "video")].metric_value == round(m["video"]["auc"], 4)
        assert results[(name, "roc_auc", "frame")].task_type == "image-classification"
        assert results[(name, "roc_auc", "frame")].dataset_split == "test"
        assert (name, "tpr_at_fpr", "frame") not in results  # not measurable here: left out, not written as 0
    assert card.data.pipeline_tag == "image-classification" and "deepfake-detection" in card.data.tags
    for heading in ("## Uses", "### Out-of-Scope Use", "## Bias, Risks, and Limitations", "### Training Data",
                    "#### Preprocessing", "### Protocol", "### Results", "### Calibration"):  # fmt: skip
        assert f"\n{heading}\n" in text, heading
    assert (
        "**Not evidence on its own**" in text
        and "**Tested only on:** celebdf (18 images), dfdc (25 images)" in text
        and "**Robustness** to compression, blur and noise was not measured" in text
    )
    assert (
        "python predict.py checkpoint=checkpoints/best.pt input=<video, image or folder> threshold=val_fpr"
        in text
    )


@pytest.mark.slow
def test_a_report_without_test_sets(trained_run: dict, tmp_path: Path) -> None:
    run = copy_run(trained_run["run"], tmp_path / "run")
    shutil.rmtree(run / "eval")
    report_run(run)
    page = read_page(run / REPORT_FILE)
    assert page.sections == SECTIONS
    rows = page.tables["verdict-table"]
    assert len(rows) == 2 and rows[1][0].startswith(
        "validation, best epoch"
    )  # the header and the selection row
    assert "Test sets: not run." in page.text and "Per-method AUC: not run (no test sets)." in page.text
    card = (run / "MODEL_CARD.md").read_text()
    assert (
        "model-index" not in card
        and "Test sets: not run." in card
        and "no test set (validation only)" in card
    )


def test_a_report_with_missing_and_damaged_parts_says_not_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No checkpoint readable, no hardware or summary file, a set whose metrics.json lacks most keys, another
    with junk values, and a set folder without metrics.json: the page and the card are written all the same."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint")
    (run / "metrics.json").write_text(json.dumps({"best": {"epoch": 2, "metrics": {"val/auc": 0.9}}}))
    (run / "eval" / "partial").mkdir(parents=True)
    (run / "eval" / "partial" / "metrics.json").write_text(json.dumps({"frame": {"auc": 0.75}}))
    (run / "eval" / "junk").mkdir()
    (run / "eval" / "junk" / "metrics.json").write_text(
        json.dumps(
            {"counts": "many", "frame": {"auc": "high", "auc_ci": [None]}, "per_method": [1], "members": {}}
        )
    )
    (run / "eval" / "empty").mkdir()
    sets = read_sets(run / "eval", ["partial", "junk", "empty", "<script>alert(1)</script>"])
    with caplog.at_level(logging.WARNING, logger="deepfake"):
        facts = read_run(run)
        write_report(run / REPORT_FILE, facts, sets, "missing parts")
        write_model_card(run, facts, sets)
    assert "best.pt cannot be read" in caplog.text
    page = read_page(run / REPORT_FILE)
    assert page.sections == SECTIONS
    rows = {r[0]: r for r in page.tables["verdict-table"][1:]}
    assert rows["partial"][3] == "0.7500" and rows["partial"][4:7] == ["not run"] * 3
    assert rows["junk"][1] == "not recorded" and rows["junk"][3] == "not run"
    assert rows["<script>alert(1)</script>"][3] == "not run"  # a name is text: escaped, never markup
    assert "script" not in page.tags
    facts_table = dict(page.tables["run-table"])
    assert facts_table["hardware"] == "not recorded" and facts_table["calibration"] == "not run"
    assert "Training curves: not run." in page.text
    card = (run / "MODEL_CARD.md").read_text()
    assert "| partial | not recorded | not recorded | 0.7500 |" in card and "&lt;script&gt;" in card


@pytest.mark.slow
def test_robustness_and_explanation_grids_appear_when_they_were_run(
    trained_run: dict, tmp_path: Path
) -> None:
    """The files `evaluate.py perturb=... eval.explain=... eval.embeddings=true` leaves in a set's folder."""
    run = copy_run(trained_run["run"], tmp_path / "run")
    folder = run / "eval" / "celebdf"
    pictures = {}
    for k, name in enumerate(
        ("robustness.png", "robustness_examples/grid.png", "explain.png", "embeddings.png")
    ):
        buffer = io.BytesIO()
        Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(buffer, format="PNG")
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(pictures.setdefault(name, buffer.getvalue()))
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["robustness"] = {
        "route": "crops", "seed": 0, "csv": "robustness.csv", "levels": [1, 5],
        "clean": {"frame_auc": 0.9, "video_auc": 0.95},
        "per_type": {"GB": {"frame_auc": 0.8, "video_auc": 0.85}, "JPEG": {"frame_auc": None, "video_auc": 0.9}},
        "mean": {"frame_auc": 0.75, "video_auc": 0.875},
    }  # fmt: skip
    metrics["faithfulness"] = {"method": "hirescam", "faces": 3, "fakes_with_mask": 3, "pointing_game": 2 / 3,
                               "heat_in_mask": 0.25, "mask_area": 0.0625}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (run / "eval" / "dfdc" / "robustness.csv").write_text("type,level,frame_auc\nclean,0,0.91\nGB,1,0.88\n")
    main([str(run)])  # python -m deepfake.report <run>: every set scored with best.pt
    page = read_page(run / REPORT_FILE)
    shown = {i["alt"]: base64.b64decode(i["src"].split(",", 1)[1]) for i in page.images}
    assert shown["robustness: celebdf"] == pictures["robustness.png"]
    assert shown["robustness examples: celebdf"] == pictures["robustness_examples/grid.png"]
    assert shown["explanations: celebdf"] == pictures["explain.png"]
    assert shown["embeddings: celebdf"] == pictures["embeddings.png"]
    assert page.tables["robustness-1"] == [
        ["perturbation", "frame AUC", "video AUC", "frame AUC change from clean"],
        ["clean", "0.9000", "0.9500", "+0.0000"],
        ["GB (mean over levels)", "0.8000", "0.8500", "-0.1000"],
        ["JPEG (mean over levels)", "not run", "0.9000", "not run"],
        ["every perturbed setting (mean)", "0.7500", "0.8750", "-0.1500"],
    ]
    assert "Perturbed on the test crops, levels 1, 5" in page.text
    # a set scored before metrics.json kept the summary: robustness.csv's rows as they are
    assert page.tables["robustness-2"] == [
        ["type", "level", "frame_auc"],
        ["clean", "0", "0.91"],
        ["GB", "1", "0.88"],
    ]
    faithful = dict(page.tables["faithfulness-1"])
    assert faithful["method, fakes with a mask"] == "hirescam, 3"
    assert faithful["pointing game (share of heat maxima inside the mask)"] == "0.6667"
    assert faithful["mask area (chance level of both)"] == "0.0625"
    assert "dfdc: explanation grid not run" in page.text
    assert_self_contained(page)
    card = (run / "MODEL_CARD.md").read_text()
    assert (
        "celebdf: frame AUC 0.9000 clean, 0.7500 on average over 2 perturbation types; worst GB (mean AUC 0.8000)"
        in card
    )


def test_report_command_refuses_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == 2 and "is not a run directory" in capsys.readouterr().err


def test_an_ensemble_table_puts_the_members_side_by_side(tmp_path: Path) -> None:
    members = [
        {"checkpoint": str(tmp_path / name), "img_size": size, "frame": {"auc": auc, "auc_ci": [auc - 0.1, auc]},
         "video": {"auc": auc}, "calibration": {"temperature": t, "calibrated": {"ece": 0.05}}}
        for name, size, auc, t in (("a.pt", 32, 0.81, 1.5), ("b.pt", 48, 0.77, None))
    ]  # fmt: skip
    metrics = {"checkpoints": [m["checkpoint"] for m in members], "members": members,
               "ensemble": {"members": 2, "mean": "logit"}, "frame": {"auc": 0.84}, "video": {"auc": 0.9}}  # fmt: skip
    write_report(tmp_path / REPORT_FILE, RunFacts(), [SetFacts("dfdc", tmp_path, metrics)], "ensemble")
    rows = read_page(tmp_path / REPORT_FILE).tables["ensemble-table"]
    assert rows[0] == ["", "#1", "#2", "ensemble"]
    table = {r[0]: r[1:] for r in rows[1:]}
    assert table["input size"] == ["32", "48", ""] and table["temperature"] == ["1.5000", "none", ""]
    assert table["dfdc: AUC"] == ["0.8100", "0.7700", "0.8400"]
    assert table["checkpoint"] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "mean of logit"]


def test_every_template_ships_with_the_package() -> None:
    """pyproject's package-data globs cover every file the renderer loads, so a wheel carries them."""
    import deepfake.reporting

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    package = Path(deepfake.reporting.__file__).parent
    config = tomllib.loads((package.parents[1] / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["deepfake.reporting"]
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    templates = set((package / "templates").iterdir())
    assert templates and templates <= shipped
    assert {p.name for p in templates} >= {"report.html.j2", "model_card.md.j2"}
