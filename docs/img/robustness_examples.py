"""Regenerate docs/img/robustness_examples.png: the astronaut's face under the DeeperForensics-1.0 protocol.

    python docs/img/robustness_examples.py

Eight 256 px crops of a window panning over scikit-image's astronaut make one "video" (VC encodes them as one
clip; BW puts 1 x p blocks on a 256 px crop); the first crop's row of every type is drawn at levels 1-5 by the
same code as `evaluate.py perturb=deeperforensics perturb.examples=1`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image
from skimage import data

from deepfake.data.samples import Sample
from deepfake.perturbations.protocol import DEEPERFORENSICS, settings
from deepfake.reporting.robustness import save_examples

OUT = Path(__file__).resolve().parent / "robustness_examples.png"


def main() -> None:
    photo = Image.fromarray(data.astronaut())
    with tempfile.TemporaryDirectory() as tmp:
        frames = []
        for i in range(8):
            x, y, side = 150 + 3 * i, 40 + i, 150
            path = Path(tmp) / "astronaut" / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo.resize((256, 256), Image.BILINEAR, box=(x, y, x + side, y + side)).save(path)
            frames.append(Sample(str(path), 0, "astronaut", "real"))
        grid = save_examples(Path(tmp) / "examples", frames, settings(DEEPERFORENSICS, [1, 2, 3, 4, 5]), 0, 1,
                             "DeeperForensics-1.0 perturbations, levels 1-5 (skimage's astronaut, 256 px crops)")  # fmt: skip
        with Image.open(grid) as im:  # 256 colours: a third of the bytes, for the repository only
            im.convert("RGB").quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                OUT, optimize=True
            )
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
