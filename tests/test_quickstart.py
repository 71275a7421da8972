"""The README's quickstart, command by command, from a folder outside the repository, on stand-in downloads.

`QUICKSTART` is the README's list: a fast test checks that the Quickstart section holds exactly these commands, in
this order, and the `cli` test runs each one as written, with the stand-in's paths for `/data/...`, the run's
folder for `outputs/<date>/<time>`, `model=tiny` for the pretrained backbone (no network in tests) and a few
settings that make it take seconds (`EXTRA`). The first command, `python train.py` unmodified, is
tests/test_train.py's end-to-end test.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.pages import parse
from tests.standin import write_celebdf, write_ffpp

QUICKSTART = [
    "python train.py",
    "python extract.py dataset=ffpp root=/data/FaceForensics++ out=/data/ffpp_faces dataset.compression=c23",
    "python extract.py dataset=celebdf root=/data/Celeb-DF-v2 out=/data/celebdf_faces",
    "python train.py data=manifest data.manifest=/data/ffpp_faces/manifest.csv model=efficientnet_b0",
    "python evaluate.py checkpoint=outputs/<date>/<time> 'data.test_sets=[/data/celebdf_faces/manifest.csv]'",
    "python predict.py checkpoint=outputs/<date>/<time> input=clip.mp4",
]
#: Seconds instead of hours: a few small frames per video, a tiny model on 32 px crops, one epoch.
EXTRA = {
    "extract.py": ["frames_per_video=4", "faces.size=64", "num_workers=0", "progress=off", "detector.device=cpu"],
    "train.py": ["data.img_size=32", "training.batch_size=8", "training.num_epochs=1", "data.num_workers=0",
                 "eval.bootstrap_samples=0", "backup.enabled=false", "logging.progress=plain"],
    "evaluate.py": ["data.num_workers=0", "eval.bootstrap_samples=0"],
    "predict.py": ["num_workers=0"],
}  # fmt: skip


def quickstart_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Quickstart")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_quickstart_is_this_list() -> None:
    found = [c.strip() for c in re.findall(r"python \w+\.py[^`\n]*", quickstart_section())]
    assert found == QUICKSTART
    assert len(quickstart_section().splitlines()) <= 60


def as_run(command: str, data: Path, run: str | None) -> list[str]:
    """The README's command with the stand-in's paths, the run folder and the fast settings."""
    words = shlex.split(command.replace("/data/", f"{data}/").replace("outputs/<date>/<time>", run or "?"))
    script = words[1]
    words = ["model=tiny" if w == "model=efficientnet_b0" else w for w in words[2:]]
    return [str(ROOT / script), *words, *EXTRA[script]]


@pytest.mark.cli
def test_the_quickstart_runs_from_a_folder_outside_the_repository(tmp_path: Path) -> None:
    data, here = tmp_path / "data", tmp_path / "work"
    write_ffpp(data / "FaceForensics++", pairs=3, frames=12, size=192)  # train, val and test: 4 videos each
    write_celebdf(data / "Celeb-DF-v2", videos=2, frames=12, size=192)
    here.mkdir()
    shutil.copy(data / "Celeb-DF-v2" / "Celeb-synthesis" / "id0_id1_0000.mp4", here / "clip.mp4")

    def run(command: str, run_dir: str | None = None) -> str:
        proc = run_cli(as_run(command, data, run_dir), cwd=here, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        return out

    for command, videos, crops in ((QUICKSTART[1], 12, 48), (QUICKSTART[2], 4, 16)):
        out = run(command)
        assert f"extracted {videos} video(s)" in out and f"ok {videos}; {crops} face crops" in out, out[
            -2000:
        ]
    out = run(QUICKSTART[3])
    (run_dir,) = [p.relative_to(here) for p in here.glob("outputs/*/*")]
    assert f"run directory: {here / run_dir}" in out and "model tiny (timm test_resnet)" in out
    assert f"data train: 16 images (8 real, 8 fake) from {data}/ffpp_faces/manifest.csv" in out
    assert (
        "on the data's test split: a report, never a selection" in out
        and (here / run_dir / "eval/test").is_dir()
    )
    assert f"python {ROOT / 'predict.py'} checkpoint={here / run_dir} input=" in out  # what to run next
    page = parse((here / run_dir / "report.html").read_text(encoding="utf-8"))  # the README's screenshot
    assert [r[0] for r in page.tables["verdict-table"][1:2]] == ["test"]
    out = run(QUICKSTART[4], str(run_dir))
    (celebdf,) = [
        p.parent for p in (here / run_dir / "eval").glob("*/metrics.json") if p.parent.name != "test"
    ]
    assert re.search(rf"^\| {re.escape(celebdf.name)} +\| +16 \| +4 \| ", out, re.MULTILINE), out[-2000:]
    page = parse((here / run_dir / "eval" / "report.html").read_text(encoding="utf-8"))
    assert [r[:3] for r in page.tables["verdict-table"][1:2]] == [[celebdf.name, "16", "4"]]
    out = run(QUICKSTART[5], str(run_dir))
    assert re.search(r"^clip\.mp4: [01]\.\d{4} (fake|real) \(ok\)$", out, re.MULTILINE), out[-2000:]
    assert (here / "preds.csv").is_file()
