"""The allow-list that keeps a config read back from a file from running code.

Hydra's `instantiate` calls whatever a `_target_` names, at any depth. A checkpoint loads with
`weights_only=True`, but its saved config is instantiated again on resume and evaluation, so a crafted file
could name `torch.load` or `os.system`. Every config read from a file (checkpoint, exported model, restored
backup) passes `check_untrusted` before it is used: a Hydra keyword (`_target_`, `_partial_`, `_args_`, ...)
may appear only where the project instantiates something, and its `_target_` must be listed here.
Configs typed on the command line or built in Python are the user's own and are not checked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from deepfake.errors import UserError, one_line

log = logging.getLogger("deepfake")

#: Targets that files written before a module moved store, and where each lives now. A config read from a
#: file is checked with both and used with the new one (`trusted_config`); add a line when a module moves
#: again. The first three moved in the split into subpackages (after 13c2a10), the model in the rooms pass
#: (after 3b392c2).
LEGACY_TARGETS: dict[str, str] = {
    "deepfake.schedulers.create_scheduler": "deepfake.training.schedulers.create_scheduler",
    "deepfake.backup.ProjectBackup": "deepfake.runs.backup.ProjectBackup",
    "deepfake.callbacks.SweepSummaryCallback": "deepfake.sweeps.callbacks.SweepSummaryCallback",
    "deepfake.models.get_model": "deepfake.model.detector.get_model",
}
#: Where a config may name a target, and the targets accepted there (today's paths; the legacy ones are
#: accepted wherever their new path is).
PROJECT_TARGETS: dict[str, frozenset[str]] = {
    "model": frozenset({"deepfake.model.detector.get_model"}),
    "data": frozenset({"deepfake.data.DataModule", "deepfake.data.module.DataModule"}),
    "training.scheduler": frozenset({"deepfake.training.schedulers.create_scheduler"}),
    "backup": frozenset({"deepfake.runs.backup.ProjectBackup"}),
}
OPTIMIZER_KEY = "training.optimizer"
#: Hydra's instantiation keywords; any of them outside an allowed place is refused.
KEYWORDS = frozenset({"_target_", "_partial_", "_args_", "_recursive_", "_convert_"})
#: Keywords accepted beside an allowed `_target_` (`_args_` would pass positional values nothing here takes).
ALLOWED_BESIDE_TARGET = frozenset({"_target_", "_partial_", "_recursive_", "_convert_"})


def optimizer_targets() -> frozenset[str]:
    """`torch.optim.<Name>` and `timm.optim.<Name>` for each optimizer class they export: what
    `training.optimizer` may name (an optimizer's constructor only stores its parameters and settings)."""
    import timm.optim

    return frozenset(
        f"{module.__name__}.{name}"
        for module in (torch.optim, timm.optim)
        for name in dir(module)
        if isinstance(cls := getattr(module, name), type)
        and issubclass(cls, torch.optim.Optimizer)
        and cls is not torch.optim.Optimizer
    )


def allowed_targets() -> dict[str, frozenset[str]]:
    """Each place a file-sourced config may instantiate, with its accepted targets (old paths included)."""
    project = {
        key: targets | {old for old, new in LEGACY_TARGETS.items() if new in targets}
        for key, targets in PROJECT_TARGETS.items()
    }
    return {**project, OPTIMIZER_KEY: optimizer_targets()}


def trusted_config(config: Any, source: str) -> DictConfig:
    """`check_untrusted`, then the config with each legacy `_target_` replaced by its current path, so a
    checkpoint or backup saved before a module moved instantiates the moved class."""
    check_untrusted(config, source)
    node = config if isinstance(config, DictConfig | ListConfig) else OmegaConf.create(config)
    raw = OmegaConf.to_container(node, resolve=False)
    for _, mapping in _mappings(raw, ""):
        target = mapping.get("_target_")
        if isinstance(target, str) and target in LEGACY_TARGETS:
            mapping["_target_"] = LEGACY_TARGETS[target]
    return OmegaConf.create(raw)


def check_untrusted(config: Any, source: str) -> None:
    """Raise UserError naming the key and target of the first call this config would make off the list.

    `config` is a mapping (or DictConfig) read from `source`, a file named in the message. Both the text
    as stored and its resolved form are checked, so an interpolation cannot assemble a target later.
    """
    try:
        node = config if isinstance(config, DictConfig | ListConfig) else OmegaConf.create(config)
        raw = OmegaConf.to_container(node, resolve=False)
    except Exception as e:  # omegaconf and YAML raise several types; all mean "not a config"
        log.debug("the config saved in %s cannot be read", source, exc_info=True)
        raise UserError(
            f"the config saved in {source} cannot be read: {type(e).__name__}: {one_line(e)}"
        ) from None
    if not isinstance(raw, dict):
        raise UserError(f"the config saved in {source} is not a mapping of keys to values")
    _check(raw, source)
    try:
        resolved = OmegaConf.to_container(node, resolve=True)
    except Exception as e:  # omegaconf raises several types; all mean "an interpolation does not resolve"
        log.debug("the config saved in %s does not resolve", source, exc_info=True)
        raise UserError(
            f"the config saved in {source} cannot be read: {type(e).__name__}: {one_line(e)}"
        ) from None
    _check(resolved, source)


def _check(container: Any, source: str) -> None:
    allowed = allowed_targets()
    for key, node in _mappings(container, ""):
        present = KEYWORDS & {k for k in node if isinstance(k, str)}
        if not present:
            continue
        targets = allowed.get(key)
        target = node.get("_target_")
        listed = targets is not None and isinstance(target, str) and target in targets
        if listed and present <= ALLOWED_BESIDE_TARGET:
            continue
        if listed:
            extra = ", ".join(sorted(present - ALLOWED_BESIDE_TARGET))
            why = f"{key or 'the root'} sets {extra}"
        elif target is not None:
            why = f"{key or 'the root'}._target_ is {target!r}"
        else:
            why = f"{key or 'the root'} sets {', '.join(sorted(present))}"
        if targets is None:
            place = f"nothing may be instantiated at {key or 'the root'}"
        elif key == OPTIMIZER_KEY:
            place = f"{key} accepts torch.optim and timm.optim optimizers"
        else:
            place = f"{key} accepts {', '.join(sorted(targets))}"
        raise UserError(
            f"refusing the config saved in {source}: {why}, and a config read from a file may only name the "
            f"project's own targets and optimizers ({place}). Nothing from it was run; use a "
            "checkpoint or backup from a source you trust."
        )


def _mappings(node: Any, key: str) -> Iterator[tuple[str, dict]]:
    """Every mapping in the tree with its dotted key (list items as `key[i]`)."""
    if isinstance(node, dict):
        yield key, node
        for k, v in node.items():
            yield from _mappings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _mappings(v, f"{key}[{i}]")
