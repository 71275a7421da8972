"""Continuing a run: find its checkpoint, rebuild its config, check compatibility and restore its state.

`python train.py resume=<run dir | .pt>` continues the *same* run: the saved (resolved) config is the base
and only the keys given on this command line override it, so nobody retypes the original overrides. Keys
that would make the saved state meaningless (another architecture, optimizer or input size) are refused by
name; the sampler position is in batches, so batch size, accumulation, seed and the training set may
change only at an epoch boundary. Schedule-shaping overrides (more epochs, another learning rate) re-plan
the LR schedule and fast-forward it to the saved step instead of loading the old plan.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shlex
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from deepfake.config import Config, to_config
from deepfake.config.flatten import flatten
from deepfake.errors import ConfigError, UserError
from deepfake.model.detector import resolve_architecture
from deepfake.runs.checkpoint import load_checkpoint, load_weights, set_rng_state, unwrap
from deepfake.runs.safe_config import trusted_config
from deepfake.training.checkpointer import Checkpointer
from deepfake.training.early_stopping import Best, EarlyStopping
from deepfake.training.engine import TrainState

log = logging.getLogger("deepfake.resume")  # the name train.log has always shown

#: Keys whose change makes the saved weights or optimizer state unusable.
STRICT = ("model.architecture", "model.img_size", "training.optimizer._target_")
#: Keys that move the sampler position: allowed only when the checkpoint sits at an epoch boundary.
MID_EPOCH = ("seed", "training.batch_size", "training.grad_accum_steps")
#: Keys that shape the LR schedule: a change re-plans it instead of loading the saved one.
SCHEDULE = (
    "training.num_epochs",
    "training.learning_rate",
    "training.weight_decay",
    "training.scheduler",
    "training.optimizer",
    "training.batch_size",
    "training.grad_accum_steps",
)


_ABSENT = object()


@dataclass
class Resume:
    """A checkpoint to continue from: its file, the run directory it belongs to, and its contents."""

    path: Path
    run_dir: Path | None  # the run it continues; None starts a new run directory
    state: dict[str, Any]

    @property
    def train_state(self) -> dict[str, Any]:
        return self.state.get("train_state", {})


def checkpoint_path(target: str | Path) -> Path:
    """A run directory means its `checkpoints/last.pt`; a file is taken as given."""
    path = Path(target).expanduser()
    if path.is_dir():
        last = path / "checkpoints" / "last.pt"
        if not last.is_file():
            raise UserError(
                f"resume={target}: no checkpoints/last.pt in that folder. Pass a run directory that has "
                "saved at least one checkpoint, or a .pt file."
            )
        return last
    if not path.is_file():
        raise UserError(f"resume={target} does not exist; pass a run directory or a checkpoint (.pt) file")
    return path


def load_resume(target: str | Path) -> Resume:
    path = checkpoint_path(target)
    state = load_checkpoint(path)
    if "train_state" not in state or "config" not in state:
        raise UserError(f"resume={target}: {path} is not a training checkpoint (no train_state/config)")
    state["config"] = trusted_config(
        state["config"], str(path)
    )  # before anything rebuilds or instantiates it
    # Only a run's own last.pt continues that run; from best.pt, an epoch file or a loose file a new run
    # directory starts, so the newer last.pt and TensorBoard points of the original are never overwritten.
    own = path.name == "last.pt" and path.parent.name == "checkpoints"
    if not own:
        log.info("continuing from %s in a new run directory", path)
    return Resume(path=path, run_dir=path.parent.parent if own else None, state=state)


def find_auto_resume(run_dir: Path) -> Resume | None:
    """`training.auto_resume`: a run directory that already holds last.pt continues from it."""
    last = run_dir / "checkpoints" / "last.pt"
    return load_resume(last) if last.is_file() else None


def override_keys(cfg: DictConfig) -> list[str]:
    """The dotted keys this invocation set explicitly.

    Under Hydra these are the command-line overrides (a group choice such as `model=resnet50` names the
    whole `model` node). From Python, where no such list exists, they are the keys that differ from the
    schema defaults.
    """
    if HydraConfig.initialized():
        parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
        keys = []
        for o in parsed:
            if o.is_delete() or o.is_hydra_override():
                continue
            keys.append(o.package if o.package else o.key_or_group.replace("/", "."))
        return keys
    defaults = flatten(OmegaConf.to_container(OmegaConf.structured(Config), resolve=True))
    given = flatten(OmegaConf.to_container(cfg, resolve=True))
    return [k for k, v in given.items() if k not in defaults or defaults[k] != v]


def explicit_overrides(cfg: DictConfig) -> list[str]:
    """This invocation's overrides as `key=value` lines, recorded in every backup."""
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return [f"{k}={OmegaConf.select(cfg, k)}" for k in override_keys(cfg)]


def resumed_config(resume: Resume, cfg: DictConfig) -> DictConfig:
    """The saved config with this invocation's explicit keys applied on top."""
    original = saved_config(resume)
    merged = original.copy()
    for key in override_keys(cfg):
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if key != "resume" and value is not _ABSENT:
            OmegaConf.update(merged, key, value, merge=False)
    merged.resume = cfg.resume
    merged = to_config(merged)
    _check_compatible(resume, original, merged)
    changed = changed_keys(original, merged)
    if changed:
        log.info("resuming with changed settings: %s", "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed))
    return merged


def saved_config(resume: Resume) -> DictConfig:
    """The checkpoint's config on the current schema (keys added since then take their defaults)."""
    try:
        return to_config(OmegaConf.create(resume.state["config"]))
    except ConfigError as e:
        raise UserError(f"the config saved in {resume.path} no longer fits the schema: {e}") from None


def changed_keys(old: DictConfig, new: DictConfig) -> list[tuple[str, tuple[Any, Any]]]:
    a = flatten(OmegaConf.to_container(old, resolve=True))
    b = flatten(OmegaConf.to_container(new, resolve=True))
    skip = {"resume", "training.auto_resume"}
    return [
        (k, (a.get(k), b.get(k))) for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)
    ]


def _check_compatible(resume: Resume, saved: DictConfig, cfg: DictConfig) -> None:
    ts = resume.train_state
    for key in STRICT:
        old, new = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if key == "model.architecture":
            old, new = resolve_architecture(old), resolve_architecture(new)
        if old != new:
            raise ConfigError(
                f"cannot resume {resume.path}: {key}={OmegaConf.select(cfg, key)} but the checkpoint was "
                f"trained with {key}={OmegaConf.select(saved, key)}. Drop that override to continue the run, "
                "or drop resume= to start a new one."
            )
    _check_input_size(resume, cfg)
    if ts.get("batch_in_epoch", 0) > 0:
        for key in MID_EPOCH:
            old, new = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
            if old != new:
                raise ConfigError(
                    f"cannot resume {resume.path} with {key}={new}: the checkpoint stopped mid-epoch "
                    f"(epoch {ts['epoch'] + 1}, batch {ts['batch_in_epoch']}) with {key}={old}, and the "
                    "position within the epoch depends on it. Resume without that override, or from an "
                    "end-of-epoch checkpoint."
                )


def _check_input_size(resume: Resume, cfg: DictConfig) -> None:
    """The loaders' input size is saved as `preprocess.img_size`, which evaluate and predict reproduce."""
    saved = (resume.state.get("preprocess") or {}).get("img_size")
    key = "data.img_size" if cfg.data.img_size else "model.img_size"
    new = OmegaConf.select(cfg, key)
    if saved is not None and new is not None and int(new) != int(saved):
        raise ConfigError(
            f"cannot resume {resume.path}: {key}={new} but the checkpoint was trained on {saved} px inputs. "
            "Drop that override to continue the run, or drop resume= to start a new one."
        )


def needs_replan(resume: Resume, cfg: DictConfig, steps_per_epoch: int) -> bool:
    """Whether the LR schedule must be rebuilt for the new settings rather than loaded from the file."""
    saved = saved_config(resume)
    saved_steps = resume.train_state.get("steps_per_epoch")
    if saved_steps is not None and saved_steps != steps_per_epoch:
        return True
    return any(_select(saved, k) != _select(cfg, k) for k in SCHEDULE)


def _select(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def check_train_set(resume: Resume, num_samples: int, world_size: int = 1) -> None:
    """A mid-epoch position is an index into each rank's shard of the training set: same set, same shards."""
    ts = resume.train_state
    saved_world = ts.get("world_size", 1)
    if ts.get("batch_in_epoch", 0) > 0 and saved_world != world_size:
        raise UserError(
            f"cannot resume {resume.path} on {world_size} process(es): it stopped mid-epoch (epoch "
            f"{ts['epoch'] + 1}, batch {ts['batch_in_epoch']}) on {saved_world}, and the position within the "
            f"epoch is per process. Resume with {saved_world} process(es) (torchrun --nproc_per_node="
            f"{saved_world}), or from an end-of-epoch checkpoint."
        )
    saved = ts.get("num_train_samples")
    if saved is None or saved == num_samples:
        return
    if ts.get("batch_in_epoch", 0) > 0:
        raise UserError(
            f"cannot resume {resume.path}: the training split now has {num_samples} images but the run "
            f"stopped mid-epoch on a split of {saved}. Point data.root at the original data, or resume "
            "from an end-of-epoch checkpoint."
        )
    log.warning("the training split changed from %d to %d images since the checkpoint", saved, num_samples)


def restore_training(
    resume: Resume,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    ema: Any,
    replan: bool,
) -> None:
    """Load weights and optimizer/scheduler/scaler/EMA state; the RNG comes last, just before training."""
    state = resume.state
    load_weights(unwrap(model), state["model"], f"the weights in {resume.path} do not fit this model")
    global_step = resume.train_state.get("global_step", 0)
    if replan and scheduler is not None:
        with warnings.catch_warnings():  # the fast-forward steps the schedule without optimizer steps
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(global_step):
                scheduler.step_update()
        log.info("LR schedule re-planned for the new settings and fast-forwarded to step %d", global_step)
    planned = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise UserError(f"the optimizer state in {resume.path} does not fit this optimizer: {e}") from None
    if replan:
        for group, fresh in zip(optimizer.param_groups, planned, strict=True):
            group.update(fresh)
        saved = state.get("scheduler") or {}
        if scheduler is not None and scheduler.plateau is not None and saved.get("plateau"):
            scheduler.plateau.load_state_dict(saved["plateau"])
    elif scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if ema is not None:
        if state.get("ema") is not None:
            unwrap(ema.module).load_state_dict(state["ema"])
        else:
            log.info("EMA enabled on resume: it starts from the current weights")


@dataclass
class Progress:
    """What a run had reached when its checkpoint was saved, besides the counters in `TrainState`."""

    best: Best
    metrics: dict[str, Any]  # the last validated epoch's metrics (metrics.json's `final`)
    elapsed_s: float  # training time before this process


def restore_progress(
    resume: Resume, state: TrainState, early: EarlyStopping, checkpoints: Checkpointer
) -> Progress:
    """Counters, early stopping and top-k from the checkpoint; returns the best, last metrics and time."""
    ts, monitor = resume.train_state, resume.state["monitor"]
    state.load_state_dict(ts)
    early.load_state_dict(monitor["early_stopping"])
    checkpoints.top_k = list(monitor.get("top_k", []))
    return Progress(
        best=Best.from_state_dict(monitor["best"]),
        metrics=dict(resume.state.get("metrics") or {}),
        elapsed_s=ts.get("elapsed_s", 0.0),
    )


def restore_rng(resume: Resume) -> None:
    """Last step before training continues: every draw until the checkpoint's step is then replayed."""
    set_rng_state(resume.state["rng"])


def adopt_run_dir(hydra_dir: Path, run_dir: Path) -> None:
    """Continue logging into the resumed run and drop the fresh directory Hydra made for this call.

    Hydra's `.hydra/` record of this invocation is kept under `<run>/.hydra/resumes/<time>/`.
    """
    if hydra_dir.resolve() == run_dir.resolve():
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if (
            isinstance(handler, logging.FileHandler)
            and Path(handler.baseFilename).parent == hydra_dir.resolve()
        ):
            replacement = logging.FileHandler(run_dir / Path(handler.baseFilename).name, mode="a")
            replacement.setFormatter(handler.formatter)
            replacement.setLevel(handler.level)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(replacement)
    record = hydra_dir / ".hydra"
    if record.is_dir():
        stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        shutil.copytree(record, run_dir / ".hydra" / "resumes" / stamp)
    leftovers = [p for p in hydra_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if not leftovers:
        shutil.rmtree(hydra_dir, ignore_errors=True)
        for parent in list(hydra_dir.parents)[:2]:  # <base>/outputs/<date>: only if now empty
            with contextlib.suppress(OSError):
                parent.rmdir()


def resume_command(run_dir: Path) -> str:
    """The command that continues this run, as the user would type it."""
    script = sys.argv[0] if HydraConfig.initialized() and sys.argv[0].endswith(".py") else "train.py"
    return f"python {shlex.quote(script)} {shlex.quote(f'resume={run_dir.resolve()}')}"
