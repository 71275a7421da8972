"""Export a trained detector: `python -m deepfake.export checkpoint=<run dir | .pt> format=safetensors|torchscript|onnx`.

- safetensors: weights plus metadata (architecture, preprocess, config, and what prediction needs: the
  extraction settings, the calibration, a validation threshold, any entry of the checkpoint that is not training
  state); `predict.py` and `evaluate.py` load it like the checkpoint, and nothing in it executes code when loaded.
- torchscript / onnx: a standalone graph from uint8 images (N, 3, S, S) at the saved size S to the
  probability of fake (N,); normalisation and the fitted temperature (if any) are inside, the same metadata
  rides along (ONNX metadata_props; TorchScript extra files `metadata.json` and `preprocess.json`).
The run's MODEL_CARD.md is copied next to the export. onnx needs the optional `onnx` and `onnxscript` packages (`pip install 'deepfake[export]'`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, OmegaConf
from torch import nn

from deepfake.errors import ConfigError
from deepfake.evaluation.inference import CARRIED, TRAINING_ONLY, LoadedDetector, load_detector
from deepfake.exits import run_reporting_errors
from deepfake.runs.fileio import atomic_write, copy_atomic

log = logging.getLogger("deepfake")

USAGE = "Usage: python -m deepfake.export checkpoint=<run dir | .pt> format=safetensors|torchscript|onnx [output=FILE]"
CARD_FILE = "MODEL_CARD.md"  # written by deepfake.reporting.model_card at the end of training
SUFFIXES = {"safetensors": ".safetensors", "torchscript": ".torchscript.pt", "onnx": ".onnx"}


@dataclass
class ExportConfig:
    checkpoint: str = MISSING  # a run directory (its checkpoints/best.pt) or a .pt file
    format: str = "safetensors"  # safetensors | torchscript | onnx
    output: str | None = None  # the file to write; null = <run dir>/export/<checkpoint name><suffix>
    opset: int = 18  # onnx only: the operator set version


class ProbabilityModel(nn.Module):
    """The detector with its temperature and sigmoid: uint8 images in, the calibrated probability of fake out,
    as predict.py reports by default."""

    def __init__(self, detector: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.detector = detector
        self.temperature = float(temperature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.detector(images) / self.temperature)


def export(
    checkpoint: str | Path, format: str = "safetensors", output: str | Path | None = None, opset: int = 18
) -> Path:
    """Write the export and return its path."""
    if format not in SUFFIXES:
        raise ConfigError(f"format={format!r} is not one of {', '.join(SUFFIXES)}")
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if format == "onnx" and missing:
        raise ConfigError(
            f"format=onnx needs {' and '.join(missing)}: pip install onnx onnxscript (or 'deepfake[export]')"
        )
    loaded = load_detector(checkpoint)
    out = Path(output) if output else loaded.run_dir / "export" / f"{loaded.path.stem}{SUFFIXES[format]}"
    {"safetensors": _safetensors, "torchscript": _torchscript, "onnx": _onnx}[format](loaded, out, opset)
    log.info("exported %s as %s to %s", loaded.path, format, out)
    copy_model_card(loaded, out.parent)
    return out


def copy_model_card(loaded: LoadedDetector, folder: Path) -> Path | None:
    """The run's MODEL_CARD.md beside the export (what a model hub shows); a run without one is told how to
    write it."""
    card = loaded.run_dir / CARD_FILE
    target = folder / CARD_FILE
    if not card.is_file():
        log.warning(
            "no %s in %s to copy next to the export; write one with: python -m deepfake.report %s",
            CARD_FILE, loaded.run_dir, loaded.run_dir,
        )  # fmt: skip
        return None
    if card.resolve() != target.resolve():
        copy_atomic(card, target)
        log.info("copied %s to %s", card, target)
    return target


def carried(loaded: LoadedDetector) -> dict[str, Any]:
    """The checkpoint's entries that prediction needs (`extraction`, `calibration`, a `threshold`, ...): every
    entry that is not training state, as plain JSON data."""
    out = {}
    for key, value in loaded.checkpoint.items():
        if key in TRAINING_ONLY or value is None:
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            log.warning("export: %s's '%s' is not plain data (numbers, text, lists, mappings); not carried",
                        loaded.path, key)  # fmt: skip
            continue
        out[key] = value
    return out


def _metadata(loaded: LoadedDetector) -> dict[str, str]:
    """Everything beside the weights, as text: what to rebuild (architecture, preprocess, config) and what
    prediction needs (the carried entries, each as JSON, listed under `carried`)."""
    config = OmegaConf.to_yaml(loaded.config) if loaded.config is not None else ""
    extra = carried(loaded)
    return {
        "format": "deepfake-detector",
        "architecture": loaded.model.architecture,
        "preprocess": json.dumps(loaded.model.preprocess),
        "config": config,
        CARRIED: json.dumps(sorted(extra)),
        **{key: json.dumps(value) for key, value in extra.items()},
    }


def _safetensors(loaded: LoadedDetector, out: Path, opset: int) -> None:
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in loaded.model.state_dict().items()}
    blob = save(state, metadata=_metadata(loaded))
    atomic_write(out, lambda f: f.write(blob))


def _example(loaded: LoadedDetector) -> torch.Tensor:
    size, frames = loaded.img_size, loaded.model.frames
    clip = (frames,) if frames > 1 else ()  # a clip model takes (B, T, 3, S, S)
    return torch.randint(0, 256, (2, *clip, 3, size, size), dtype=torch.uint8)


def _torchscript(loaded: LoadedDetector, out: Path, opset: int) -> None:
    model = ProbabilityModel(loaded.model, loaded.temperature or 1.0).eval()
    with warnings.catch_warnings():
        # Deprecated upstream in favour of torch.export, but still what libtorch (C++) and Triton load.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=Warning)
        traced = torch.jit.trace(model, _example(loaded))
        extra = {
            "preprocess.json": json.dumps(loaded.model.preprocess),
            "metadata.json": json.dumps(_metadata(loaded)),  # the safetensors export's metadata, as one file
        }
        atomic_write(out, lambda f: torch.jit.save(traced, f, _extra_files=extra))


def _onnx(loaded: LoadedDetector, out: Path, opset: int) -> None:
    import onnx

    loaded.model.channels_last = False  # a memory layout means nothing to an ONNX graph
    model = ProbabilityModel(loaded.model, loaded.temperature or 1.0).eval()
    tmp = out.with_name(f".{out.name}.export")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.onnx.export(
            model,
            (_example(loaded),),
            str(tmp),
            input_names=["images"],
            output_names=["prob_fake"],
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
        graph = onnx.load(str(tmp))
        for key, value in _metadata(loaded).items():
            graph.metadata_props.add(key=key, value=value)
        atomic_write(out, lambda f: f.write(graph.SerializeToString()))
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str]) -> Path:
    """Parse `key=value` arguments onto ExportConfig (unknown keys and bad types are user errors)."""
    schema = OmegaConf.structured(ExportConfig)
    try:
        cfg = OmegaConf.merge(schema, OmegaConf.from_dotlist(argv))
    except Exception as e:  # omegaconf raises several types; all mean "this argument is malformed"
        raise ConfigError(f"{str(e).splitlines()[0]}. {USAGE}") from None
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("checkpoint is not set: pass checkpoint=<run directory or .pt file>")
    return export(cfg.checkpoint, cfg.format, cfg.output, cfg.opset)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s"
    )  # exporters' own INFO chatter stays quiet
    log.setLevel(logging.INFO)
    run_reporting_errors(main, sys.argv[1:])
