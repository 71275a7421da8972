"""The video-level temporal model: a small transformer over the per-frame features of one clip.

`get_model(frames=T)` gives a `DeepfakeDetector` whose head is a `TemporalHead`: the T frames of a clip pass
through the timm backbone as one (B*T, 3, H, W) batch, and the head reads the (B, T, D) features as T tokens.
A learnable CLS token is prepended, a learnable positional embedding marks each frame's place, and 1-2
pre-norm transformer layers let the CLS token and the frames attend to each other; the CLS output gives the
clip's logit. CLS rather than attention pooling: pooling is one weighted mean of frames that never see each
other, while in the transformer the frame tokens exchange information first, so the token can weigh how
frames differ (flicker of a blend boundary, identity drift) and not only how fake each frame looks.
The idea is the video-level transformer over per-frame CNN features of Wodajo & Atnafu, "Deepfake Video
Detection Using Convolutional Vision Transformer" (2021), here with any timm backbone and a CLS token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepfake.errors import ConfigError

#: Width of the temporal transformer; the backbone's features are projected to it.
TEMPORAL_DIM = 256


class TemporalHead(nn.Module):
    """(B, T, D) frame features -> (B,) clip logits through a CLS-token transformer."""

    def __init__(
        self, num_features: int, frames: int, layers: int = 1, heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if layers < 1 or heads < 1 or TEMPORAL_DIM % heads:
            raise ConfigError(
                f"model.temporal_layers={layers} and model.temporal_heads={heads}: need >= 1 layer and a head "
                f"count dividing {TEMPORAL_DIM} (1, 2, 4, 8, ...)"
            )
        self.frames = frames
        self.proj = nn.Linear(num_features, TEMPORAL_DIM)
        self.cls = nn.Parameter(torch.zeros(1, 1, TEMPORAL_DIM))
        self.pos = nn.Parameter(torch.zeros(1, frames + 1, TEMPORAL_DIM))
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            TEMPORAL_DIM,
            heads,
            2 * TEMPORAL_DIM,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(TEMPORAL_DIM)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(TEMPORAL_DIM, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 3 or features.shape[1] != self.frames:
            raise ValueError(
                f"a clip model with {self.frames} frames takes (B, {self.frames}, 3, H, W) clips; "
                f"its backbone gave features {tuple(features.shape)}"
            )
        tokens = self.proj(features)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = self.encoder(tokens + self.pos.to(tokens.dtype))
        return self.fc(self.norm(tokens[:, 0])).squeeze(1)


def clip_length(model: Any) -> int:
    """Frames per clip a model takes: `frames` of a clip model, 1 for a per-image model (or a DDP wrapper's)."""
    model = getattr(model, "module", model)
    return int(getattr(model, "frames", 1))
