"""The videos to extract: a dataset layout's rows over video files, this shard's slice, FF++ box sources.

Labels, splits, methods and identities come from `deepfake.data.layouts`, the code the frame converters use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from deepfake.data.layouts import (
    celebdf_videos,
    dfdc_videos,
    ffpp_videos,
    folder_videos,
)
from deepfake.data.media import VIDEOS
from deepfake.data.samples import Sample
from deepfake.errors import DataError
from deepfake.extraction.masks import ffpp_mask_video


@dataclass(frozen=True)
class Job:
    """One video: its layout row (path = the file), its path under the root, and whose boxes it may reuse."""

    sample: Sample
    rel: str  # posix path relative to the dataset root: the key in videos.csv and the crops' folder
    box_source: str | None = None  # FF++ fakes: rel of the original they are frame-aligned with
    mask_video: str | None = None  # FF++ fakes with dataset.masks: their mask video (absolute path)


def list_videos(ds: DictConfig, root: Path) -> tuple[list[Job], list[str]]:
    """Every video of the layout, sorted by path, with the layout's notes on listed-but-missing videos."""
    if not root.is_dir():
        raise DataError(
            f"root={root} does not exist or is not a folder; pass the downloaded dataset's folder"
        )
    if ds.kind == "ffpp":
        split_dir = Path(ds.splits_dir) if ds.splits_dir else None
        rows, notes = ffpp_videos(root, ds.compression, ds.methods, list(ds.sources), split_dir, VIDEOS)
    elif ds.kind == "celebdf":
        rows, notes = celebdf_videos(root, VIDEOS)
    elif ds.kind == "dfdc":
        rows, notes = dfdc_videos(root, VIDEOS)
    else:
        rows, notes = folder_videos(root, list(ds.real_dirs), list(ds.fake_dirs))
    rel = {r.path: Path(r.path).relative_to(root).as_posix() for r in rows}
    _refuse_shared_keys(sorted(rel.values()))
    by_video = {r.video: rel[r.path] for r in rows}  # FF++ video ids are unique
    jobs = []
    for r in rows:
        source = None
        if ds.kind == "ffpp" and ds.reuse_source_boxes and r.label == 1:
            # A fake <target>_<source> shows the frames of original <target> with another face swapped in.
            target = r.video.split("/", 1)[1].split("_")[0]
            source = next((by_video[k] for k in (f"{s}/{target}" for s in ds.sources) if k in by_video), None)
        jobs.append(Job(r, rel[r.path], source, _mask_source(ds, root, rel[r.path], r.label)))
    unmasked = [j.rel for j in jobs if ds.kind == "ffpp" and ds.masks and j.sample.label and not j.mask_video]
    if unmasked:
        notes = [*notes, f"{len(unmasked)} fake(s) have no mask video (e.g. {ffpp_mask_video(unmasked[0])} for "
                         f"{unmasked[0]}): their crops get no mask"]  # fmt: skip
    return sorted(jobs, key=lambda j: j.rel), notes


def _refuse_shared_keys(rels: list[str]) -> None:
    """Two files whose paths differ only by extension (dup.mp4, dup.mkv) would share one crops folder and one
    video id: the second would replace the first's crops. Refused, naming both."""
    by_key: dict[str, list[str]] = {}
    for rel in rels:
        by_key.setdefault(os.path.splitext(rel)[0], []).append(rel)
    clashes = [files for files in by_key.values() if len(files) > 1]
    if clashes:
        shown = "; ".join(" and ".join(files) for files in clashes[:5])
        raise DataError(
            f"{len(clashes)} video name(s) differ only by extension, and would share one crops folder and video "
            f"id: {shown}; rename or move one of each (e.g. dup.mkv -> dup_2.mkv)"
        )


def _mask_source(ds: DictConfig, root: Path, rel: str, label: int) -> str | None:
    """An FF++ fake's mask video with `dataset.masks`, when it exists."""
    if ds.kind != "ffpp" or not ds.masks or label != 1:
        return None
    mask = ffpp_mask_video(rel)
    return str(root / mask) if mask is not None and (root / mask).is_file() else None


def shard_slice(jobs: list[Job], index: int, count: int) -> list[Job]:
    """A deterministic slice: groups (a video with the fakes reusing its boxes) dealt round-robin in path order.

    A fake stays in its original's shard, after it, so the original's boxes are on disk when it is reached.
    """
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.box_source or job.rel, []).append(job)
    mine = [groups[key] for key in sorted(groups)[index::count]]
    return [job for group in mine for job in sorted(group, key=lambda j: (j.box_source is not None, j.rel))]
