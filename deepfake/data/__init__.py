"""Datasets, transforms and loaders; every source becomes manifest rows, images stay uint8.

May import: the ground floor, `deepfake.system` and `deepfake.runs` (atomic writes). Owns the samplers,
sharded ones included (`dataset.ShardedSampler`), so system code needs no data code.
"""

import warnings

# torchvision 0.29 flags its JPEG codec in favour of TorchCodec, yet it is the codec the JPEG augmentation
# and the nvjpeg batch decoder need; the notice would repeat in every loader worker.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")

from deepfake.data.module import DataModule  # noqa: E402

__all__ = ["DataModule"]
