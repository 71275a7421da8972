"""Converters and manifests on dataset trees the tests write (tiny PNG/JPEG frames)."""

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake.data.convert import carve_val, convert, main
from deepfake.data.manifest import read_manifest, write_manifest
from deepfake.data.module import DataModule
from deepfake.data.samples import Sample
from deepfake.errors import DataError
from tests.conftest import make_folder_dataset


def frames(folder: Path, n: int = 2, ext: str = "png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i:04d}.{ext}")


def make_ffpp(root: Path, pairs: dict[str, list[list[str]]] | None = None) -> Path:
    """Originals 000..021 (c23 in frames/, c40 too), Deepfakes in frames/, Face2Face without the sub-folder."""
    pairs = pairs or {
        "train": [["000", "003"]],
        "val": [["010", "011"]],
        "test": [["020", "021"], ["030", "031"]],
    }
    ids = ["000", "003", "010", "011", "020", "021"]
    for vid in ids:
        frames(root / "original_sequences/youtube/c23/frames" / vid, 3)
        frames(root / "original_sequences/youtube/c40/frames" / vid, 1, "jpg")
    for a, b in [
        ("000", "003"),
        ("003", "000"),
        ("010", "011"),
        ("011", "010"),
        ("020", "021"),
        ("021", "020"),
    ]:
        frames(root / "manipulated_sequences/Deepfakes/c23/frames" / f"{a}_{b}", 2)
        frames(root / "manipulated_sequences/Face2Face/c23" / f"{a}_{b}", 2, "jpg")
        frames(root / "manipulated_sequences/Deepfakes/c40/frames" / f"{a}_{b}", 1, "jpg")
    (root / "manipulated_sequences/Deepfakes/c23/masks/000_003").mkdir(parents=True)  # not frames
    (root / "splits").mkdir()
    for split, split_pairs in pairs.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(split_pairs))
    return root


def by_video(rows: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r.video, []).append(r)
    return out


def test_ffpp_labels_splits_videos_methods_identities(tmp_path: Path) -> None:
    rows, notes = convert("ffpp", make_ffpp(tmp_path / "ffpp"))
    videos = by_video(rows)
    assert len(rows) == 6 * 3 + 6 * 2 * 2
    assert {r.method for r in rows} == {"youtube", "Deepfakes", "Face2Face"}
    real, fake, f2f = videos["youtube/000"][0], videos["Deepfakes/003_000"][0], videos["Face2Face/011_010"][0]
    assert (real.label, real.split, real.identity) == (0, "train", "000_003")
    assert (fake.label, fake.split, fake.identity, fake.method) == (1, "train", "000_003", "Deepfakes")
    assert (f2f.label, f2f.split, f2f.identity) == (1, "val", "010_011")
    assert {r.split for r in videos["youtube/021"]} == {"test"}
    assert all("/c23/" in r.path for r in rows)
    assert len(videos["youtube/000"]) == 3 and "Deepfakes/000_003" in videos
    # pair 030/031 is listed but was not extracted: reported per part, not silently skipped
    assert any("youtube/030" in n and "left out" in n for n in notes)


def test_ffpp_split_json_decides_the_split(tmp_path: Path) -> None:
    root = make_ffpp(
        tmp_path / "ffpp", {"train": [["020", "021"]], "val": [["000", "003"]], "test": [["010", "011"]]}
    )
    rows, notes = convert("ffpp", root)
    split = {r.video: r.split for r in rows}
    assert split["youtube/000"] == split["Deepfakes/003_000"] == "val"
    assert split["youtube/020"] == split["Face2Face/021_020"] == "train"
    assert split["youtube/011"] == "test"
    assert not notes


def test_ffpp_compression_is_selectable(tmp_path: Path) -> None:
    rows, _ = convert("ffpp", make_ffpp(tmp_path / "ffpp"), compression="c40", methods=["Deepfakes"])
    assert rows and all("/c40/" in r.path and r.path.endswith(".jpg") for r in rows)
    assert {r.method for r in rows} == {"youtube", "Deepfakes"}
    with pytest.raises(DataError, match=r"no frames for compression 'c0'.*compressions found: c23, c40"):
        convert("ffpp", tmp_path / "ffpp", compression="c0")


def test_ffpp_broken_layouts_say_what_was_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "notffpp" / "videos").mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"not an FF\+\+ tree: expected <root>/original_sequences.*holds: videos"
    ):
        convert("ffpp", tmp_path / "notffpp")
    root = make_ffpp(tmp_path / "ffpp")
    (root / "splits" / "val.json").unlink()
    with pytest.raises(DataError, match=r"no FF\+\+ split files.*train.json, val.json and test.json"):
        convert("ffpp", root)
    (root / "splits" / "val.json").write_text("{not json")
    with pytest.raises(DataError, match=r"val.json is not an FF\+\+ split file"):
        convert("ffpp", root)


def make_celebdf(root: Path, sub: str = "") -> Path:
    for folder, videos in {
        "Celeb-real": ["id0_0000", "id1_0001"],
        "Celeb-synthesis": ["id0_id1_0000", "id1_id0_0001"],
        "YouTube-real": ["00000", "00001"],
    }.items():
        for vid in videos:
            frames(root / folder / sub / vid, 2, "jpg")
    listed = ["1 YouTube-real/00001.mp4", "0 Celeb-synthesis/id1_id0_0001.mp4", "1 Celeb-real/id1_0001.mp4",
              "0 Celeb-synthesis/id9_id8_0009.mp4"]  # fmt: skip
    (root / "List_of_testing_videos.txt").write_text("\n".join(listed) + "\n")
    return root


@pytest.mark.parametrize("sub", ["", "frames"])  # plain extraction, and DeepfakeBench's frames/ folders
def test_celebdf_test_list_labels_and_methods(tmp_path: Path, sub: str) -> None:
    rows, notes = convert("celebdf", make_celebdf(tmp_path / "celeb", sub))
    videos = by_video(rows)
    assert len(rows) == 12
    assert {v: (r[0].label, r[0].split) for v, r in videos.items()} == {
        "Celeb-real/id0_0000": (0, "train"),
        "Celeb-real/id1_0001": (0, "test"),
        "Celeb-synthesis/id0_id1_0000": (1, "train"),
        "Celeb-synthesis/id1_id0_0001": (1, "test"),
        "YouTube-real/00000": (0, "train"),
        "YouTube-real/00001": (0, "test"),
    }
    assert videos["Celeb-synthesis/id1_id0_0001"][0].method == "Celeb-synthesis"
    assert videos["Celeb-synthesis/id1_id0_0001"][0].identity == "id1"
    assert notes and "Celeb-synthesis/id9_id8_0009" in notes[0]


def test_celebdf_broken_list_and_missing_list(tmp_path: Path) -> None:
    root = make_celebdf(tmp_path / "celeb")
    (root / "List_of_testing_videos.txt").write_text("0 Celeb-real/id0_0000.mp4\n")
    with pytest.raises(DataError, match=r"labels Celeb-real/id0_0000 as fake but it sits in Celeb-real"):
        convert("celebdf", root)
    (root / "List_of_testing_videos.txt").unlink()
    with pytest.raises(
        DataError, match=r"List_of_testing_videos.txt is missing; expected <root>/\{Celeb-real"
    ):
        convert("celebdf", root)


def make_dfdc(root: Path) -> Path:
    part0, part1 = root / "dfdc_train_part_0", root / "dfdc_train_part_1"
    meta0 = {
        "aaa.mp4": {"label": "REAL", "split": "train", "original": None},
        "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "ccc.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},  # listed, never extracted
    }
    meta1 = {
        "ddd.mp4": {"label": "REAL", "split": "test"},
        "eee.mp4": {"label": "FAKE", "original": "ddd.mp4"},
    }
    for part, meta in ((part0, meta0), (part1, meta1)):
        part.mkdir(parents=True)
        (part / "metadata.json").write_text(json.dumps(meta))
    for vid in ("aaa", "bbb"):
        frames(part0 / vid, 2)
    for vid in ("ddd", "eee"):
        frames(part1 / "frames" / vid, 1, "jpg")
    return root


def test_dfdc_labels_from_metadata(tmp_path: Path) -> None:
    rows, notes = convert("dfdc", make_dfdc(tmp_path / "dfdc"))
    videos = by_video(rows)
    assert sorted(videos) == ["dfdc_train_part_0/aaa", "dfdc_train_part_0/bbb", "dfdc_train_part_1/ddd",
                              "dfdc_train_part_1/eee"]  # fmt: skip
    bbb, aaa, ddd = (
        videos["dfdc_train_part_0/bbb"][0],
        videos["dfdc_train_part_0/aaa"][0],
        videos["dfdc_train_part_1/ddd"][0],
    )
    assert (bbb.label, bbb.method, bbb.split, bbb.identity) == (1, "DFDC", "train", "dfdc_train_part_0/aaa")
    assert (aaa.label, aaa.method, aaa.identity) == (0, "real", "dfdc_train_part_0/aaa")
    assert (ddd.label, ddd.split) == (0, "test")
    assert len(notes) == 1 and "ccc" in notes[0] and "1 video(s)" in notes[0]


def test_dfdc_bad_label_and_missing_metadata(tmp_path: Path) -> None:
    root = make_dfdc(tmp_path / "dfdc")
    (root / "dfdc_train_part_1" / "metadata.json").write_text(json.dumps({"ddd.mp4": {"label": "MAYBE"}}))
    with pytest.raises(DataError, match=r"entry 'ddd.mp4' has label 'MAYBE'; expected REAL or FAKE"):
        convert("dfdc", root)
    (tmp_path / "empty" / "part").mkdir(parents=True)
    with pytest.raises(
        DataError, match=r"no DFDC metadata.json found: expected <root>/\[<part>/\]metadata.json.*holds: part"
    ):
        convert("dfdc", tmp_path / "empty")


def test_folder_converter_matches_the_folder_scan(tmp_path: Path) -> None:
    root = make_folder_dataset(tmp_path / "d", videos=2, frames=2, size=8)
    rows, _ = convert("folder", root)
    dm = DataModule(kind="folder", root=str(root))
    assert sorted(rows, key=str) == sorted(dm.rows(), key=str)
    fake = next(r for r in rows if r.video == "fake/Deepfakes/val_f001")
    assert (fake.label, fake.split, fake.method) == (1, "val", "Deepfakes")


def test_cli_writes_a_relative_manifest_that_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = make_ffpp(tmp_path / "ffpp")
    out = tmp_path / "lists" / "ffpp.csv"
    main(["ffpp", str(root), "--out", str(out), "--methods", "Deepfakes"])
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "splits: test 10, train 10, val 10" in captured.out
    assert "warning: " in captured.err and "youtube/030" in captured.err
    text = out.read_text()
    assert str(tmp_path) not in text and "../ffpp/original_sequences/youtube/c23/frames/000/0000.png" in text
    rows, _ = convert("ffpp", root, methods=["Deepfakes"])
    assert read_manifest(out) == rows


def test_cli_reports_a_broken_layout_as_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "celeb").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["celebdf", str(tmp_path / "celeb"), "--out", str(tmp_path / "m.csv")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not a Celeb-DF tree") and "Traceback" not in err
    assert not (tmp_path / "m.csv").exists()


def test_val_fraction_moves_whole_identities(tmp_path: Path) -> None:
    root = make_celebdf(tmp_path / "celeb")
    rows, _ = convert("celebdf", root, val_fraction=0.5)
    val = {r.identity or r.video for r in rows if r.split == "val"}
    train = {r.identity or r.video for r in rows if r.split == "train"}
    assert val and train and not val & train
    assert {r.split for r in rows if r.video == "Celeb-real/id1_0001"} == {"test"}  # test rows never move


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_manifest_labels_paths_and_defaults(tmp_path: Path) -> None:
    frames(tmp_path / "imgs" / "v1", 2)
    m = write_csv(tmp_path / "m.csv", "path,label", ["imgs/v1/0000.png,REAL", "imgs/v1/0001.png,fake"])
    rows = read_manifest(m)
    assert [r.label for r in rows] == [0, 1]
    assert rows[0].path == str(tmp_path / "imgs/v1/0000.png")
    assert (rows[1].video, rows[1].method, rows[1].split) == ("imgs/v1/0001", "fake", "")


def test_manifest_reports_missing_files_and_bad_rows(tmp_path: Path) -> None:
    frames(tmp_path / "imgs" / "v1", 2)
    m = write_csv(
        tmp_path / "m.csv", "path,label,split", ["imgs/v1/0000.png,0,train", "imgs/v1/0009.png,1,train"]
    )
    with pytest.raises(DataError, match=r"1 row\(s\) point to missing files: line 3: .*imgs/v1/0009.png"):
        read_manifest(m)
    write_csv(m, "path,label,split", ["imgs/v1/0000.png,yes,train"])
    with pytest.raises(DataError, match=r"line 2: label 'yes' is not 0, 1, real or fake"):
        read_manifest(m)
    write_csv(m, "path,lable", ["imgs/v1/0000.png,0"])
    with pytest.raises(
        DataError, match=r"expected the columns path,label .*\(missing: label\) \(unknown: lable\)"
    ):
        read_manifest(m)


def test_manifest_rows_survive_a_round_trip(tmp_path: Path) -> None:
    root = make_celebdf(tmp_path / "celeb")
    rows, _ = convert("celebdf", root)
    out = write_manifest(rows, tmp_path / "sub" / "m.csv")
    with out.open() as f:
        header = next(csv.reader(f))
    assert header == ["path", "label", "split", "video", "method", "identity"]
    assert read_manifest(out) == rows


def test_val_fraction_gives_every_method_and_label_its_share() -> None:
    """Stratified by (method, label): each generator's reals and fakes keep their share in val, whatever the hash."""
    rows = [
        Sample(f"{g}/{y}/{i}.png", y, f"{g}/{y}/{i}", g, "train")
        for g in ("sdv4", "adm", "biggan")
        for y in (0, 1)
        for i in range(10)
    ]
    rows.append(Sample("test/0.png", 1, "test/0", "sdv4", "test"))
    carved = carve_val(rows, 0.2)
    assert Counter((r.method, r.label) for r in carved if r.split == "val") == {
        (g, y): 2 for g in ("sdv4", "adm", "biggan") for y in (0, 1)
    }
    assert carved[-1].split == "test"
    # One kind of group: the hash order alone, so manifests carved before stratification keep their val split.
    one = [r for r in rows if r.method == "adm" and r.label == 1]
    ranked = sorted(one, key=lambda r: hashlib.sha256(r.video.encode()).hexdigest())
    assert {r.video for r in carve_val(one, 0.3) if r.split == "val"} == {r.video for r in ranked[:3]}
    assert [r.split for r in carve_val(rows[:2], 0.1)].count("val") == 1  # asked for a split: never empty
