"""The end of a run on best.pt's validation predictions: the temperature (`calibration=temperature`) and the
validation threshold for `eval.target_fpr`.

The observer runs when the loop ends normally, before the metrics file and the exit backup (which then hold
the result). The fit needs best.pt's validation logits (with `eval.tta`, as validation did): the run keeps
those of its best epoch, which were computed from exactly best.pt's weights; only when this process did not
validate that epoch (a resume after it) does every rank load best.pt and predict its validation shard again.
Rank 0 fits the temperature on the logits (`deepfake.evaluation.calibration`) and chooses the operating point
(`deepfake.evaluation.operating_point`), writes them into best.pt as `calibration` and `operating_point`, draws
plots/reliability.png and hands the numbers to metrics.json. Only best.pt carries them: last.pt is the resume
state, whose weights may differ. With fewer than `calibration_min_samples` validation images no temperature is
fitted, and the log says why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from deepfake.evaluation.calibration import calibrate
from deepfake.evaluation.ensemble import Ensemble, Member, score_loader
from deepfake.evaluation.operating_point import choose, threshold_of
from deepfake.runs.checkpoint import load_checkpoint, save_checkpoint, unwrap
from deepfake.system.distributed import gather_predictions
from deepfake.system.precision import Precision
from deepfake.training.observers import Observer, Run

log = logging.getLogger("deepfake")


class CalibrationObserver(Observer):
    """Fits and stores best.pt's temperature and validation threshold when the run ends (outcome `end`) with a
    best.pt."""

    def __init__(
        self, model: nn.Module, loader: DataLoader, precision: Precision, device: torch.device, best: Path
    ) -> None:
        self.model, self.loader, self.precision, self.device, self.best = (
            model,
            loader,
            precision,
            device,
            best,
        )

    def on_close(self, run: Run, outcome: str) -> None:
        target = run.cfg.eval.get("target_fpr")
        if outcome != "end" or (run.cfg.calibration == "none" and target is None):
            return
        run.ddp.barrier()  # rank 0's last best.pt is on disk before any rank reads it
        if not self.best.is_file():
            return
        state = load_checkpoint(self.best, map_location=self.device)
        kept = run.best_logits
        if kept is not None and kept[0] == state["train_state"]["epoch"]:
            _, labels, logits = kept  # the same on every rank (gathered): no rank predicts again
        else:
            labels, logits = self._predict(run, state)
        if not run.ddp.is_main:
            return
        result = self._temperature(run, labels, logits)
        point = choose(labels, logits, target, run.cfg.eval.tta) if target is not None else None
        if result is None and point is None:
            return
        temperature = result["temperature"] if result is not None else None
        if point is not None:
            point["threshold"] = threshold_of(point, temperature)  # on the probabilities best.pt reports
            point["calibrated"] = temperature is not None
            state["operating_point"] = point
        if result is not None:
            state["calibration"] = result
        try:
            save_checkpoint(self.best, state)  # atomic: on failure best.pt stays as it was
        except OSError as e:  # the metrics file and the exit backup still follow
            what = " and ".join(
                k for k, v in (("the temperature", result), ("the validation threshold", point)) if v
            )
            log.warning("could not store %s in %s (%s); predictions stay as they were", what, self.best, e)
            return
        run.calibration, run.operating_point = result, point
        if point is not None:
            log.info(
                "validation threshold for FPR %g: %.4f (FPR %.4f, TPR %.4f on %d validation images; "
                "predict.py threshold=val_fpr)", point["target_fpr"], point["threshold"], point["fpr"],
                point["tpr"], point["images"],
            )  # fmt: skip
        if result is None:
            return
        before, after = result["before"], result["after"]
        log.info(
            "calibration: temperature %.4g fitted on %d validation images (best.pt); log loss %.4f -> %.4f, "
            "ECE %.4f -> %.4f", result["temperature"], len(labels), before["log_loss"], after["log_loss"],
            before["ece"], after["ece"],
        )  # fmt: skip
        write_reliability(run.run_dir / "plots" / "reliability.png", labels, logits, result["temperature"])

    def _predict(self, run: Run, state: dict) -> tuple[np.ndarray, np.ndarray]:
        """best.pt's validation (labels, logits), predicted again: each rank its shard, gathered in order."""
        bare = unwrap(self.model)
        bare.load_state_dict(state["model"])
        member = Member(model=bare, img_size=int(bare.img_size))
        labels, logits, index = score_loader(
            Ensemble([member], run.cfg.eval.tta, precision=self.precision), self.loader, self.device
        )
        labels, logits, _ = gather_predictions(run.ddp, labels, logits[0], index)
        return labels, logits

    @staticmethod
    def _temperature(run: Run, labels: np.ndarray, logits: np.ndarray) -> dict | None:
        """The fitted temperature (`calibrate`'s result), or None: calibration=none, or too few images."""
        if run.cfg.calibration == "none":
            return None
        if len(labels) < run.cfg.calibration_min_samples:
            log.warning(
                "calibration skipped: %d validation images, fewer than calibration_min_samples=%d. A temperature "
                "fitted on so few follows their noise and can make the probabilities worse (higher ECE) on new "
                "data; best.pt's probabilities stay raw. Validate on more images, or set "
                "calibration_min_samples=%d to fit one anyway", len(labels), run.cfg.calibration_min_samples,
                len(labels),
            )  # fmt: skip
            return None
        return calibrate(logits, labels, run.cfg.eval.tta)


def write_reliability(path: Path, labels: np.ndarray, logits: np.ndarray, temperature: float) -> None:
    """The validation reliability diagram, raw against calibrated; a plot failure is only a warning."""
    from deepfake.reporting.figures import curve_title, reliability_figure, save_png  # matplotlib: only here

    def sigmoid(z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-z))

    try:
        curves = {"raw": sigmoid(logits), "calibrated": sigmoid(logits / temperature)}
        title = curve_title("Reliability", "validation (best.pt)", labels)
        save_png(reliability_figure(labels, curves, title), path)
    except Exception as e:
        log.warning("could not write %s (%s: %s)", path, type(e).__name__, e)
