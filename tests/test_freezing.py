"""Backbone freezing, per-part learning rates, layer-wise decay and the unfreeze warm restart."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from deepfake.checks.start import config_findings
from deepfake.config import Config, to_config
from deepfake.errors import ConfigError
from deepfake.model.detector import get_model
from deepfake.system.precision import Precision
from deepfake.training.engine import LoopConfig, StepContext, TrainState, train_epoch
from deepfake.training.freezing import BackboneSchedule
from deepfake.training.optimizer import build_optimizer
from deepfake.training.sam import SAM

CPU = torch.device("cpu")


def config(**training: object) -> Config:
    cfg = Config()
    for key, value in training.items():
        setattr(cfg.training, key, value)
    return cfg


def one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    g = torch.Generator().manual_seed(0)
    batch = (
        torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.tensor([0, 1, 0, 1]),
    )
    loop = LoopConfig(grad_clip_mode="off")
    train_epoch(
        StepContext(model, optimizer, Precision("cpu", None), CPU), [(*batch, None)], TrainState(), loop, 1
    )


def test_a_frozen_backbone_keeps_its_weights_and_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = get_model("tiny", img_size=32, freeze_backbone=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer, _ = build_optimizer(model, OmegaConf.structured(config()), with_scheduler=False)
    one_step(model, optimizer)
    model.train()
    assert model.training and model.head.training and not model.backbone.training
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.1.weight", "head.1.bias"}  # BatchNorm running_mean/var untouched too
    assert not any(p.requires_grad for p in model.backbone.parameters())
    # All parameters wait in the optimizer, so unfreezing needs no new groups.
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


@pytest.mark.slow  # seconds of training or loader workers; the fast tier stays under a minute
def test_unfreezing_trains_the_backbone_again() -> None:
    torch.manual_seed(0)
    model = get_model("tiny", img_size=32, freeze_backbone=True)
    cfg = OmegaConf.structured(config(unfreeze_at_epoch=2))
    cfg.model.freeze_backbone = True
    optimizer, _ = build_optimizer(model, cfg, with_scheduler=False)
    schedule = BackboneSchedule(True, 2, 0.0, steps_per_epoch=5)
    assert not schedule.set_epoch(model, 1) and model.backbone_frozen  # epochs 0, 1: frozen
    assert schedule.set_epoch(model, 2) and not model.backbone_frozen
    weight = model.backbone.conv1[0].weight.detach().clone()
    one_step(model, optimizer)
    assert model.backbone.training and not torch.equal(weight, model.backbone.conv1[0].weight)
    assert schedule.set_epoch(model, 1) and model.backbone_frozen  # a resume into a frozen epoch re-freezes


def test_backbone_lr_scale_sets_the_backbones_rate_and_the_schedule_keeps_the_ratio() -> None:
    model = get_model("tiny", img_size=32)
    cfg = OmegaConf.structured(config(learning_rate=1e-2, backbone_lr_scale=0.1))
    optimizer, schedule = build_optimizer(model, cfg, steps_per_epoch=10, num_epochs=1)
    parts = {g["part"]: g["lr"] for g in optimizer.param_groups}
    assert optimizer.param_groups[0]["part"] == "head"  # train/lr logs the head's rate, as before
    for _ in range(4):
        optimizer.step()
        schedule.step_update()
    lrs = {g["part"]: g["lr"] for g in optimizer.param_groups}
    assert parts["backbone"] == pytest.approx(parts["head"] * 0.1)  # warmup starts each at its own rate
    assert lrs["backbone"] == pytest.approx(lrs["head"] * 0.1) and lrs["head"] != parts["head"]


def test_layer_decay_scales_each_backbone_layer_from_the_top() -> None:
    model = get_model("tiny", img_size=32)
    cfg = OmegaConf.structured(config(learning_rate=1.0, layer_decay=0.5))
    cfg.training.sam.enabled = True
    optimizer, _ = build_optimizer(model, cfg, with_scheduler=False)
    assert isinstance(optimizer, SAM)  # SAM wraps whatever groups the recipe makes
    backbone = sorted({g["lr"] for g in optimizer.param_groups if g["part"] == "backbone"}, reverse=True)
    assert len(backbone) >= 3
    assert backbone == pytest.approx([0.5**k for k in range(len(backbone))])
    assert {g["lr"] for g in optimizer.param_groups if g["part"] == "head"} == {1.0}
    decays = {g["weight_decay"] for g in optimizer.param_groups}
    assert decays == {0.0, cfg.training.weight_decay}  # norms and biases still get none


def test_without_per_part_settings_the_groups_are_the_default_two() -> None:
    """Checkpoints written before these options existed keep loading into the optimizer."""
    model = get_model("tiny", img_size=32)
    optimizer, _ = build_optimizer(model, OmegaConf.structured(config()), with_scheduler=False)
    reference, _ = model.configure_optimizers(weight_decay=0.05)
    optimizer.load_state_dict(reference.state_dict())
    assert len(optimizer.param_groups) == 2 and "part" not in optimizer.param_groups[0]


def test_the_warm_restart_ramps_the_backbone_only_and_restores_the_schedulers_lr() -> None:
    schedule = BackboneSchedule(True, 2, warmup_epochs=1.0, steps_per_epoch=3)
    assert [schedule.factor(s) for s in range(5, 10)] == [1.0, 0.25, 0.5, 0.75, 1.0]
    groups = [{"params": [], "lr": 0.4, "part": "head"}, {"params": [], "lr": 0.2, "part": "backbone"}]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    optimizer.param_groups = groups
    with schedule.warm_lr(optimizer, 6):
        assert [g["lr"] for g in groups] == [0.4, 0.2 * 0.25]
    assert [g["lr"] for g in groups] == [0.4, 0.2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.unfreeze_at_epoch=2"], "needs a frozen start: add model.freeze_backbone=true"),
        (["training.backbone_lr_scale=0"], "training.backbone_lr_scale must be > 0"),
        (["training.layer_decay=1.5"], "training.layer_decay must be in (0, 1]"),
        (["training.sam.enabled=true", "training.sam.rho=-1"], "training.sam.rho must be > 0"),
    ],
)
def test_bad_recipe_settings_are_refused_by_name(overrides: list[str], message: str) -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.from_dotlist(overrides))
    with pytest.raises(ConfigError) as refused:
        to_config(cfg)
    assert message in str(refused.value)


def test_a_frozen_random_backbone_is_flagged_before_training(compose_cfg) -> None:
    """A probe on random features is a wasted run: the start checks (and check=true) say so, a pretrained one is fine."""
    findings = config_findings(
        compose_cfg(["model.freeze_backbone=true", "training.unfreeze_at_epoch=3"]), 80
    )
    (warning,) = [f for f in findings if "freeze_backbone" in f.text]
    assert warning.level == "warning" and "first 3 epoch(s), on random features" in warning.text
    assert "model.weights=<file>" in warning.text
    pretrained = config_findings(compose_cfg(["model.freeze_backbone=true", "model.pretrained=true"]), 80)
    assert not [f for f in pretrained if "freeze_backbone" in f.text]


def test_a_mask_decoder_trains_at_the_heads_rate_under_per_part_settings() -> None:
    """Per-part groups cover every parameter: the mask head's decoder is not the backbone, so it goes with the head."""
    model = get_model("tiny", img_size=32, mask_head=True)
    cfg = OmegaConf.structured(config(learning_rate=1e-2, backbone_lr_scale=0.1))
    optimizer, _ = build_optimizer(model, cfg, with_scheduler=False)
    grouped = {id(p): g["part"] for g in optimizer.param_groups for p in g["params"]}
    assert set(grouped) == {id(p) for p in model.parameters()}
    assert {grouped[id(p)] for p in model.mask_decoder.parameters()} == {"head"}


def test_layer_decay_is_refused_for_a_fused_multi_stream_backbone() -> None:
    model = get_model("tiny", img_size=32, streams=["rgb", "srm"])
    cfg = OmegaConf.structured(config(layer_decay=0.75))
    with pytest.raises(ConfigError, match=r"^training.layer_decay=0.75 splits a timm backbone into layers, but "
                       r"model.streams wraps it in EarlyFusion"):  # fmt: skip
        build_optimizer(model, cfg, with_scheduler=False)
