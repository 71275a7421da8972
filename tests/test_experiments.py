"""`experiment=` presets: each composes with the data choice and overrides, carries its cited values, and trains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from deepfake.config import to_config
from deepfake.training.runner import train
from deepfake.training.schedulers import create_scheduler
from tests.conftest import CONF
from tests.runs import run_dir_of

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
#: One optimizer step on a tiny input: pretrained weights off, 2 synthetic videos of 1 frame per split, batch 2.
TINY = [
    "model.pretrained=false",
    "model.weights=null",
    "model.img_size=64",  # at 32 px the B4s end in 1x1 maps and one unclipped step on 2 images overflows
    "data.img_size=64",
    "data.num_workers=0",
    "data.synthetic.videos_per_split={train: 2, val: 2, test: 2}",
    "data.synthetic.frames_per_video=1",
    "training.batch_size=2",
    "training.num_epochs=1",
    "training.log_every_n_steps=1",
    "training.amp=off",
    "check_on_start=false",
    "backup.enabled=false",
    "logging.tensorboard=false",
    "hardware.device=cpu",
]
#: What each preset must reproduce (the values its comments cite).
EXPECTED = {
    "sbi_effb4": {
        "model.architecture": "tf_efficientnet_b4.ap_in1k",
        "model.img_size": 380,
        "training.batch_size": 32,
        "training.num_epochs": 100,
        "training.learning_rate": 0.001,
        "training.optimizer._target_": "torch.optim.SGD",
        "training.optimizer.momentum": 0.9,
        "training.sam.enabled": True,
        "training.sam.rho": 0.05,
        "training.scheduler.name": "linear",
        "training.scheduler.decay_start_epochs": 75.0,
        "data.fake_synthesis": "sbi",
        "data.sbi.real_only": True,
    },
    "dfb_xception": {
        "model.architecture": "xception",
        "model.img_size": 256,
        "training.batch_size": 32,
        "training.num_epochs": 10,
        "training.learning_rate": 0.0002,
        "training.weight_decay": 0.0005,
        "training.optimizer._target_": "torch.optim.Adam",
        "training.scheduler.name": "constant",
        "data.frames_per_video": 32,
    },
    "dfb_effb4": {
        "model.architecture": "tf_efficientnet_b4.in1k",
        "model.img_size": 256,
        "training.batch_size": 32,
        "training.learning_rate": 0.0002,
        "training.optimizer._target_": "torch.optim.Adam",
        "data.frames_per_video": 32,
    },
    "ffpp_cross_method": {
        "data.train_methods_mode": "only",
        "data.test_methods": [],
        "eval.score_test_split": True,
    },
    "genimage_sd14": {
        "model.architecture": "resnet50",
        "model.pretrained": False,
        "model.img_size": 224,
        "training.batch_size": 128,
        "training.num_epochs": 200,
        "training.learning_rate": 0.05,
        "training.weight_decay": 2e-5,
        "training.optimizer._target_": "torch.optim.SGD",
        "training.optimizer.nesterov": True,
        "training.scheduler.name": "cosine",
        "training.scheduler.warmup_epochs": 3.0,
        "data.train_methods": ["stable_diffusion_v_1_4"],
        "data.geometry": "crop",
        "eval.score_test_split": True,
    },
    "univfd_progan": {
        "model.architecture": "vit_base_patch16_clip_224.openai",
        "model.freeze_backbone": True,
        "training.learning_rate": 0.0001,
        "data.train_methods": ["progan"],
        "data.geometry": "crop",
        "data.augment.blur.p": 0.5,
        "data.augment.jpeg.quality": [30, 100],
        "eval.score_test_split": True,
    },
    "clip_probe": {
        "model.architecture": "vit_base_patch16_clip_224.openai",
        "model.pretrained": True,
        "model.freeze_backbone": True,
        "training.learning_rate": 0.0001,
        "training.weight_decay": 0.0,
        "training.optimizer._target_": "torch.optim.AdamW",
        "training.scheduler.name": "plateau",
    },
}


#: Presets of a data protocol (docs/protocols.md): they pick their data and methods.
PROTOCOLS = ("ffpp_cross_method", "genimage_sd14", "univfd_progan")


def test_every_preset_is_checked() -> None:
    assert sorted(EXPECTED) == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_a_data_choice_and_overrides(
    name: str, compose_cfg: Callable[..., DictConfig]
) -> None:
    overrides = [f"experiment={name}", "data=folder", "data.root=/data/x", "training.num_epochs=3"]
    cfg = to_config(compose_cfg(overrides))
    for key, value in {**EXPECTED[name], "training.num_epochs": 3}.items():
        assert cfg_value(cfg, key) == value, key
    assert cfg.data.kind == "folder" and cfg.data.root == "/data/x"  # the command line's data choice wins
    assert cfg.data.img_size is None  # the loader feeds the protocol's input size
    if name == "sbi_effb4":
        assert "betas" not in cfg.training.optimizer  # AdamW's keys do not leak into SGD


def test_the_cross_method_preset_sweeps_the_four_methods_under_a_recipe() -> None:
    """`-m 'experiment=[dfb_effb4,ffpp_cross_method]'` runs one job per FF++ method, with the recipe's model."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            ["experiment=[dfb_effb4,ffpp_cross_method]", "data=manifest", "data.manifest=/x.csv"],
            return_hydra_config=True,
        )
    params = cfg.hydra.sweeper.params
    (sweep,) = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    assert sweep.key_or_group == "data.train_methods"
    assert list(sweep.sweep_string_iterator()) == [
        "[Deepfakes]",
        "[Face2Face]",
        "[FaceSwap]",
        "[NeuralTextures]",
    ]
    assert (cfg.model.architecture, cfg.data.kind, cfg.eval.score_test_split) == (
        "tf_efficientnet_b4.in1k",
        "manifest",
        True,
    )


def cfg_value(cfg: DictConfig, key: str) -> object:
    node: object = cfg
    for part in key.split("."):
        node = node[part]  # type: ignore[index]
    return node


def test_linear_schedule_holds_then_decays_to_zero() -> None:
    """SBI's LinearDecayLR: constant for three quarters of the run, then a straight line to 0."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = create_scheduler(
        opt, steps_per_epoch=1, num_epochs=8, name="linear", warmup_epochs=0, decay_start_epochs=6
    )
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step_update()
    assert lrs == pytest.approx([1.0] * 7 + [0.5])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains_one_step_on_tiny_data(
    name: str, compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # The protocols' own data (generators, FF++'s methods) is not the synthetic set: train on all of it.
    protocol = (
        ["data=synthetic", "data.train_methods=[]", "eval.score_test_split=false"]
        if name in PROTOCOLS
        else []
    )
    train(compose_cfg([f"experiment={name}", f"base_path={tmp_path}", *TINY, *protocol]))
    last = torch.load(run_dir_of(tmp_path) / "checkpoints" / "last.pt", weights_only=True)
    assert last["train_state"]["global_step"] == 1
    state = last["optimizer"]["state"]
    kind = {"sbi_effb4": {"momentum_buffer"}, "genimage_sd14": {"momentum_buffer"}}
    assert set(next(iter(state.values()))) == kind.get(name, {"step", "exp_avg", "exp_avg_sq"})
    if name in ("clip_probe", "univfd_progan"):  # only the linear head trained
        assert len(state) == 2
