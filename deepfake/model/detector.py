"""Detectors: a timm backbone, dropout and a one-logit head (label 1 = fake), optionally with extra input
streams (`deepfake.model.fusion`) and a blend-mask head (`deepfake.model.mask_head`)."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.nn import functional as F

from deepfake.config.checks import MAX_CLIP_FRAMES
from deepfake.errors import ConfigError
from deepfake.model.fusion import EarlyFusion, LateFusion, check_streams
from deepfake.model.mask_head import MaskDecoder, mask_level
from deepfake.model.pretrained import require_pretrained
from deepfake.model.temporal import TemporalHead
from deepfake.model.weights import load_backbone_weights

log = logging.getLogger("deepfake.models")  # the name train.log has always shown

#: Names the field uses, mapped to timm model names.
ALIASES: dict[str, str] = {
    "tiny": "test_resnet",
    "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin": "swin_tiny_patch4_window7_224",
    "xception": "legacy_xception",
    "efficientnet_b4": "efficientnet_b4",
    "efficientnet_b0": "efficientnet_b0",
    "resnet50": "resnet50",
    "convnext_tiny": "convnext_tiny",
    "vit_small": "vit_small_patch16_224",
}


def resolve_architecture(name: str) -> str:
    """Map an alias or timm name to a timm name; unknown names get the closest suggestions."""
    if name in ALIASES:
        return ALIASES[name]
    if timm.is_model(name):
        return name
    candidates = list(ALIASES) + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"model.architecture={name!r} is not a known alias or timm model.{hint} "
        f"Aliases: {', '.join(ALIASES)}; any name from timm.list_models() works too."
    )


def check_pretrained(architecture: str, pretrained: bool, weights: str | None) -> None:
    """Fail at once, before any run folder or model exists, when `model.pretrained` weights are neither in the
    local cache nor downloadable now (`deepfake.model.pretrained`); a local `model.weights` file replaces them."""
    if pretrained and not weights:
        require_pretrained(resolve_architecture(architecture), alias=architecture)


class DeepfakeDetector(nn.Module):
    """Backbone + dropout + linear head returning one fake-logit per image.

    Inputs may be uint8 (N, 3, H, W): they are scaled and normalised here, on the device, so loaders
    ship compact uint8 and the preprocessing travels with the model (predict and export reuse it).
    """

    def __init__(
        self,
        backbone: nn.Module,
        dropout_rate: float = 0.0,
        architecture: str = "",
        img_size: int = 224,
        channels_last: bool = False,
        head: nn.Module | None = None,
        frames: int = 1,
        mask_decoder: nn.Module | None = None,
        mask_index: int = -1,
        alias: str = "",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.architecture = architecture  # the timm name: what checkpoints store and rebuild from
        # As the user chose it (`tiny`, not timm's `test_resnet`), for logs and summaries.
        self.display_name = (
            f"{alias} (timm {architecture})" if alias and alias != architecture else architecture
        )
        self.img_size = img_size
        self.channels_last = channels_last
        cfg = getattr(backbone, "pretrained_cfg", {}) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.head = head or nn.Sequential(nn.Dropout(dropout_rate), nn.Linear(backbone.num_features, 1))
        self.frames = frames  # > 1: a clip model, input (B, frames, 3, H, W), one logit per clip
        self.mask_decoder = mask_decoder
        self.mask_index = mask_index  # the `forward_intermediates` level the mask decoder reads
        self.backbone_frozen = False
        # Grad-CAM's target layer (a module path); None = the family's default (deepfake.explain.target)
        self.explain_layer: str | None = None

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Train the head only (`frozen`) or everything; a frozen backbone also stays in eval mode, so its
        BatchNorm statistics and dropout are those of the features it was trained to give."""
        self.backbone_frozen = frozen
        self.backbone.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> DeepfakeDetector:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    @property
    def preprocess(self) -> dict[str, Any]:
        """What an input pipeline must reproduce; saved in checkpoints for predict/evaluate."""
        clip = {"frames": self.frames} if self.frames > 1 else {}
        return {
            "img_size": self.img_size,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            **clip,
        }

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        x = (x - self.mean) / self.std
        # The loaders deliver channels-last batches; the model runs in the layout it was configured for.
        return x.contiguous(
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Fake logits (N,); a training batch that carries masks (a fourth channel, see
        `deepfake.model.mask_head`) also gets the mask logits (N, 1, h, w) back."""
        if self.frames > 1:  # a clip's frames run through the backbone as one batch, the head pools them
            if x.ndim != 5:
                raise ValueError(
                    f"a clip model takes (B, {self.frames}, 3, H, W) clips; got {tuple(x.shape)}"
                )
            features = self.backbone(self.normalize(x.flatten(0, 1))).unflatten(0, x.shape[:2])
            return self.head(features)
        if self.mask_decoder is None:
            return self.head(self.backbone(self.normalize(x))).squeeze(1)
        logits, masks = self._with_masks(x)
        return logits if x.shape[1] == 3 else (logits, masks)

    def _with_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass for both heads: the fake logits and the mask logits (N, 1, h, w)."""
        final, (features,) = self.backbone.forward_intermediates(
            self.normalize(x[:, :3]), indices=[self.mask_index]
        )
        logits = self.head(self.backbone.forward_head(final, pre_logits=True)).squeeze(1)
        return logits, self.mask_decoder(features)

    @torch.no_grad()
    def predict_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Blend-mask probabilities (N, 1, H, W) at the input's size, for previews and TensorBoard."""
        if self.mask_decoder is None:
            raise ConfigError("this detector has no mask head; train it with model.mask_head=true")
        logits = self._with_masks(x)[1].float()
        return torch.sigmoid(F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False))

    def configure_optimizers(
        self,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.05,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        steps_per_epoch: int | None = None,
        num_epochs: int | None = None,
        param_groups: list[dict[str, Any]] | None = None,
    ) -> tuple[torch.optim.Optimizer, Any]:
        """Build the optimizer (norm and bias parameters get no weight decay) and, if given, the scheduler.

        `optimizer` and `scheduler` are partials (Hydra `_partial_: true`); the defaults are AdamW and none.
        `param_groups` replaces the default grouping (per-part rates: `deepfake.training.param_groups`).
        """
        groups = param_groups or param_groups_weight_decay(self, weight_decay=weight_decay)
        factory = optimizer or torch.optim.AdamW
        opt = factory(groups, lr=learning_rate)
        sched = None
        if scheduler is not None:
            if steps_per_epoch is None or num_epochs is None:
                raise ValueError("a scheduler needs steps_per_epoch and num_epochs")
            sched = scheduler(opt, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs)
        return opt, sched


def get_model(
    architecture: str = "tiny",
    pretrained: bool = False,
    weights: str | None = None,
    dropout_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    img_size: int | None = None,
    channels_last: bool = False,
    compile: bool = False,
    grad_checkpointing: bool = False,
    frames: int = 1,
    temporal_layers: int = 1,
    temporal_heads: int = 4,
    freeze_backbone: bool = False,
    streams: Sequence[str] = ("rgb",),
    fusion: str = "early",
    mask_head: bool = False,
    explain_layer: str | None = None,
) -> DeepfakeDetector:
    """Create a detector from an alias or any timm name.

    `weights` is a local .safetensors/.pth file of the backbone (the offline way to get pretrained
    weights), or a detector checkpoint of this project; its classifier or head is dropped and ours is freshly
    initialised. A file that does not fit the architecture is refused (`deepfake.model.weights`). `frames` > 1 makes
    a clip model whose head is a temporal transformer over the frames' features (`deepfake.model.temporal`).
    `freeze_backbone` trains the head only (a linear probe); `training.unfreeze_at_epoch` can lift it.
    rgb add SRM/DCT inputs fused `early` or `late`; `mask_head` adds the blend-mask decoder. `explain_layer`
    is the module path Grad-CAM reads (checked when an explanation is made; None = the family's default).
    """
    name = resolve_architecture(architecture)
    streams = _check_shape(streams, fusion, frames, mask_head)
    path = Path(weights).expanduser() if weights else None
    if path is not None and not path.is_file():
        raise ConfigError(f"model.weights={weights} does not exist; pass a .safetensors or .pth file")
    if pretrained and path is None:
        require_pretrained(name, alias=architecture)

    def make_backbone() -> nn.Module:
        return _backbone(
            name, pretrained and path is None, path, drop_path_rate, img_size, grad_checkpointing
        )

    backbone = make_backbone()
    size = img_size or int(backbone.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    if len(streams) > 1 and fusion == "early":
        backbone = EarlyFusion(backbone, streams)
    elif len(streams) > 1:
        backbone = LateFusion(backbone, make_backbone, streams)
    index, channels = mask_level(backbone, name, size) if mask_head else (-1, 0)
    head = None
    if frames > 1:
        head = TemporalHead(backbone.num_features, frames, temporal_layers, temporal_heads, dropout_rate)
    model = DeepfakeDetector(
        backbone, dropout_rate=dropout_rate, architecture=name, img_size=size, channels_last=channels_last,
        head=head, frames=frames, mask_decoder=MaskDecoder(channels) if mask_head else None, mask_index=index,
        alias=architecture,
    )  # fmt: skip
    model.explain_layer = explain_layer
    return _finish(model, freeze_backbone, channels_last, compile)


def _finish(
    model: DeepfakeDetector, freeze_backbone: bool, channels_last: bool, compile: bool
) -> DeepfakeDetector:
    """Freeze, lay out and compile a built detector as asked, and log what was built."""
    if freeze_backbone:
        model.freeze_backbone()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        # In-place compile keeps state_dict keys free of the `_orig_mod.` prefix.
        model.compile()
    log.info(
        "model %s: %.2fM parameters, input %dpx",
        model.display_name,
        sum(p.numel() for p in model.parameters()) / 1e6,
        model.img_size,
    )
    return model


def _check_shape(streams: Sequence[str], fusion: str, frames: int, mask_head: bool) -> list[str]:
    """The streams, checked, and the combinations of frames, streams and mask head that cannot be built."""
    streams = check_streams(streams, fusion)
    if not 1 <= frames <= MAX_CLIP_FRAMES:  # a clip's frames are one item: 100000 of them exhaust the host
        raise ConfigError(
            f"model.frames must be in [1, {MAX_CLIP_FRAMES}] (got {frames}); 1 is a per-image model, published "
            "clip models use 8 to 32"
        )
    if mask_head and frames > 1:
        raise ConfigError(
            f"model.mask_head=true cannot go with a clip model (model.frames={frames}): the blend masks come from "
            "SBI synthesis of single images; use one of them"
        )
    if mask_head and len(streams) > 1 and fusion == "late":
        raise ConfigError(
            "model.mask_head=true cannot follow model.fusion=late (several backbones, no single feature "
            "map); use model.fusion=early or model.mask_head=false"
        )
    return streams


def _backbone(
    name: str,
    pretrained: bool,
    path: Path | None,
    drop_path_rate: float,
    img_size: int | None,
    grad_checkpointing: bool,
) -> nn.Module:
    """One timm backbone without classifier, with hub or local weights (a local file replaces the hub)."""
    kwargs: dict[str, Any] = {"num_classes": 0}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if img_size is not None and _takes_img_size(name):
        kwargs["img_size"] = img_size
    try:
        backbone = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:
        if not pretrained:
            raise
        raise ConfigError(
            f"could not load pretrained weights for {name} (no local copy and no network): "
            f"{type(e).__name__}: {e}. Offline, pass a local file: model.weights=/path/{name}.safetensors "
            f"(or .pth), or train from scratch with model.pretrained=false."
        ) from None
    if path is not None:
        load_backbone_weights(backbone, path, name)
    if grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    return backbone


def _takes_img_size(name: str) -> bool:
    """Transformers fix their grid at build time and need img_size; CNNs take any size as is."""
    return any(k in name for k in ("vit", "swin", "deit", "beit", "eva", "maxvit", "coatnet"))
