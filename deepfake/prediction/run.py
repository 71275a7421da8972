"""predict.py's video half: settings, detector and scorer once per run, then each video to its row (and its extras)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from deepfake.evaluation.inference import LoadedDetector
from deepfake.extraction.face_finder import FaceFinder, build_finder, detector_threads
from deepfake.prediction.explanations import Explainer
from deepfake.prediction.preview import overlay_masks, preview_dir, sheet_name, write_preview
from deepfake.prediction.rows import Scored, frame_rows, video_row
from deepfake.prediction.score import Scorer, clip_scorer
from deepfake.prediction.videos import Aggregation, predict_videos
from deepfake.system.thread_probe import ThreadTuner, paced

log = logging.getLogger("deepfake")


@contextlib.contextmanager
def cpu_threads(detector: FaceFinder, settings: DictConfig, workers: int) -> Iterator[ThreadTuner]:
    """As extract.py: a CPU MTCNN starts with the cores the decoders leave and times the counts over the first
    videos (`detector_threads`); the classifying thread starts with the count it first sees. Restored after."""
    threads = torch.get_num_threads()
    try:
        yield detector_threads(detector, settings.detector.threads, workers)
    finally:
        torch.set_num_threads(threads)


class VideoRows:
    """predict.py's video half for a whole run: the crop settings, face finder, aggregation and scorer are set
    up once; `rows(paths)` gives each video's `Scored` in order (previews and explanations written as they
    come).

    `clip` > 1: `score` is a clip model's, and each video's crops are scored together as one clip. Use it as a
    context manager: on the CPU the face finder starts with the cores the decoders leave and times the counts
    over the first videos while it is open.
    """

    def __init__(
        self,
        cfg: DictConfig,
        loaded: LoadedDetector,
        settings: DictConfig,
        score: Scorer,
        clip: int,
        device: torch.device,
        workers: int,
        output: Path,
        resumed: bool = False,
        explainer: Explainer | None = None,
    ) -> None:
        self.cfg, self.loaded, self.settings, self.device, self.output = cfg, loaded, settings, device, output
        self.explainer = explainer
        f = settings.faces
        log.info("cropping videos as extracted: %d frames, %s detector, margin %g, %d px, align %s, %s face(s)",
                 settings.frames_per_video, settings.detector.kind, f.margin, f.size, f.align, f.policy)  # fmt: skip
        self.detector = build_finder(settings.detector)
        self.agg = Aggregation(cfg.aggregation.faces, cfg.aggregation.frames, cfg.aggregation.k)
        self.workers = workers
        self.score, self.batch_size = score, cfg.batch_size
        if clip > 1:
            self.score, self.batch_size = clip_scorer(score, clip), sys.maxsize  # a video's crops in one call
        # A resumed run's sheets keep their names: it never writes over another video's sheet.
        folder = preview_dir(output)
        self.taken = (
            {p.name for p in folder.iterdir()} if resumed and cfg.preview and folder.is_dir() else set()
        )
        self._threads = contextlib.ExitStack()
        self.checkpoint = _checkpoint_name(loaded.path)
        self.tuner: ThreadTuner | None = None

    def __enter__(self) -> VideoRows:
        self.tuner = self._threads.enter_context(cpu_threads(self.detector, self.settings, self.workers))
        return self

    def __exit__(self, *exc: object) -> None:
        self._threads.close()

    def rows(self, paths: Sequence[str]) -> Iterator[Scored]:
        """Each video's row, per-face rows (per_frame=true) and seconds, in `paths` order."""
        cfg, workers = self.cfg, min(self.workers, len(paths))
        explain = self.explainer.video if self.explainer is not None else None
        results = predict_videos(
            paths, self.settings, self.detector, self.score, self.agg, self.device, workers, self.batch_size,
            explain,
        )  # fmt: skip
        for result in paced(results, self.tuner, units=lambda r: max(1, r.frames_decoded)):
            if cfg.preview and result.status != "error":
                if explain is None:  # an explanation's overlay already shows a mask head's mask beside it
                    overlay_masks(result, self.loaded.model, self.device)
                name = sheet_name(result.path, self.taken)
                sheet = write_preview(result, preview_dir(self.output), name, cfg.threshold, self.checkpoint)
                log.info("preview of %s: %s", result.path, sheet)
            frames = frame_rows(result) if cfg.per_frame else []
            row = video_row(result, cfg.threshold, cfg.no_face_prob)
            yield Scored(row, frames, result.seconds, result.frames_decoded)


def _checkpoint_name(path: Path) -> str:
    """A checkpoint as a sheet names it: `<run>/checkpoints/best.pt` reads `<run>/best.pt`, short enough to fit."""
    return f"{path.parent.parent.name}/{path.name}" if path.parent.name == "checkpoints" else path.name
