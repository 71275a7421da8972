"""Fully synthetic image datasets as manifest rows: the GenImage and ForenSynths/UnivFD folder layouts.

A generator is a method (`Sample.method`), its real images included: both layouts pair each generator's fakes
with real images in the generator's own folder, so per-generator metrics rank a generator's fakes against its own
reals, and `data.train_methods=[<generator>]` takes the generator whole (`deepfake.data.methods`). A folder of
reals alone (UnivFD's `laion/0_real`) is a method without fakes: its reals are shared by the set's other methods.

GenImage ships train and val only, and its val is what the papers test on: val rows get the split "test", and
the DataModule carves validation for model selection out of train (`data.val_fraction`), saying so in the log.
Every image is its own video (no video grouping exists), keyed by its path under the root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from deepfake.data.samples import Sample, list_images
from deepfake.errors import DataError

GENIMAGE_LAYOUT = "<root>/<generator>/[<subfolder>/]{train,val}/{ai,nature}/<image>"
FORENSYNTHS_LAYOUT = "<root>/[{train,val,test}/]<generator>/[<class>/]{0_real,1_fake}/<image>"
GENIMAGE_CLASSES = {"nature": 0, "ai": 1}
FORENSYNTHS_CLASSES = {"0_real": 0, "1_fake": 1}
#: GenImage's folders and the splits they are: its val is the benchmark's test set.
GENIMAGE_SPLITS = {"train": "train", "val": "test"}
SPLIT_DIRS = ("train", "val", "test")
GENIMAGE_NOTE = (
    "GenImage ships train and val only, and its val is the papers' test set: it is the test split here, and "
    "validation for model selection is carved from train (data.val_fraction)"
)
_DEPTH = 5  # levels searched below the root for a layout's class folders

Read = tuple[list[Sample], list[str]]


def _subdirs(folder: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]


def _has(folder: Path, names: Sequence[str]) -> bool:
    return any((folder / n).is_dir() for n in names)


def _genimage_container(folder: Path) -> bool:
    """A folder holding GenImage's split folders: `train/` or `val/` with `ai/` or `nature/` inside."""
    return any(_has(folder / s, tuple(GENIMAGE_CLASSES)) for s in GENIMAGE_SPLITS)


def detect_layout(root: Path) -> str | None:
    """`genimage` or `forensynths` from the first class folders met breadth-first (at most five levels down),
    or None. Class folders themselves are never listed, so a million images cost nothing here."""
    frontier = [root]
    for _ in range(_DEPTH):
        deeper: list[Path] = []
        for folder in frontier:
            children = _subdirs(folder)
            names = {c.name for c in children}
            if folder.name in GENIMAGE_SPLITS and names & set(GENIMAGE_CLASSES):
                return "genimage"
            if names & set(FORENSYNTHS_CLASSES):
                return "forensynths"
            deeper += children
        frontier = deeper
    return None


def generator_rows(root: Path, layout: str = "auto") -> tuple[list[Sample], list[str], str]:
    """(rows, notes, layout) of a generators folder; `layout` auto looks, genimage or forensynths is taken."""
    if not root.is_dir():
        raise DataError(
            f"data.root={root} does not exist or is not a folder; expected GenImage ({GENIMAGE_LAYOUT}) or "
            f"ForenSynths/UnivFD ({FORENSYNTHS_LAYOUT})"
        )
    found = detect_layout(root) if layout == "auto" else layout
    if found == "genimage":
        rows, notes = genimage_rows(root)
    elif found == "forensynths":
        rows, notes = forensynths_rows(root)
    else:
        raise DataError(
            f"{root} is neither a GenImage tree ({GENIMAGE_LAYOUT}) nor a ForenSynths/UnivFD one "
            f"({FORENSYNTHS_LAYOUT}): no ai/nature or 0_real/1_fake folders within {_DEPTH} levels; "
            f"{_entries(root)}"
        )
    return rows, notes, found


def _genimage_generators(root: Path) -> dict[str, Path]:
    """{generator: the folder holding its train/val}; GenImage's download nests one folder deeper
    (`stable_diffusion_v_1_4/imagenet_ai_0419_sdv4/train`), which is looked through."""
    if _genimage_container(root):
        return {root.name: root}
    found: dict[str, Path] = {}
    for generator in _subdirs(root):
        if _genimage_container(generator):
            found[generator.name] = generator
            continue
        inner = [c for c in _subdirs(generator) if _genimage_container(c)]
        if len(inner) == 1:
            found[generator.name] = inner[0]
        else:  # several sets under one folder: each is a generator of its own
            found.update({f"{generator.name}/{c.name}": c for c in inner})
    return found


def genimage_rows(root: Path) -> Read:
    """GenImage: `ai` fakes and `nature` reals per generator; train stays train, val becomes test."""
    generators = _genimage_generators(root)
    rows: list[Sample] = []
    notes = [GENIMAGE_NOTE]
    for name, base in generators.items():
        for folder, split in GENIMAGE_SPLITS.items():
            for cls, label in GENIMAGE_CLASSES.items():
                images = list_images(base / folder / cls)
                if not images:
                    notes.append(f"GenImage {name} has no images in {base / folder / cls}")
                rows.extend(
                    Sample(
                        path=str(p),
                        label=label,
                        video=p.relative_to(root).as_posix(),
                        method=name,
                        split=split,
                    )
                    for p in images
                )
    if not rows:
        raise DataError(
            f"no images in the GenImage tree at {root}; expected {GENIMAGE_LAYOUT}; {_entries(root)}"
        )
    return rows, notes


def _forensynths_sets(folder: Path) -> list[tuple[str, Path]]:
    """(generator, folder holding 0_real/1_fake) under a generators folder: `<generator>/` or
    `<generator>/<class>/`; a folder that holds the class folders itself is one generator."""
    if _has(folder, tuple(FORENSYNTHS_CLASSES)):
        return [(folder.name, folder)]
    found: list[tuple[str, Path]] = []
    for generator in _subdirs(folder):
        if _has(generator, tuple(FORENSYNTHS_CLASSES)):
            found.append((generator.name, generator))
        else:
            found += [(generator.name, c) for c in _subdirs(generator) if _has(c, tuple(FORENSYNTHS_CLASSES))]
    return found


def forensynths_rows(root: Path) -> Read:
    """ForenSynths/UnivFD: `<root>/{train,val,test}/<generator>/...` gives those splits; a generators folder
    without split folders (a test set such as CNNDetection's or UnivFD's diffusion_datasets) gives unsplit rows."""
    splits = [s for s in SPLIT_DIRS if (root / s).is_dir() and _forensynths_sets(root / s)]
    parts = [(root / s, s) for s in splits] or [(root, "")]
    rows: list[Sample] = []
    notes: list[str] = []
    for base, split in parts:
        for generator, folder in _forensynths_sets(base):
            for cls, label in FORENSYNTHS_CLASSES.items():
                rows.extend(
                    Sample(path=str(p), label=label, video=p.relative_to(root).as_posix(), method=generator,
                           split=split)
                    for p in list_images(folder / cls)
                )  # fmt: skip
    if not rows:
        raise DataError(
            f"no images in the ForenSynths/UnivFD tree at {root}; expected {FORENSYNTHS_LAYOUT}; {_entries(root)}"
        )
    if not splits:
        notes.append(f"{root} has no train/val/test folders: its rows have no split (a test set)")
    return rows, notes


def _entries(folder: Path) -> str:
    names = sorted(p.name for p in _subdirs(folder))
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} folders)" if len(names) > 12 else "")
    return f"{folder} holds the folders: {shown or 'none'}"
