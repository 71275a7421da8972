"""The one internal dataset form: a list of samples (path, label, video, method).

Folder layouts are scanned into this form, so every loader, metric and check sees the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepfake.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
FOLDER_LAYOUT = (
    "<root>/{train,val,test}/{real,fake}/**/<image>.jpg|.png|.webp, for example "
    "<root>/train/real/000/0001.png and <root>/train/fake/Deepfakes/000_003/0001.png"
)


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # 1 = fake, 0 = real
    video: str  # unique across classes and methods
    method: str  # manipulation method, or the class folder's name when there is none


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
            found = [_sample(p, class_dir, name, label) for p in sorted(class_dir.rglob("*")) if _is_image(p)]
            if not found:
                raise DataError(
                    f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    f"add images or remove it from data.{'fake' if label else 'real'}_dirs"
                )
            samples.extend(found)
    return samples


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _sample(path: Path, class_dir: Path, class_name: str, label: int) -> Sample:
    rel = path.relative_to(class_dir)
    parent = rel.parent.as_posix()
    # The parent folder relative to the class folder is the video; a loose image is a video of its own.
    video = f"{class_name}/{parent}" if parent != "." else f"{class_name}/{rel.stem}"
    method = rel.parts[0] if len(rel.parts) >= 3 else class_name
    return Sample(path=str(path), label=label, video=video, method=method)
