"""predict.py: probabilities per image from the checkpoint alone; unreadable files are reported, not fatal."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from deepfake.errors import ConfigError, UserError
from deepfake.prediction.driver import list_inputs, predict
from tests.conftest import ROOT, run_cli


def eval_probs(run: Path, name: str) -> dict[str, float]:
    """Probabilities train.py's last step wrote for a test set (the evaluation code path)."""
    with open(run / "eval" / name / "predictions.csv", newline="") as f:
        return {Path(r["path"]).name + "@" + r["video"]: float(r["prob"]) for r in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.cli
def test_predict_folder_with_a_corrupt_file(trained_run: dict, tmp_path: Path) -> None:
    source = trained_run["dfdc"] / "fake" / "Face2Face" / "f00"
    images = tmp_path / "new"
    shutil.copytree(source, images)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    out = tmp_path / "preds.csv"
    proc = run_cli(
        [str(ROOT / "predict.py"), f"checkpoint={trained_run['run']}", f"input={images}", f"output={out}",
         "num_workers=0"],
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "broken.jpg" in proc.stdout + proc.stderr
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["000.jpg", "001.jpg", "002.jpg", "broken.jpg"]
    bad = rows[-1]
    assert bad["prob"] == "" and bad["pred"] == ""
    assert re.match(r"(OSError|UnidentifiedImageError): \S", bad["error"]), bad["error"]
    good = rows[:-1]
    assert all(0.0 <= float(r["prob"]) <= 1.0 and r["error"] == "" for r in good)
    assert all(r["pred"] == ("fake" if float(r["prob"]) >= 0.5 else "real") for r in good)
    # Same checkpoint, same images: exactly the probabilities evaluation wrote into predictions.csv.
    evaluated = eval_probs(trained_run["run"], "dfdc")
    for r in good:
        assert float(r["prob"]) == pytest.approx(
            evaluated[f"{Path(r['path']).name}@fake/Face2Face/f00"], abs=1e-6
        )
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob("*.log"))


@pytest.mark.slow
def test_predict_list_file_to_json_with_missing_entry_and_threshold(
    trained_run: dict, tmp_path: Path
) -> None:
    real = trained_run["dfdc"] / "real"
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"# images to score\n{real / 'loose.png'}\n\nmissing.png\n{real / 'r01' / '001.png'}\n"
    )
    out = tmp_path / "out" / "preds.json"
    rows = predict(
        {"checkpoint": str(trained_run["run"] / "checkpoints" / "best.pt"), "input": str(listing),
         "output": str(out), "num_workers": 0, "threshold": 0.25}
    )  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["predictions"] == rows and saved["threshold"] == 0.25
    assert saved["preprocess"]["img_size"] == 32
    assert [r["path"] for r in rows] == [
        str(real / "loose.png"),
        str(tmp_path / "missing.png"),
        str(real / "r01" / "001.png"),
    ]
    assert "FileNotFoundError" in rows[1]["error"] and rows[1]["prob"] is None
    evaluated = eval_probs(trained_run["run"], "dfdc")
    assert rows[0]["prob"] == pytest.approx(evaluated["loose.png@dfdc/real/loose.png"], abs=1e-6)
    assert rows[2]["prob"] == pytest.approx(evaluated["001.png@real/r01"], abs=1e-6)
    for r in (rows[0], rows[2]):
        assert r["pred"] == ("fake" if r["prob"] >= 0.25 else "real") and r["error"] is None


def test_inputs_and_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        list_inputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        list_inputs(tmp_path / "empty")
    (tmp_path / "one.webp").write_bytes(b"")
    assert list_inputs(tmp_path / "one.webp") == [str(tmp_path / "one.webp")]
    with pytest.raises(ConfigError, match=r"name it \.csv, \.jsonl, \.parquet or \.json"):
        predict({"checkpoint": "x.pt", "input": str(tmp_path), "output": "preds.txt"})
    with pytest.raises(ConfigError, match=r"threshold must be in \[0, 1\]"):
        predict({"checkpoint": "x.pt", "input": str(tmp_path), "threshold": 1.5})
    with pytest.raises(ConfigError, match="input is not set"):
        predict({"checkpoint": "x.pt"})
    with pytest.raises(UserError, match=r"checkpoint .*missing\.pt does not exist"):
        predict({"checkpoint": str(tmp_path / "missing.pt"), "input": str(tmp_path)})
