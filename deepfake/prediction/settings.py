"""The crop settings a prediction uses: command line over the checkpoint's `extraction` over extract.py's
defaults, so a video is cropped as the training faces were."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deepfake.evaluation.inference import LoadedDetector
from deepfake.extraction.bounds import MAX_SIDE, TIMEOUT_S
from deepfake.extraction.config import DetectorConfig, FacesConfig
from deepfake.extraction.settings import checked

log = logging.getLogger("deepfake")


def crop_settings(loaded: LoadedDetector, overrides: DictConfig) -> DictConfig:
    """{frames_per_video, decode_max_side, timeout_s, detector, faces} shaped like extract.py's config (so
    `build_finder` takes its detector section); `overrides` holds the command line's keys, null where not
    given. The time limit is the command line's or extract.py's default, never the checkpoint's."""
    base = OmegaConf.create(
        {
            "frames_per_video": 32,
            "decode_max_side": MAX_SIDE,
            "timeout_s": TIMEOUT_S,
            "detector": OmegaConf.structured(DetectorConfig),
            "faces": OmegaConf.structured(FacesConfig),
        }
    )
    saved = loaded.checkpoint.get("extraction")
    layers: list[Any] = [base]
    if saved is not None:
        layers.append(checked(saved, f"{loaded.path} ('extraction')"))
    else:
        log.info("%s holds no extraction settings (trained before extract.py saved them, or not on "
                 "extracted faces): cropping with extract.py's defaults", loaded.path)  # fmt: skip
    given = OmegaConf.to_container(overrides, resolve=True)
    layers.append(_not_null(given))
    merged = OmegaConf.merge(*layers)
    # The merged values pass the same checks as a saved file's: a bad override is refused the same way.
    checked(OmegaConf.to_container(merged, resolve=True), "the command line")
    return merged


def _not_null(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _not_null(v) for k, v in node.items() if v is not None and _not_null(v) != {}}
    return node
