"""Face finders behind one small protocol: MTCNN (weights in facenet-pytorch's wheel) and OpenCV's YuNet.

Named finders, not detectors, so they cannot be mistaken for the deepfake detector (`deepfake.model`); the
config section that picks one is still `detector` (extract.py's `detector=mtcnn|yunet`). A finder takes a
batch of same-sized RGB frames and returns, per frame, its faces as `Detection`s in that frame's pixels.
`detect_downscaled` runs any finder on copies no larger than `max_side`, and no larger than needed for the
smallest face asked for to appear at the finder's own smallest size, then maps the boxes and landmarks back:
a 1080p frame does not need 1080p detection, and the finder's cost follows the faces sought.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from deepfake.errors import ConfigError
from deepfake.system.thread_probe import ThreadChooser, ThreadTuner, candidate_counts
from deepfake.system.threads import available_cores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """One face: box (x1, y1, x2, y2), confidence, and 5 landmarks (eyes, nose, mouth corners; x, y)."""

    box: np.ndarray
    score: float
    landmarks: (
        np.ndarray | None
    )  # (5, 2): image-left eye, image-right eye, nose, left and right mouth corners

    def scaled(self, factor: float) -> Detection:
        lm = None if self.landmarks is None else self.landmarks * factor
        return Detection(self.box * factor, self.score, lm)


class FaceFinder(Protocol):
    """What extraction and prediction need from a face finder."""

    name: str
    min_face: int  # the smallest face, in pixels of its input, it finds reliably

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces of each RGB uint8 frame (all frames the same size)."""
        ...


def detect_downscaled(
    detector: FaceFinder,
    frames: Sequence[np.ndarray],
    max_side: int,
    min_face: float,
    batch_size: int,
) -> list[list[Detection]]:
    """Detect in batches on copies downscaled by the larger of longer side / `max_side` (0: no cap) and
    `min_face` (frame pixels) / the detector's `min_face`; boxes and landmarks come back in frame pixels.
    Runs of same-sized frames are batched together (a stream may change size mid-way)."""
    found: list[list[Detection]] = []
    for _, run in itertools.groupby(frames, key=lambda f: f.shape):
        same = list(run)
        h, w = same[0].shape[:2]
        factor = max(1.0, max(h, w) / max_side if max_side else 1.0, min_face / detector.min_face)
        if min(h, w) / factor < detector.min_face:  # no face of the smallest size sought fits in the frame
            found.extend([] for _ in same)  # (MTCNN's image pyramid would be empty: an error, not "no face")
            continue
        if factor > 1.0:
            size = (round(w / factor), round(h / factor))
            same = [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in same]
        for i in range(0, len(same), batch_size):
            faces = detector.detect(same[i : i + batch_size])
            found.extend(faces if factor == 1.0 else [[d.scaled(factor) for d in f] for f in faces])
    return found


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"detector.device={device} but no CUDA GPU is visible; use detector.device=auto")
    return torch.device(device)


class MtcnnFinder:
    """MTCNN from facenet-pytorch 2.5.x: a whole batch of frames in one call, on the GPU when there is one."""

    name = "mtcnn"
    min_face = 20  # facenet-pytorch's default min_face_size; its P-net window is 12 px

    def __init__(self, device: str = "auto", thresholds: Sequence[float] = (0.85, 0.95, 0.95)) -> None:
        from facenet_pytorch import MTCNN

        self.device = resolve_device(device)
        self.model = MTCNN(
            keep_all=True,
            device=self.device,
            min_face_size=self.min_face,
            thresholds=list(thresholds),
            post_process=False,
        )
        if self.device.type == "cpu":
            # Channels-last weights make every conv output channels-last, and the CPU max-pool of P-, R- and
            # O-net then takes the fast path (4-16x faster than NCHW: a third of MTCNN's time went to pooling);
            # the boxes differ from NCHW's by float rounding only (< 1e-4 px).
            self.model.to(memory_format=torch.channels_last)

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        # facenet permutes its NHWC input to NCHW; handing it an NHWC view of NCHW memory makes that permute
        # contiguous, so its per-box crops resize on the fast path (channels-last views take ~60x longer on
        # the CPU, where the R-/O-net stages crop and resize every candidate box one by one).
        batch = torch.from_numpy(np.stack(frames)).to(self.device)
        batch = batch.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
        with torch.inference_mode():
            boxes, probs, points = self.model.detect(batch, landmarks=True)
        out: list[list[Detection]] = []
        # With numpy 2, detect() returns object arrays holding None for frames without a face.
        for b, p, lm in zip(boxes, probs, points, strict=True):
            if b is None:
                out.append([])
                continue
            b = np.asarray(b, np.float32).reshape(-1, 4)
            p = np.asarray(p, np.float32).reshape(-1)
            lm = np.asarray(lm, np.float32).reshape(-1, 5, 2)
            out.append([Detection(b[i], float(p[i]), lm[i]) for i in range(len(b))])
        return out


class YunetFinder:
    """OpenCV's FaceDetectorYN with a YuNet `.onnx` file the user supplies (OpenCV's model zoo ships it)."""

    name = "yunet"
    min_face = 10  # YuNet's smallest anchors

    def __init__(
        self, model: str | None, score_threshold: float = 0.6, nms_threshold: float = 0.3, top_k: int = 50
    ) -> None:
        if not model or not os.path.isfile(model):
            raise ConfigError(
                f"detector.model={model} is not a file: detector=yunet needs a YuNet model, e.g. "
                "face_detection_yunet_2023mar.onnx from github.com/opencv/opencv_zoo, passed as "
                "detector.model=/path/to/face_detection_yunet_2023mar.onnx"
            )
        try:
            import cv2
        except ImportError:
            raise ConfigError(
                "detector=yunet needs OpenCV: pip install opencv-python-headless (or pip install 'deepfake[bench]')"
            ) from None
        self._cv2 = cv2
        self.model = cv2.FaceDetectorYN.create(model, "", (320, 320), score_threshold, nms_threshold, top_k)

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        out: list[list[Detection]] = []
        for frame in frames:
            h, w = frame.shape[:2]
            self.model.setInputSize((w, h))
            _, faces = self.model.detect(self._cv2.cvtColor(frame, self._cv2.COLOR_RGB2BGR))
            found = []
            for row in faces if faces is not None else []:
                x, y, bw, bh = (float(v) for v in row[:4])
                # YuNet's order (subject's right eye first) is MTCNN's image-left eye first.
                landmarks = np.asarray(row[4:14], np.float32).reshape(5, 2)
                found.append(
                    Detection(np.array([x, y, x + bw, y + bh], np.float32), float(row[14]), landmarks)
                )
            out.append(found)
        return out


def build_finder(cfg: DictConfig) -> FaceFinder:
    """The face finder an extraction config's `detector` section names (extract.py and predict.py alike)."""
    if cfg.kind == "yunet":
        return YunetFinder(cfg.model, cfg.score_threshold)
    return MtcnnFinder(cfg.device, list(cfg.thresholds))


def detector_threads(detector: FaceFinder, pinned: int | None, workers: int) -> ThreadTuner:
    """The finding thread's intra-op count: on the CPU MTCNN starts with the cores the decoders leave and then
    times the candidate counts over the first videos (its many small per-box ops often run faster on fewer
    threads); `detector.threads` pins it. Elsewhere (a GPU, YuNet's OpenCV) torch's count is left alone."""
    if not (isinstance(detector, MtcnnFinder) and detector.device.type == "cpu"):
        return ThreadTuner(None, "video", "frame")
    cores = available_cores()
    start = pinned or max(1, cores - workers)
    torch.set_num_threads(start)
    candidates = candidate_counts(cores, None, start)
    if pinned or len(candidates) < 2:
        log.info(
            "CPU threads for detection: %d (%s)",
            start,
            f"detector.threads={pinned}" if pinned else "one core",
        )
        return ThreadTuner(None, "video", "frame")
    log.info("CPU threads for detection: %d to start (%d core(s) - %d decode worker(s)), then timed against %s",
             start, cores, workers, ", ".join(map(str, candidates)))  # fmt: skip
    return ThreadTuner(ThreadChooser(candidates, start), "video", "frame")
