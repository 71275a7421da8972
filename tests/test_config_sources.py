"""The copies of defaults and choices agree: the dataclasses (`deepfake/config/schema.py`) and `conf/**/*.yaml` both hold
every default, `deepfake/choices.py` holds every choice list, and `conf/`'s `a | b | c` comments document them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from deepfake import choices
from deepfake.config import (
    Config,
    CsvLoggerConfig,
    EvaluateConfig,
    LoggerConfig,
    MlflowLoggerConfig,
    PredictConfig,
    TensorBoardLoggerConfig,
    WandbLoggerConfig,
)
from deepfake.errors import ConfigError
from tests.conftest import CONF

GROUPS = (
    "model",
    "training",
    "data",
    "hardware",
    "distributed",
    "backup",
    "logging",
    "logger",
    "eval",
    "debug",
)
_MODEL_PRESET = {"model.architecture", "model.pretrained", "model.dropout_rate", "model.img_size"}
#: Options that set a value other than the dataclass default on purpose, and the keys they set.
PRESETS: dict[str, set[str]] = {
    **{f"model/{name}": _MODEL_PRESET for name in ("convnext_tiny", "efficientnet_b0", "efficientnet_b4")},
    **{f"model/{name}": _MODEL_PRESET for name in ("resnet50", "swin_transformer", "vit_small", "xception")},
    "model/temporal": {"model.frames"},
    "data/folder": {"data.kind"},
    "data/manifest": {"data.kind"},
    # Fully synthetic images: validation carved from train, crops without resizing (docs/protocols.md).
    "data/generators": {"data.kind", "data.val_fraction", "data.geometry"},
    # The CLI's demo: 64 px images, no crop (its resize blurs the blend boundary at 64 px). `Config()` in Python
    # keeps the folder defaults (model-sized input, crop on).
    "data/synthetic": {"data.img_size", "data.augment.crop"},
    "backup/drive": {"backup.mirror", "backup.mirror_subdir"},
    # conf/debug/ presets (package _global_): each sets its mode's keys of the `debug` section.
    "debug/fast": {"debug.fast"},
    "debug/overfit": {"debug.overfit_batches"},
    "debug/limit": {"debug.limit_train_batches", "debug.limit_val_batches"},
    "debug/profile": {"debug.limit_train_batches", "debug.limit_val_batches", "debug.profiler.enabled"},
}
#: Keys whose comment lists examples (`auto | cpu | cuda | cuda:N | mps`), not a closed set of choices.
FREE_FORM = {"hardware.device"}


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a container into dotted keys; interpolations stay unresolved strings."""
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _defaults(schema: type) -> dict[str, Any]:
    return _leaves(OmegaConf.to_container(OmegaConf.structured(schema), resolve=False))


def _composed(cfg: DictConfig) -> dict[str, Any]:
    return _leaves(OmegaConf.to_container(cfg, resolve=False))


def _every_tracker() -> LoggerConfig:
    return LoggerConfig(
        tensorboard=TensorBoardLoggerConfig(), csv=CsvLoggerConfig(), mlflow=MlflowLoggerConfig(),
        wandb=WandbLoggerConfig(),
    )  # fmt: skip


def _logger_defaults(on: set[str]) -> dict[str, Any]:
    """The `logger` node with the trackers in `on` at their dataclass defaults and the others off (null)."""
    node = OmegaConf.to_container(OmegaConf.structured(_every_tracker()), resolve=False)
    assert isinstance(node, dict)
    for name in ("tensorboard", "csv", "mlflow", "wandb"):
        if name not in on:
            node[name] = None
    return _leaves({"logger": node})


def _options() -> list[str]:
    return [f"{group}/{path.stem}" for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def test_every_group_option_is_checked() -> None:
    """A new group folder under conf/ must be added to GROUPS, or its defaults go unchecked."""
    # conf/extract/ is extract.py's own tree: test_extract_defaults_match_the_dataclasses checks it. experiment/ holds
    # `_global_` presets of published protocols, set on purpose (tests/test_experiments.py checks them). explain/
    # is predict.py's group (test_predict_explain_options_set_their_method).
    groups = {p.name for p in CONF.iterdir() if p.is_dir()} - {
        "hydra",
        "hparams_search",
        "extract",
        "experiment",
        "perturb",  # evaluate.py's own group: test_perturb_options_match_the_dataclass
        "explain",
    }
    assert groups == set(GROUPS)
    assert set(PRESETS) <= set(_options()), "an allow-listed preset no longer exists"


@pytest.mark.parametrize("option", _options())
def test_yaml_defaults_match_the_dataclasses(option: str, compose_cfg: Callable[..., DictConfig]) -> None:
    """Composing `<group>=<option>` gives the dataclass default for every key of the group, except the keys that
    the option is an allow-listed preset for, which must really differ (or the allow-list is stale)."""
    group, name = option.split("/")
    got = {k: v for k, v in _composed(compose_cfg([f"{group}={name}"])).items() if k.startswith(f"{group}.")}
    want = {k: v for k, v in _defaults(Config).items() if k.startswith(f"{group}.")}
    if group == "logger":  # an option turns its trackers on: those at their dataclass defaults, the rest off
        want = _logger_defaults({k.split(".")[1] for k, v in got.items() if k.count(".") > 1 or v == {}})
    assert got.keys() == want.keys()
    differ = {k for k in want if got[k] != want[k]}
    allowed = PRESETS.get(option, set())
    assert differ - allowed == set(), {
        k: (f"yaml={got[k]!r}", f"dataclass={want[k]!r}") for k in differ - allowed
    }
    assert allowed <= differ, (
        f"{option}: {sorted(allowed - differ)} equal the dataclass; drop them from PRESETS"
    )


@pytest.mark.parametrize(("config_name", "schema"), [("train", Config), ("evaluate", EvaluateConfig)])
def test_root_yaml_defaults_match_the_dataclasses(
    config_name: str, schema: type, compose_cfg: Callable[..., DictConfig]
) -> None:
    """The root keys of train.yaml and evaluate.yaml (base_path, seed, checkpoint, ...) equal the schema's."""
    root = ("lr_finder.", "debug.")  # train.yaml's own sections (debug is also a group, checked above)
    got = {
        k: v for k, v in _composed(compose_cfg([], config_name)).items() if "." not in k or k.startswith(root)
    }
    want = {k: v for k, v in _defaults(schema).items() if "." not in k or k.startswith(root)}
    assert got == want


@pytest.mark.parametrize("name", [p.stem for p in sorted((CONF / "perturb").glob("*.yaml"))])
def test_perturb_options_match_the_dataclass(name: str, compose_cfg: Callable[..., DictConfig]) -> None:
    """evaluate.py's perturb=<name>: the dataclass defaults, but for the preset's types (known choices)."""
    got = {
        k: v
        for k, v in _composed(compose_cfg([f"perturb={name}"], "evaluate")).items()
        if k.startswith("perturb.")
    }
    want = {k: v for k, v in _defaults(EvaluateConfig).items() if k.startswith("perturb.")}
    assert got.keys() == want.keys()
    assert {k for k in want if got[k] != want[k]} == (set() if name == "none" else {"perturb.types"})
    assert set(got["perturb.types"]) <= set(choices.PERTURBATIONS)


def test_predict_yaml_defaults_match_the_dataclass(compose_cfg: Callable[..., DictConfig]) -> None:
    assert _composed(compose_cfg([], "predict")) == _defaults(PredictConfig)


@pytest.mark.parametrize("option", [p.stem for p in sorted((CONF / "explain").glob("*.yaml"))])
def test_predict_explain_options_set_their_method(
    option: str, compose_cfg: Callable[..., DictConfig]
) -> None:
    """`explain=<option>` sets explain.method to the option's name and nothing else; `explain.layer` still works."""
    cfg = compose_cfg([f"explain={option}", "explain.layer=backbone.layer3"], "predict")
    assert option in choices.EXPLAIN_METHODS
    assert dict(cfg.explain) == {"method": option, "layer": "backbone.layer3"}
    got = _composed(compose_cfg([f"explain={option}"], "predict"))
    want = {**_defaults(PredictConfig), "explain.method": option}
    assert got == want


def _commented_choices(path: Path) -> dict[str, tuple[str, ...]]:
    """Map each dotted key of a YAML file whose comment reads `a | b (why) | c: ...` to (a, b, c)."""
    found: dict[str, tuple[str, ...]] = {}
    stack: list[tuple[int, str]] = []
    for line in path.read_text().splitlines():
        m = re.match(r"^( *)([A-Za-z_]\w*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m[1]), m[2], m[3]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        comment = rest.partition("  # ")[2]
        if re.match(r"\w+ \| ", comment):  # `max |gradient|` is prose, not a list
            found[".".join(k for _, k in stack)] = tuple(
                re.match(r"[\w+]+", part)[0] for part in comment.split(" | ")
            )
    return found


def _yaml_choices() -> dict[str, tuple[str, ...]]:
    # the root keys of train.yaml (calibration, ...), then every group's
    found = {k: v for k, v in _commented_choices(CONF / "train.yaml").items() if "." not in k}
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            found.update({f"{group}.{k}": v for k, v in _commented_choices(path).items()})
    return found


def test_yaml_comments_list_exactly_the_validated_choices() -> None:
    """Every `a | b | c` comment under conf/ names the same choices, in the same order, as deepfake/choices.py,
    and every choice key has such a comment."""
    documented = {k: v for k, v in _yaml_choices().items() if k not in FREE_FORM}
    assert documented == choices.TRAIN
    explain = {f"explain.{k}": v for k, v in _commented_choices(CONF / "explain" / "none.yaml").items()}
    assert {**_commented_choices(CONF / "predict.yaml"), **explain} == choices.PREDICT
    assert _commented_choices(CONF / "evaluate.yaml") == {"ensemble.mean": choices.ENSEMBLE_MEANS}


def test_comment_parser_reads_notes_and_colons(tmp_path: Path) -> None:
    """The parser behind the comment test finds nested keys and strips the notes, so it can see a mismatch."""
    yaml = tmp_path / "x.yaml"
    yaml.write_text(
        "a:\n  b: x  # x | y (why) | z: note\n  c: 1  # max |gradient| (prose)\nd: 1  # no list\n"
    )
    assert _commented_choices(yaml) == {"a.b": ("x", "y", "z")}


@pytest.mark.parametrize(("key", "bad"), [(k, "nope") for k in choices.TRAIN])
def test_validation_refuses_a_value_outside_the_choices(key: str, bad: str) -> None:
    """`validate` reads deepfake/choices.py: each choice key refuses a stray value, naming the key and every
    allowed value in one message."""
    from deepfake.config import to_config

    cfg = OmegaConf.structured(Config(logger=_every_tracker()))  # logger.wandb's choices need it on
    OmegaConf.update(cfg, key, bad)
    with pytest.raises(ConfigError) as err:
        to_config(cfg)
    assert str(err.value) == f"{key}={bad!r} is not one of {', '.join(choices.TRAIN[key])}"


def test_consumers_use_the_single_choice_lists() -> None:
    """The modules that take these values check against the same tuples, not copies."""
    from deepfake.data import settings  # DataSettings checks the data group's choices
    from deepfake.prediction import driver
    from deepfake.system import console, distributed

    assert settings.KINDS is choices.DATA_KINDS
    assert settings.BALANCE is choices.BALANCE
    assert settings.CACHES is choices.CACHES
    assert settings.DECODERS is choices.DECODERS
    assert settings.FAKE_SYNTHESIS is choices.FAKE_SYNTHESIS
    assert console.MODES is choices.PROGRESS
    assert distributed.BACKENDS is choices.BACKENDS
    assert driver.FORMATS is choices.PREDICTION_FORMATS


def test_data_module_error_lists_the_shared_choices(tmp_path: Path) -> None:
    """The DataModule's own check names the same choices as validation."""
    from deepfake.data import DataModule

    with pytest.raises(
        ConfigError, match=re.escape(f"data.cache='nope' is not one of {', '.join(choices.CACHES)}")
    ):
        DataModule(kind="folder", root=str(tmp_path), cache="nope")


#: Options of extract.py's groups that set their own layout or detector kind, by design.
EXTRACT_PRESETS = {"dataset": {"dataset.kind"}, "detector": {"detector.kind"}}


@pytest.mark.parametrize(
    "option",
    [f"{g}/{p.stem}" for g in EXTRACT_PRESETS for p in sorted((CONF / "extract" / g).glob("*.yaml"))],
)
def test_extract_defaults_match_the_dataclasses(option: str) -> None:
    """`conf/extract/` against `deepfake/extraction/config.py`: the same check as for train.py's tree."""
    from hydra import compose, initialize_config_dir

    from deepfake.extraction.config import ExtractConfig, register_extract_config

    register_extract_config()
    group, name = option.split("/")
    with initialize_config_dir(config_dir=str(CONF / "extract"), version_base="1.3"):
        cfg = compose(config_name="extract", overrides=[f"{group}={name}", "root=/r", "out=/o"])
    got = {k: v for k, v in _composed(cfg).items() if k not in ("root", "out")}
    want = {k: v for k, v in _defaults(ExtractConfig).items() if k not in ("root", "out")}
    assert got.keys() == want.keys()
    differ = {k for k in want if got[k] != want[k]}
    assert differ <= EXTRACT_PRESETS[group], {k: (got[k], want[k]) for k in differ}
