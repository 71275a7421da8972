"""Score test sets and write what a reader opens: evaluate.py's driver and train.py's last step.

Every set gets `eval/<set>/metrics.json`, `predictions.csv` (path, video, label, method, prob), `roc.png`,
`pr.png`, `methods.png` and `reliability.png`, and the log a results table; evaluate.py also writes
`<out_dir>/report.html` (`deepfake.reporting.report`). The numbers come from `deepfake.evaluation.scoring`
(below this room); the figures from `deepfake.reporting.figures`. All metrics are computed from exactly the
probabilities in predictions.csv, so anyone can recompute them from that file. The cross-dataset protocol
reports test sets only: nothing here picks a checkpoint.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from deepfake.config import to_config, validate
from deepfake.data.module import DataModule
from deepfake.data.samples import Sample
from deepfake.data.workers import resolve_num_workers
from deepfake.errors import UserError
from deepfake.evaluation.aggregate import TOPK
from deepfake.evaluation.calibration import checked_temperature
from deepfake.evaluation.ensemble import (
    Ensemble,
    Member,
    checkpoint_list,
    clip_length_of,
    ensemble_of,
)
from deepfake.evaluation.inference import load_detector, scoring_precision
from deepfake.evaluation.metrics import FPR_TARGETS, video_scores
from deepfake.evaluation.operating_point import checked_operating_point
from deepfake.evaluation.scoring import PREDICTION_COLUMNS, scored_report, set_logits
from deepfake.evaluation.threshold import checked_val_threshold
from deepfake.reporting.report import write_after_evaluation
from deepfake.reporting.results_tables import method_table, results_table
from deepfake.reporting.robustness import RobustnessHook, robustness_hook, robustness_request
from deepfake.runs.checkpoint import load_checkpoint, unwrap
from deepfake.runs.fileio import atomic_write, require_writable
from deepfake.system.hardware import HardwareManager
from deepfake.system.precision import Precision

log = logging.getLogger("deepfake")


def write_set(
    out: Path, samples: Sequence[Sample], probs: np.ndarray, report: dict, raw: np.ndarray | None = None
) -> None:
    """predictions.csv, metrics.json, roc.png, pr.png, methods.png (AUC per manipulation method) and
    reliability.png (`raw` probabilities against the calibrated `probs`, when a temperature applies) for one
    set, each written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for s, p in zip(samples, probs, strict=True):
        writer.writerow((s.path, s.video, s.label, s.method, float(p)))  # repr round-trips the float exactly
    atomic_write(out / "predictions.csv", lambda f: f.write(buffer.getvalue().encode()))
    text = json.dumps(report, indent=2, allow_nan=True)
    atomic_write(out / "metrics.json", lambda f: f.write(text.encode()))
    from deepfake.reporting.figures import (  # matplotlib: only when figures are due
        curve_title,
        method_auc_figure,
        pr_figure,
        reliability_figure,
        roc_figure,
        save_png,
    )

    labels = np.array([s.label for s in samples], dtype=np.int64)
    name = report["set"]
    if len(np.unique(labels)) < 2:
        log.warning("set %s holds one class only: no ROC or PR curve", name)
        return
    v_labels, v_probs = video_scores(
        labels, probs, [s.video for s in samples], report["video_aggregation"], report.get("video_topk", TOPK)
    )
    videos = (v_labels, v_probs) if len(v_labels) < len(labels) and len(np.unique(v_labels)) == 2 else None
    n_videos = len(v_labels) if len(v_labels) < len(labels) else None
    roc = roc_figure(
        (labels, probs), videos, curve_title("ROC", name, labels, n_videos), FPR_TARGETS,
        report.get("operating_point"),
    )  # fmt: skip
    save_png(roc, out / "roc.png")
    save_png(
        pr_figure((labels, probs), videos, curve_title("Precision-recall", name, labels, n_videos)),
        out / "pr.png",
    )
    methods = method_auc_figure(report["per_method"], f"AUC per method: {name}")
    if methods is not None:
        save_png(methods, out / "methods.png")
    curves = {"raw": raw, "calibrated": probs} if raw is not None else {"predicted": probs}
    save_png(
        reliability_figure(labels, curves, curve_title("Reliability", name, labels)), out / "reliability.png"
    )


def evaluate_sets(
    ensemble: Ensemble,
    data: Mapping[int, DataModule],
    names: Sequence[str],
    device: torch.device,
    eval_cfg: Mapping[str, Any],
    out_dir: Path,
    seed: int = 0,
    context: Mapping[str, Any] | None = None,
    robustness: RobustnessHook | None = None,
) -> dict[str, dict]:
    """Predict and report every named set (see `DataModule.setup_test_sets`) into `out_dir/<set>/`.

    `data` holds one DataModule per member input size (`Ensemble.groups`), all over the same test sets.
    `robustness` (evaluate.py's `perturb` group, `reporting.robustness.robustness_hook`) scores each set again
    under the robustness settings, given its name, clean probabilities and results folder; what it returns goes into metrics.json.
    """
    reports = {}
    first = next(iter(data.values()))
    for name in names:
        samples = first.test_samples[name]
        for other in data.values():
            if [s.path for s in other.test_samples[name]] != [s.path for s in samples]:
                raise UserError(f"test set {name} lists different images at different input sizes")
        loaders = {size: module.test_dataloader(name) for size, module in data.items()}
        raw = set_logits(ensemble, loaders, samples, device)
        for loader in loaders.values():
            loader.close()  # persistent workers: not kept alive until the process ends
        probs, raw_probs, report = scored_report(ensemble, raw, samples, eval_cfg, seed)
        source = getattr(first, "test_sources", {}).get(name, name)
        identity = evaluation_identity(source, ensemble, eval_cfg, context)
        folder = results_dir(out_dir, name, identity)
        report = {"set": folder.name, **(context or {}), "evaluation": identity, **report}
        if robustness is not None:
            report["robustness"] = robustness(name, probs, folder)
        if eval_cfg["explain"] != "none" or eval_cfg["embeddings"]:
            from deepfake.reporting.explanations import explain_set  # grad-cam and t-SNE: only when asked

            datasets = {size: loader.dataset for size, loader in loaders.items()}
            scores = explain_set(folder, folder.name, ensemble.members, ensemble.tta, datasets, samples, probs,
                                 eval_cfg, device, seed)  # fmt: skip
            if scores is not None:
                report["faithfulness"] = scores
        write_set(folder, samples, probs, report, raw_probs if eval_cfg["calibrated"] else None)
        reports[folder.name] = report
        log.info("evaluated %s: %d images -> %s", name, len(samples), folder)
    log.info("\n%s", results_table(reports))
    if any(len(r.get("per_method", {})) > 1 for r in reports.values()):
        log.info("\n%s", method_table(reports))
    return reports


def evaluation_identity(
    source: str, ensemble: Ensemble, eval_cfg: Mapping[str, Any], context: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What makes two evaluations' results the same: the data, the checkpoint(s) and the settings that change
    the numbers. Recorded in metrics.json (`evaluation`) and compared before a results folder is reused."""
    checkpoints = dict(context or {})
    settings = {k: eval_cfg[k] for k in ("threshold", "video_aggregation", "calibrated") if k in eval_cfg}
    settings.update(tta=ensemble.tta, video_topk=int(eval_cfg.get("video_topk", TOPK)))
    if len(ensemble.members) > 1:
        settings["ensemble_mean"] = ensemble.mean
    return {"data": source, **checkpoints, "settings": settings}


def results_dir(out_dir: Path, name: str, identity: Mapping[str, Any]) -> Path:
    """`out_dir/<name>`, unless it holds another evaluation's results (other data, checkpoints or settings, or
    results too old to say): then the first free `<name>_<k>`, and the log says so. Nothing is overwritten
    but the results of the same evaluation."""
    candidate, k = name, 1
    while True:
        folder = out_dir / candidate
        metrics = folder / "metrics.json"
        if not folder.exists() or (not metrics.exists() and not any(folder.iterdir())):
            break
        try:
            earlier = json.loads(metrics.read_text()).get("evaluation")
        except (OSError, ValueError):
            earlier = None
        if earlier == json.loads(
            json.dumps(identity)
        ):  # compared as JSON reads them back (lists, not tuples)
            log.info("replacing the earlier results of the same evaluation in %s", folder)
            break
        k += 1
        candidate = f"{name}_{k}"
    if candidate != name:
        log.warning("%s holds another evaluation's results (other data, checkpoints or settings): this "
                    "evaluation's go to %s", out_dir / name, folder)  # fmt: skip
    return folder


def evaluate_best(
    run_dir: Path,
    model: torch.nn.Module,
    data: DataModule,
    names: Sequence[str],
    precision: Precision,
    device: torch.device,
    cfg: DictConfig,
) -> dict[str, dict]:
    """train.py's last step: load `best.pt` (weights and fitted temperature) into the trained model and
    report `data.test_sets`."""
    best = run_dir / "checkpoints" / "best.pt"
    state = load_checkpoint(best, map_location=device)
    bare = unwrap(model)
    bare.load_state_dict(state["model"])
    temperature = checked_temperature(str(best), state.get("calibration")) if cfg.eval.calibrated else None
    point = checked_operating_point(str(best), state.get("operating_point"))
    member = Member(
        model=bare,
        img_size=int(bare.img_size),
        temperature=temperature or 1.0,
        name=str(best),
        operating_point=point,
        val_threshold=checked_val_threshold(state.get("metrics")),
    )
    ensemble = Ensemble([member], tta=cfg.eval.tta, precision=scoring_precision(precision, cfg.training.amp))
    out_dir = Path(cfg.eval.out_dir) if cfg.eval.out_dir else run_dir / "eval"
    return evaluate_sets(
        ensemble,
        {member.img_size: data},
        names,
        device,
        cfg.eval,
        out_dir,
        cfg.seed,
        {"checkpoint": str(best)},
    )


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, dict]:
    """`evaluate.py`: score `cfg.checkpoint` (one, or a list: an ensemble) on `data.test_sets` (or the first
    checkpoint's training data's test split).

    The run config comes from the first checkpoint; `overrides` (command-line `key=value` strings) name the keys
    taken from `cfg` instead. Hardware is always this machine's, and the test sets are those named now (the
    run's own `data.test_sets` were already scored by its last step). Each member keeps its own input size and
    normalisation: the images are decoded once per distinct size.
    """
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise UserError("no checkpoint given: pass checkpoint=<run directory or .pt file>")
    perturb = robustness_request(cfg.perturb)  # checked before any checkpoint is read
    paths = checkpoint_list(cfg.checkpoint)
    loaded = [load_detector(path) for path in paths]  # every member's file checked before any work
    first = loaded[0]
    run_cfg = evaluation_config(first.config, cfg, overrides)
    check_explanations(loaded, run_cfg, overrides)
    if run_cfg.eval.out_dir:
        out_dir = Path(run_cfg.eval.out_dir).expanduser()
    else:  # an ensemble's results are no member's: they get their own folder
        out_dir = first.run_dir / "eval" if len(loaded) == 1 else ensemble_dir([d.path for d in loaded])
    require_writable(out_dir, "the results folder", "pass eval.out_dir=<a writable folder>")
    hw = HardwareManager(**run_cfg.hardware)
    hw.configure(resolve_num_workers(run_cfg.data.num_workers), unit="batch", per="image")
    precision = scoring_precision(hw.precision(run_cfg.training.amp), run_cfg.training.amp)
    clip = clip_length_of(loaded)
    ensemble = ensemble_of(
        loaded, hw.device, precision, run_cfg.eval.tta, cfg.ensemble.mean, run_cfg.eval.calibrated
    )
    ensemble.threads = hw.threads  # the first set's first batches time the thread counts
    modules_for = functools.partial(data_modules, run_cfg, list(ensemble.groups()), hw.device, clip)
    data = modules_for()
    names = {size: module.setup_test_sets() for size, module in data.items()}[ensemble.members[0].img_size]
    log.info("evaluating %s on %s (%s, %s)", ", ".join(paths), ", ".join(names), hw.device, precision.name)
    context = (
        {"checkpoint": str(loaded[0].path)}
        if len(loaded) == 1
        else {"checkpoints": [str(d.path) for d in loaded]}
    )
    hook = robustness_hook(perturb, names, ensemble, data, hw.device, run_cfg.eval, modules_for)
    reports = evaluate_sets(
        ensemble, data, names, hw.device, run_cfg.eval, out_dir, run_cfg.seed, context, hook
    )
    write_after_evaluation(out_dir, list(reports), [d.path for d in loaded])
    return reports


def data_modules(
    run_cfg: DictConfig,
    sizes: Sequence[int],
    device: torch.device,
    clip: int,
    test_sets: list[str] | None = None,
) -> dict[int, DataModule]:
    """One DataModule per member input size over the run config's test sets, or over `test_sets`."""
    sets = {} if test_sets is None else {"test_sets": test_sets}
    return {
        size: instantiate(
            run_cfg.data,
            img_size=size,
            batch_size=run_cfg.training.batch_size,
            eval_batch_size=run_cfg.training.eval_batch_size,
            seed=run_cfg.seed,
            pin_memory=device.type == "cuda",
            clip_frames=clip,
            _convert_="all",
            **sets,
        )
        for size in sizes
    }


def check_explanations(loaded: Sequence[Any], run_cfg: DictConfig, overrides: Sequence[str]) -> None:
    """`model.explain_layer=` on the command line replaces every member's own; with `eval.explain` on, grad-cam
    and each member's layer are checked before any scoring."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if "model.explain_layer" in keys:
        for member in loaded:
            member.model.explain_layer = run_cfg.model.explain_layer
    if run_cfg.eval.explain != "none":
        from deepfake.explain.cam import require_gradcam
        from deepfake.explain.target import cam_target

        require_gradcam("eval.explain")
        for member in loaded:
            cam_target(member.model, None, "model.explain_layer")


def ensemble_dir(paths: Sequence[Path]) -> Path:
    """`ensembles/<stems>-<digest>` in the working directory: an ensemble's own results folder, named by its
    members (the digest of their full paths keeps two ensembles of same-named files apart)."""
    digest = hashlib.sha256("\n".join(str(p) for p in paths).encode()).hexdigest()[:8]
    stems = "+".join(p.parent.parent.name if p.parent.name == "checkpoints" else p.stem for p in paths)
    return Path("ensembles") / f"{stems[:80]}-{digest}"


def evaluation_config(saved: DictConfig | None, cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The checkpoint's run config, with the overridden keys, `hardware` and `data.test_sets` taken from `cfg`."""
    own = ("checkpoint", "ensemble", "perturb")  # evaluate.py's keys, not a training run's
    current = {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k not in own}
    base = to_config(saved) if saved is not None else to_config(current)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_delete() or key.split(".")[0] in (*own, "hydra"):
            continue
        OmegaConf.update(base, key, OmegaConf.select(cfg, key), merge=False)
    base.hardware = cfg.hardware
    base.data.test_sets = cfg.data.test_sets  # the sets named now; none = the training data's test split
    validate(base)
    return base
