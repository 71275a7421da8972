"""Published dataset layouts turned into manifest rows, over frame folders or over the video files themselves.

One code path decides labels, splits, methods and identities for both forms: each `*_videos` function lists a
layout's videos as rows whose `path` is the video (a folder of frames, or a video file, as the `Media` it is
given finds them), and `convert_*` expands frame folders into one row per frame for `deepfake.data.convert`.
`deepfake.extraction` reads the same rows over video files.

Each function returns `(rows, notes)`: rows for every video found, and notes on what was listed but not found,
so a partly extracted dataset converts with a clear account instead of failing or hiding it. A layout that is
not recognisable raises DataError saying what was expected and what is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from deepfake.data.media import FRAMES, VIDEO_EXTENSIONS, Media, is_video
from deepfake.data.samples import Sample, list_images
from deepfake.errors import DataError

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
FFPP_LAYOUT = (
    "<root>/original_sequences/<source>/<compression>/{original} and "
    "<root>/manipulated_sequences/<method>/<compression>/{fake}, "
    "with the official split files train.json, val.json, test.json in <root>/splits or <root>"
)
CELEBDF_FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
CELEBDF_LAYOUT = (
    "<root>/{{Celeb-real,Celeb-synthesis,YouTube-real}}/{video} and <root>/List_of_testing_videos.txt"
)
DFDC_LAYOUT = "<root>/[<part>/]metadata.json with {video} in <root>/[<part>/]"
_SHOWN = 5

Converted = tuple[list[Sample], list[str]]


def ffpp_layout(media: Media) -> str:
    return FFPP_LAYOUT.format(
        original=media.entry.format(video="<video>"), fake=media.entry.format(video="<target>_<source>")
    )


def _entries(folder: Path) -> str:
    if not folder.is_dir():
        return f"{folder} does not exist"
    names = sorted(os.listdir(folder))
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} entries)" if len(names) > 12 else "")
    return f"{folder} holds: {shown or 'nothing'}"


def _listed_missing(kind: str, names: Sequence[str], where: Path, media: Media) -> str:
    shown = ", ".join(sorted(names)[:_SHOWN]) + (
        f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    )
    return f"{len(names)} video(s) listed in {kind} have no {media.noun} under {where}; left out: {shown}"


def expand_frames(videos: Sequence[Sample]) -> list[Sample]:
    """One row per image in each video's frame folder, with the video's fields."""
    return [replace(v, path=str(p)) for v in videos for p in list_images(Path(v.path))]


# --------------------------------------------------------------------------------------------- FF++ ---


def _ffpp_splits(root: Path, split_dir: Path | None) -> dict[str, list[tuple[str, str]]]:
    candidates = [split_dir] if split_dir else [root / "splits", root]
    for folder in candidates:
        files = {s: folder / f"{s}.json" for s in ("train", "val", "test")}
        if all(f.is_file() for f in files.values()):
            out: dict[str, list[tuple[str, str]]] = {}
            for split, f in files.items():
                try:
                    pairs = json.loads(f.read_text())
                    out[split] = [(str(a), str(b)) for a, b in pairs]
                except (ValueError, TypeError) as e:
                    raise DataError(
                        f"{f} is not an FF++ split file (a JSON list of [target, source] pairs): {e}"
                    ) from None
            return out
    where = split_dir or f"{root / 'splits'} or {root}"
    raise DataError(
        f"no FF++ split files in {where}: expected train.json, val.json and test.json (the official "
        "lists of video-id pairs from the FaceForensics++ repository, dataset/splits); pass --splits DIR"
    )


def _ffpp_index(pairs: dict[str, list[tuple[str, str]]]) -> tuple[dict[str, str], dict[str, str]]:
    """Each video id's split and identity group: a pair's two originals and both fakes share the pair's."""
    split_of: dict[str, str] = {}
    identity_of: dict[str, str] = {}
    for split, split_pairs in pairs.items():
        for a, b in split_pairs:
            group = f"{a}_{b}"
            for vid in (a, b, f"{a}_{b}", f"{b}_{a}"):
                split_of[vid], identity_of[vid] = split, group
    return split_of, identity_of


def ffpp_videos(
    root: Path,
    compression: str = "c23",
    methods: Sequence[str] | None = None,
    sources: Sequence[str] = ("youtube",),
    split_dir: Path | None = None,
    media: Media = FRAMES,
) -> Converted:
    """FaceForensics++ videos: labels from the tree, splits and identities from the official pair lists."""
    originals, manipulated = root / "original_sequences", root / "manipulated_sequences"
    if not originals.is_dir() and not manipulated.is_dir():
        raise DataError(f"not an FF++ tree: expected {ffpp_layout(media)}; {_entries(root)}")
    split_of, identity_of = _ffpp_index(_ffpp_splits(root, split_dir))
    if methods is None:
        methods = [m for m in FFPP_METHODS if (manipulated / m).is_dir()]
    parts = [(originals / s, s, 0) for s in sources] + [(manipulated / m, m, 1) for m in methods]
    rows: list[Sample] = []
    notes: list[str] = []
    found_compressions: set[str] = set()
    for folder, name, label in parts:
        if not folder.is_dir():
            raise DataError(
                f"FF++ folder {folder} is missing; expected {ffpp_layout(media)}; {_entries(folder.parent)}"
            )
        found_compressions.update(e.name for e in os.scandir(folder) if e.is_dir())
        videos = media.find(folder / compression)
        if not videos:
            notes.append(f"{folder / compression} holds no {media.noun}; {name} is left out")
            continue
        unsplit = [vid for vid in videos if vid not in split_of]
        rows.extend(
            Sample(path=str(vpath), label=label, video=f"{name}/{vid}", method=name, split=split_of[vid],
                   identity=identity_of[vid])
            for vid, vpath in videos.items() if vid in split_of
        )  # fmt: skip
        if unsplit:
            notes.append(
                f"{len(unsplit)} {name} video(s) are in no split file and were left out (e.g. {unsplit[0]})"
            )
        # The split files list the youtube originals and the pairs of the standard methods only.
        listed = (
            {v for v in split_of if ("_" in v) == bool(label)}
            if name in ("youtube", *FFPP_METHODS)
            else set()
        )
        absent = sorted(listed - set(videos))
        if absent:
            notes.append(
                _listed_missing(
                    "the split files", [f"{name}/{v}" for v in absent], folder / compression, media
                )
            )
    if not rows:
        raise DataError(_ffpp_empty(root, compression, found_compressions, media))
    return rows, notes


def _ffpp_empty(root: Path, compression: str, found: set[str], media: Media) -> str:
    have = ", ".join(sorted(found)) or "none"
    return (
        f"no {media.noun} for compression {compression!r} in the FF++ tree at {root} (compressions found: "
        f"{have}); pass --compression with one of those"
        + (", and extract frames first" if media is FRAMES else "")
        + f". Expected {ffpp_layout(media)}"
    )


def convert_ffpp(
    root: Path,
    compression: str = "c23",
    methods: Sequence[str] | None = None,
    sources: Sequence[str] = ("youtube",),
    split_dir: Path | None = None,
) -> Converted:
    """FaceForensics++ frame folders, one row per frame."""
    videos, notes = ffpp_videos(root, compression, methods, sources, split_dir)
    rows = expand_frames(videos)
    if not rows:
        raise DataError(_ffpp_empty(root, compression, {compression}, FRAMES))
    return rows, notes


# ----------------------------------------------------------------------------------------- Celeb-DF ---


def _celebdf_test_list(root: Path, media: Media) -> dict[str, int]:
    path = root / "List_of_testing_videos.txt"
    if not path.is_file():
        raise DataError(
            f"Celeb-DF test list {path} is missing; expected {CELEBDF_LAYOUT.format(video=media.entry)}; "
            f"{_entries(root)}"
        )
    listed: dict[str, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in ("0", "1"):
            raise DataError(f"{path} line {n}: expected '<1 real|0 fake> <folder>/<video>.mp4', got {line!r}")
        folder, _, name = fields[1].partition("/")
        listed[f"{folder}/{os.path.splitext(name)[0]}"] = 1 - int(fields[0])  # the list marks real as 1
    return listed


def celebdf_videos(root: Path, media: Media = FRAMES) -> Converted:
    """Celeb-DF v1/v2: videos in List_of_testing_videos.txt are the test split, the rest train."""
    layout = CELEBDF_LAYOUT.format(video=media.entry.format(video="<video>"))
    if not any((root / f).is_dir() for f in CELEBDF_FOLDERS):
        raise DataError(f"not a Celeb-DF tree: expected {layout}; {_entries(root)}")
    test = _celebdf_test_list(root, media)
    rows: list[Sample] = []
    for folder, label in CELEBDF_FOLDERS.items():
        for vid, vpath in media.find(root / folder).items():
            key = f"{folder}/{vid}"
            if key in test and test[key] != label:
                raise DataError(
                    f"{root / 'List_of_testing_videos.txt'} labels {key} as {'fake' if test[key] else 'real'} "
                    f"but it sits in {folder}; the tree or the list is broken"
                )
            # idX_0000 and idX_idY_0000 show target celebrity idX; YouTube-real videos have no known identity.
            identity = vid.split("_")[0] if folder != "YouTube-real" else ""
            rows.append(
                Sample(path=str(vpath), label=label, video=key, method=folder,
                       split="test" if key in test else "train", identity=identity)
            )  # fmt: skip
    if not rows:
        raise DataError(f"no {media.noun} found in the Celeb-DF tree at {root}; expected {layout}")
    absent = sorted(set(test) - {r.video for r in rows})
    notes = [_listed_missing("List_of_testing_videos.txt", absent, root, media)] if absent else []
    return rows, notes


def convert_celebdf(root: Path) -> Converted:
    """Celeb-DF frame folders, one row per frame."""
    videos, notes = celebdf_videos(root)
    rows = expand_frames(videos)
    if not rows:
        layout = CELEBDF_LAYOUT.format(video=FRAMES.entry.format(video="<video>"))
        raise DataError(f"no frames found in the Celeb-DF tree at {root}; expected {layout}")
    return rows, notes


# --------------------------------------------------------------------------------------------- DFDC ---


def _dfdc_metadata(meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("the top level is not an object")
    except ValueError as e:
        raise DataError(f"{meta_path} is not a DFDC metadata file ({{video: {{label, ...}}}}): {e}") from None
    return meta


def dfdc_videos(root: Path, media: Media = FRAMES) -> Converted:
    """DFDC: labels, splits and originals from every metadata.json (one per downloaded part)."""
    layout = DFDC_LAYOUT.format(video=media.entry.format(video="<video name>"))
    metas = (
        [root / "metadata.json"]
        if (root / "metadata.json").is_file()
        else sorted(root.glob("*/metadata.json"))
    )
    if not metas:
        raise DataError(f"no DFDC metadata.json found: expected {layout}; {_entries(root)}")
    rows: list[Sample] = []
    notes: list[str] = []
    for meta_path in metas:
        meta = _dfdc_metadata(meta_path)
        part = meta_path.parent
        prefix = "" if part == root else f"{part.name}/"
        videos = media.find(part)
        absent: list[str] = []
        for name, entry in sorted(meta.items()):
            stem = os.path.splitext(name)[0]
            label = str(entry.get("label", "")).upper() if isinstance(entry, dict) else ""
            if label not in ("REAL", "FAKE"):
                raise DataError(
                    f"{meta_path}: entry {name!r} has label {label or None!r}; expected REAL or FAKE"
                )
            if stem not in videos:
                absent.append(stem)
                continue
            fake = label == "FAKE"
            original = os.path.splitext(str(entry.get("original") or ""))[0]
            rows.append(
                Sample(path=str(videos[stem]), label=int(fake), video=f"{prefix}{stem}",
                       method="DFDC" if fake else "real",
                       split=str(entry.get("split") or entry.get("set") or "train"),
                       identity=f"{prefix}{original if fake and original else stem}")
            )  # fmt: skip
        if absent:
            notes.append(_listed_missing(str(meta_path), absent, part, media))
        unlisted = sorted(set(videos) - {os.path.splitext(n)[0] for n in meta})
        if unlisted:
            notes.append(f"{len(unlisted)} {media.noun} in {part} are not in {meta_path.name}; left out: "
                         f"{', '.join(unlisted[:_SHOWN])}")  # fmt: skip
    if not rows:
        raise DataError(
            f"no {media.noun} found for the videos in {', '.join(map(str, metas))}; expected {layout}"
        )
    return rows, notes


def convert_dfdc(root: Path) -> Converted:
    """DFDC frame folders, one row per frame."""
    videos, notes = dfdc_videos(root)
    rows = expand_frames(videos)
    if not rows:
        layout = DFDC_LAYOUT.format(video=FRAMES.entry.format(video="<video name>"))
        raise DataError(f"no frames found for the videos of the DFDC tree at {root}; expected {layout}")
    return rows, notes


# ------------------------------------------------------------------------------------------- folder ---

FOLDER_VIDEO_LAYOUT = "<root>/[{train,val,test}/]{real,fake}/**/<video>.mp4"


def folder_videos(
    root: Path,
    real_dirs: Sequence[str] = ("real",),
    fake_dirs: Sequence[str] = ("fake",),
    splits: Sequence[str] = ("train", "val", "test"),
) -> Converted:
    """Video files under class folders, inside split folders when there are any (else with no split).

    As in the frame folder layout, a file's path under its class folder names the video, and a first
    sub-folder (`fake/<method>/<video>.mp4`) names the method.
    """
    present = [s for s in splits if (root / s).is_dir()]
    bases = [(root / s, s) for s in present] or [(root, "")]
    rows: list[Sample] = []
    for base, split in bases:
        for label, class_dirs in ((0, real_dirs), (1, fake_dirs)):
            for name in class_dirs:
                class_dir = base / name
                for dirpath, dirnames, filenames in os.walk(class_dir):
                    dirnames.sort()
                    for f in sorted(filenames):
                        if not is_video(f):
                            continue
                        rel = (Path(dirpath) / f).relative_to(class_dir)
                        video = f"{name}/{rel.with_suffix('').as_posix()}"
                        method = rel.parts[0] if len(rel.parts) >= 2 else name
                        rows.append(Sample(path=str(Path(dirpath) / f), label=label, video=video,
                                           method=method, split=split))  # fmt: skip
    if not rows:
        raise DataError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {root}; expected "
                        f"{FOLDER_VIDEO_LAYOUT}; {_entries(root)}")  # fmt: skip
    return rows, []
