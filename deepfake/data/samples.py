"""The one internal dataset form: manifest rows (path, label, split, video, method, identity, mask).

Folder layouts and the dataset converters all produce these rows, so every loader, metric and check sees
the same records whether they came from a CSV manifest or a folder scan.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deepfake.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
FOLDER_LAYOUT = (
    "<root>/{train,val,test}/{real,fake}/**/<image>.jpg|.png|.webp, for example "
    "<root>/train/real/000/0001.png and <root>/train/fake/Deepfakes/000_003/0001.png"
)


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # 1 = fake, 0 = real
    video: str  # unique across classes and methods
    method: str  # manipulation method for fakes; the source (or class folder) for reals
    split: str = ""  # train / val / test as named in the manifest; empty when the source has none
    identity: str = ""  # group that must stay within one split (FF++: the video pair); empty if unknown
    mask: str = (
        ""  # a fake's manipulation mask, an image aligned with the face crop (FF++'s masks); empty if unknown
    )


def is_image(path: str | Path) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Images anywhere under folder, sorted; os.walk, not Path.rglob, because FF++ holds millions of frames."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_image(f))
    return found


def scan_split(root: Path, split_dir: str, real_dirs: list[str], fake_dirs: list[str]) -> list[Sample]:
    """Scan `<root>/<split_dir>/<class dir>/**` into samples; every class folder must hold images."""
    base = root / split_dir
    if not base.is_dir():
        raise DataError(f"split folder {base} does not exist. Expected layout: {FOLDER_LAYOUT}")
    samples: list[Sample] = []
    for label, class_dirs in ((0, real_dirs), (1, fake_dirs)):
        for name in class_dirs:
            class_dir = base / name
            if not class_dir.is_dir():
                raise DataError(
                    f"class folder {class_dir} does not exist (set data.real_dirs / data.fake_dirs "
                    f"to your folder names). Expected layout: {FOLDER_LAYOUT}"
                )
            found = [_sample(p, class_dir, name, label, split_dir) for p in list_images(class_dir)]
            if not found:
                raise DataError(
                    f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    f"add images or remove it from data.{'fake' if label else 'real'}_dirs"
                )
            samples.extend(found)
    return samples


def scan_folder(
    root: Path | None,
    folders: Iterable[str],
    real_dirs: Iterable[str] = ("real",),
    fake_dirs: Iterable[str] = ("fake",),
    required: Iterable[str] = ("train", "val"),
) -> list[Sample]:
    """The folder layout as manifest rows whose split is the split folder's name; unrequired ones may be absent."""
    if root is None or not root.is_dir():
        raise DataError(
            f"data.root={root} does not exist or is not a folder. Expected layout: {FOLDER_LAYOUT}"
        )
    rows: list[Sample] = []
    required = set(required)
    for folder in dict.fromkeys(folders):
        if folder in required or (root / folder).is_dir():
            rows.extend(scan_split(root, folder, list(real_dirs), list(fake_dirs)))
    return rows


def _sample(path: Path, class_dir: Path, class_name: str, label: int, split: str) -> Sample:
    rel = path.relative_to(class_dir)
    parent = rel.parent.as_posix()
    # The parent folder relative to the class folder is the video. A loose image is a video of its own, keyed by
    # its path under the root: `0001.png` in train and in val are different images, not a leaked video.
    video = f"{class_name}/{parent}" if parent != "." else f"{split}/{class_name}/{rel.as_posix()}"
    method = rel.parts[0] if len(rel.parts) >= 3 else class_name
    return Sample(path=str(path), label=label, video=video, method=method, split=split)
