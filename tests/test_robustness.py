"""Robustness evaluation: perturbed crops made in the loader, the rows and means, the files of a set, and
`evaluate.py perturb=...` end to end on the session's trained run."""

from __future__ import annotations

import base64
import csv
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from deepfake.data import DataModule
from deepfake.data.decode import decode_file, fit
from deepfake.data.perturbed import PerturbedCrops, require_videos
from deepfake.data.samples import Sample, scan_split
from deepfake.errors import ConfigError, DataError, UserError
from deepfake.evaluation.robustness import summarize
from deepfake.extraction.perturbed_frames import FramePerturbation
from deepfake.extraction.video import read_frames, timed_read
from deepfake.perturbations import image, video
from deepfake.perturbations.protocol import Setting, frame_rng, setting
from deepfake.reporting.eval_sets import evaluate
from deepfake.reporting.robustness import write_robustness
from tests.pages import parse
from tests.videos import VideoSet

EVAL = {"threshold": 0.5, "video_aggregation": "mean", "video_topk": 5}


def crops(root: Path, videos: int = 2, frames: int = 3) -> list[Sample]:
    """Real and fake videos of 30 x 40 crops (not square: the fit to S must happen after the perturbation)."""
    rng = np.random.default_rng(0)
    for cls in ("real", "fake"):
        for v in range(videos):
            for f in range(frames):
                path = root / "test" / cls / f"{cls}{v}" / f"{f:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    return scan_split(root, "test", ["real"], ["fake"])


def test_perturbed_crops_perturb_at_the_crops_own_size_then_fit(tmp_path: Path) -> None:
    samples = crops(tmp_path)
    clean = PerturbedCrops(samples, Setting("clean", 0), seed=5, size=24)
    assert torch.equal(clean[2], decode_file(samples[2].path, 24))  # the set's ordinary pixels
    blur = PerturbedCrops(samples, setting("GB", 2), seed=5, size=24)
    native = np.asarray(Image.open(samples[2].path))
    expected = fit(torch.from_numpy(image.gaussian_blur(native, 9)).permute(2, 0, 1), 24)
    assert torch.equal(blur[2], expected)
    noise = PerturbedCrops(samples, setting("GNC", 1), seed=5, size=24)
    by_hand = image.gaussian_noise_color(native, 0.001, frame_rng(5, samples[2].video, "002.png"))
    assert (noise.perturbed(2) == by_hand).all()  # seeded by (seed, video, file name)


def test_vc_encodes_each_video_once_as_one_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = crops(tmp_path)
    clips: list[int] = []
    real = video.compress_clip
    monkeypatch.setattr(
        video, "compress_clip", lambda frames, crf: clips.append(len(frames)) or real(frames, crf)
    )
    vc = PerturbedCrops(samples, setting("VC", 3), seed=0, size=24)
    items = [vc[i] for i in range(len(samples))]
    assert clips == [3, 3, 3, 3]  # four videos of three crops, each encoded once
    assert all(item.shape == (3, 24, 24) and item.dtype == torch.uint8 for item in items)
    assert not torch.equal(items[0], decode_file(samples[0].path, 24))


def test_vc_refuses_a_set_of_loose_images() -> None:
    loose = [Sample(f"/x/{i}.png", i % 2, f"test/real/{i}.png", "real") for i in range(4)]
    with pytest.raises(
        DataError, match=r"VC re-encodes each video's frames as one clip, but every image of test set dfdc"
    ):
        require_videos(loose, "dfdc")
    require_videos(
        [*loose, Sample("/x/4.png", 0, "test/real/0.png", "real")], "mixed"
    )  # one real video: fine


def test_rows_summary_and_files(tmp_path: Path) -> None:
    samples = [Sample(f"/s/{v}_{f}.png", v % 2, f"v{v}", "m") for v in range(4) for f in range(2)]
    labels = np.array([s.label for s in samples])
    clean = labels * 0.8 + 0.1
    blurred = np.where(labels == 1, 0.4, 0.6)  # every fake below every real: AUC 0
    noisy = np.array([0.3, 0.6, 0.7, 0.2, 0.5, 0.5, 0.4, 0.9])
    scored = [(Setting("clean", 0), samples, clean), (setting("GB", 1), samples, blurred),
              (setting("GB", 5), samples, noisy), (setting("CC", 1), samples, clean)]  # fmt: skip
    rows, summary = write_robustness(tmp_path, "set", scored, EVAL)
    with open(tmp_path / "robustness.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["type", "level", "param", "frame_auc", "video_auc", "ap", "eer", "n"]
    assert [(r["type"], r["level"], r["param"]) for r in table] == [("clean", "0", ""), ("GB", "1", "7"),
                                                                     ("GB", "5", "21"), ("CC", "1", "0.85")]  # fmt: skip
    assert float(table[1]["frame_auc"]) == 0.0 and float(table[0]["video_auc"]) == 1.0
    assert float(table[2]["frame_auc"]) == pytest.approx(roc_auc_score(labels, noisy))
    assert table[2]["n"] == "8"
    assert summary["per_type"]["GB"]["frame_auc"] == pytest.approx((0.0 + roc_auc_score(labels, noisy)) / 2)
    assert summary["mean"]["frame_auc"] == pytest.approx((0.0 + roc_auc_score(labels, noisy) + 1.0) / 3)
    assert summary["clean"] == {"frame_auc": 1.0, "video_auc": 1.0} and summary["levels"] == [1, 5]
    with gzip.open(tmp_path / "robustness_predictions.csv.gz", "rt", newline="") as f:
        predictions = list(csv.DictReader(f))
    assert (
        len(predictions) == 32
        and predictions[8]["setting"] == "GB-1"
        and float(predictions[8]["prob"]) == 0.6
    )
    assert Image.open(tmp_path / "robustness.png").size[0] > 500
    assert summarize(rows) == summary


def test_evaluate_refuses_unknown_perturbations_before_loading(compose_cfg) -> None:
    overrides = ["checkpoint=/no/such/run", "perturb=deeperforensics", "perturb.types=[GB,blur]"]
    cfg = compose_cfg(overrides, config_name="evaluate")
    with pytest.raises(ConfigError, match=r"perturb\.types holds unknown type\(s\) blur; known: CS, CC, BW"):
        evaluate(cfg, overrides)
    cfg = compose_cfg(["checkpoint=/no/such/run", "perturb.examples=1"], config_name="evaluate")
    with pytest.raises(
        ConfigError, match=r"perturb\.examples shows faces under perturb\.types, which is empty"
    ):
        evaluate(cfg, [])
    assert list(compose_cfg(["checkpoint=x", "perturb=deeperforensics"], "evaluate").perturb.types) == [
        "CS", "CC", "BW", "GNC", "GB", "JPEG", "VC"
    ]  # fmt: skip


@pytest.mark.slow
def test_evaluate_perturb_scores_every_setting_and_saves_examples(
    trained_run: dict, compose_cfg, tmp_path: Path
) -> None:
    overrides = [
        f"checkpoint={trained_run['run']}",
        f"data.test_sets=[{trained_run['celebdf']}]",
        "data.num_workers=0",
        "eval.bootstrap_samples=0",
        f"eval.out_dir={tmp_path}",
        "perturb.types=[GB,BW,VC]",
        "perturb.levels=[1,5]",
        "perturb.examples=1",
    ]
    report = evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)["celebdf"]
    out = tmp_path / "celebdf"
    with open(out / "robustness.csv", newline="") as f:
        rows = {f"{r['type']}-{r['level']}": r for r in csv.DictReader(f)}
    assert list(rows) == ["clean-0", "GB-1", "GB-5", "BW-1", "BW-5", "VC-1", "VC-5"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert float(rows["clean-0"]["frame_auc"]) == metrics["frame"]["auc"] == report["frame"]["auc"]
    assert float(rows["clean-0"]["video_auc"]) == metrics["video"]["auc"]
    assert all(r["n"] == "18" for r in rows.values())
    with gzip.open(out / "robustness_predictions.csv.gz", "rt", newline="") as f:
        predictions = list(csv.DictReader(f))
    for name, row in rows.items():  # every row recomputes from the probabilities file
        mine = [p for p in predictions if p["setting"] == ("clean" if name == "clean-0" else name)]
        auc = roc_auc_score([int(p["label"]) for p in mine], [float(p["prob"]) for p in mine])
        assert float(row["frame_auc"]) == pytest.approx(auc, abs=1e-12)
    by_setting = {
        s: [float(p["prob"]) for p in predictions if p["setting"] == s] for s in ("clean", "BW-5", "GB-5")
    }
    assert by_setting["BW-5"] == by_setting["clean"]  # 32 px crops: BW puts no block under 256 px (the quirk)
    assert by_setting["GB-5"] != by_setting["clean"]
    robust = metrics["robustness"]
    assert robust["route"] == "crops" and set(robust["per_type"]) == {"GB", "BW", "VC"}
    gb = [float(rows[k]["video_auc"]) for k in ("GB-1", "GB-5")]
    assert robust["per_type"]["GB"]["video_auc"] == pytest.approx(sum(gb) / 2)
    assert not math.isnan(robust["mean"]["frame_auc"])
    examples = out / "robustness_examples"
    faces = sorted(p for p in examples.iterdir() if p.is_dir())
    assert len(faces) == 1 and (examples / "grid.png").is_file()
    first = scan_split(trained_run["celebdf"], "test", ["real"], ["fake"])[0]
    source = np.asarray(Image.open(first.path).convert("RGB"))
    files = sorted(p.name for p in faces[0].iterdir())
    assert files == sorted(["clean.png", *(f"{k}.png" for k in list(rows)[1:])])
    assert (np.asarray(Image.open(faces[0] / "clean.png")) == source).all()  # lossless, at its own size
    assert (np.asarray(Image.open(faces[0] / "GB-5.png")) == image.gaussian_blur(source, 21)).all()
    # evaluate.py's report.html shows the grid, the example faces and the summary (issue 29)
    page = parse((tmp_path / "report.html").read_text(encoding="utf-8"))
    shown = {i["alt"]: i["src"] for i in page.images}
    assert shown["robustness: celebdf"] == "data:image/png;base64," + base64.b64encode(
        (out / "robustness.png").read_bytes()
    ).decode("ascii")
    assert "robustness examples: celebdf" in shown
    table = page.tables["robustness-1"]
    assert [r[0] for r in table[1:]] == ["clean", *(f"{t} (mean over levels)" for t in ("GB", "BW", "VC")),
                                         "every perturbed setting (mean)"]  # fmt: skip
    assert table[2][1] == f"{robust['per_type']['GB']['frame_auc']:.4f}"


def test_frame_perturbation_perturbs_the_kept_frames_in_the_worker(
    test_videos: VideoSet, tmp_path: Path
) -> None:
    root = tmp_path / "videos"
    (root / "test" / "real").mkdir(parents=True)
    path = root / "test" / "real" / "pan.mp4"
    path.write_bytes(test_videos.pan.read_bytes())
    clean = read_frames(path, 4)
    blurred, _ = timed_read(str(path), 4, reader=FramePerturbation(setting("GB", 3), 7, str(root)))
    assert [i for i, _ in blurred.frames] == [i for i, _ in clean.frames]
    for (_, frame), (_, original) in zip(blurred.frames, clean.frames, strict=True):
        assert (frame == image.gaussian_blur(original, 13)).all()
    noisy = FramePerturbation(setting("GNC", 2), 7, str(root)).read(str(path), 4)
    i, original = clean.frames[1]
    assert (
        noisy.frames[1][1]
        == image.gaussian_noise_color(original, 0.002, frame_rng(7, "test/real/pan.mp4", i))
    ).all()
    squeezed = FramePerturbation(setting("VC", 5), 7, str(root)).read(str(path), 4)
    assert squeezed.path == str(path) and squeezed.info == clean.info
    assert [f.shape for _, f in squeezed.frames] == [f.shape for _, f in clean.frames]
    assert 1 < np.abs(squeezed.frames[2][1].astype(int) - clean.frames[2][1]).mean() < 30


@pytest.mark.slow
def test_extract_perturbed_sets_then_one_summary(
    test_videos: VideoSet, trained_run: dict, compose_cfg, tmp_path: Path
) -> None:
    """The paper route: extract.py perturbs whole frames before detection (only the test split here), records
    the setting, refuses to resume into another; evaluate.py perturb.extracted= summarises the sets."""
    from deepfake.extraction.pipeline import extract
    from tests.test_extract_run import extract_cfg, place

    root = place({"test/real/pan.mp4": test_videos.pan, "test/fake/M/mirrored.mp4": test_videos.mirrored,
                  "train/real/brighter.mp4": test_videos.brighter}, tmp_path / "videos")  # fmt: skip
    fast = ["frames_per_video=4", "splits=[test]"]
    assert extract(extract_cfg(root, tmp_path / "clean", *fast)) is not None
    for kind, level in (("GB", 3), ("VC", 5)):
        out = tmp_path / "robust" / f"{kind}-{level}"
        assert (
            extract(extract_cfg(root, out, *fast, f"perturb.type={kind}", f"perturb.level={level}"))
            is not None
        )
    gb = tmp_path / "robust" / "GB-3"
    with open(gb / "videos.csv", newline="") as f:
        videos = list(csv.DictReader(f))
    assert sorted(v["source"] for v in videos) == ["test/fake/M/mirrored.mp4", "test/real/pan.mp4"]
    assert {v["perturb"] for v in videos} == {"GB-3"} and all(v["status"] == "ok" for v in videos)
    assert json.loads((gb / "extraction.json").read_text())["perturb"] == {
        "type": "GB",
        "level": 3,
        "seed": 0,
    }
    assert json.loads((tmp_path / "clean" / "extraction.json").read_text())["perturb"] is None
    with pytest.raises(
        UserError,
        match=r"holds videos extracted with perturbation GB-3 \(seed 0\), but this run asks for CC-3",
    ):
        extract(extract_cfg(root, gb, *fast, "perturb.type=CC", "perturb.level=3"))
    overrides = [
        f"checkpoint={trained_run['run']}",
        f"data.test_sets=[{tmp_path / 'clean' / 'manifest.csv'}]",
        f"perturb.extracted={tmp_path / 'robust'}",
        "data.num_workers=0",
        "eval.bootstrap_samples=0",
        f"eval.out_dir={tmp_path / 'eval'}",
    ]
    report = evaluate(compose_cfg(overrides, config_name="evaluate"), overrides)[
        "clean_manifest"
    ]  # the set: its folder and stem
    with open(tmp_path / "eval" / "clean_manifest" / "robustness.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["type"], r["level"], r["param"]) for r in rows] == [
        ("clean", "0", ""),
        ("GB", "3", "13"),
        ("VC", "5", "40"),
    ]
    assert all(int(r["n"]) == 8 for r in rows)  # 2 videos x 4 frames, one face each
    robust = report["robustness"]
    assert robust["route"] == "frames" and robust["sets"] == {
        "GB-3": str(gb / "manifest.csv"), "VC-5": str(tmp_path / "robust" / "VC-5" / "manifest.csv")
    }  # fmt: skip
    assert (tmp_path / "eval" / "clean_manifest" / "robustness.png").is_file()


def test_clip_models_get_perturbed_clips(tmp_path: Path) -> None:
    crops(tmp_path)
    dm = DataModule(kind="folder", root=str(tmp_path), img_size=24, num_workers=0, clip_frames=2,
                    test_sets=[str(tmp_path)])  # fmt: skip
    (name,) = dm.setup_test_sets()
    clean, _, _ = next(iter(dm.test_dataloader(name)))
    blurred, _, _ = next(iter(dm.test_dataloader(name, setting("GB", 5), 0)))
    assert clean.shape == blurred.shape == (4, 2, 3, 24, 24)  # four videos, two frames each
    assert not torch.equal(clean, blurred) and clean.float().std() > blurred.float().std()


def test_extract_perturb_keys_are_checked(tmp_path: Path) -> None:
    from deepfake.extraction.config import validate

    base = {"root": str(tmp_path), "out": str(tmp_path / "out")}
    with pytest.raises(ConfigError, match=r"perturb\.type=GB needs perturb\.level: 1 \(mildest\) to 5"):
        validate({**base, "perturb": {"type": "GB"}})
    with pytest.raises(ConfigError, match=r"perturb\.level is set but perturb\.type is not"):
        validate({**base, "perturb": {"level": 3}})
    with pytest.raises(ConfigError, match=r"perturb\.type='gauss' is not a perturbation type"):
        validate({**base, "perturb": {"type": "gauss", "level": 3}})
    with pytest.raises(ConfigError, match=r"splits=\[\] keeps no video"):
        validate({**base, "splits": []})
    assert validate({**base, "perturb": {"type": "VC", "level": 5}}).perturb.level == 5


@pytest.mark.parametrize(
    "perturb",
    [{"type": "__import__('os')", "level": 1, "seed": 0}, {"type": "GB", "level": 9, "seed": 0}, "GB-3"],
)
def test_a_tampered_perturbation_record_is_refused(tmp_path: Path, perturb: object) -> None:
    from deepfake.extraction.config import validate
    from deepfake.extraction.settings import read_settings, write_settings

    cfg = validate({"root": str(tmp_path), "out": str(tmp_path), "perturb": {"type": "GB", "level": 3}})
    path = write_settings(tmp_path, cfg)
    saved = json.loads(path.read_text())
    assert read_settings(tmp_path)["perturb"] == saved["perturb"] == {"type": "GB", "level": 3, "seed": 0}
    path.write_text(json.dumps({**saved, "perturb": perturb}))
    with pytest.raises(UserError, match="extraction setting perturb is missing or invalid"):
        read_settings(tmp_path)
