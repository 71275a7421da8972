"""How well a heatmap matches where a face was really manipulated, for fakes whose mask is known.

- pointing game (Zhang et al., "Top-down neural attention by excitation backprop", 2016): the share of fakes
  whose heatmap maximum lies inside the mask; a map with no heat at all points nowhere and misses;
- heat in mask: the mean share of each map's total heat that lies inside its mask;
- mask area: the mean share of the image the masks cover, the chance level of both (a map that points
  anywhere, or spreads its heat evenly, scores about this).

A mask's inside is where it reaches half its own maximum: FF++'s mask videos are binary but compressed (noise
near 0), and SBI's soft masks are scaled by a blend ratio of 0.5 to 1. Masks are resized to the heatmap's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepfake.explain.cam import resize_map


def inside(mask: np.ndarray) -> np.ndarray:
    """bool (H, W): where a mask (any scale, 0 = untouched) reaches half of its maximum."""
    top = float(mask.max()) if mask.size else 0.0
    return mask >= 0.5 * top if top > 0 else np.zeros(mask.shape, dtype=bool)


def pointing_hit(heat: np.ndarray, region: np.ndarray) -> bool:
    """The map's maximum lies inside `region` (the first maximum in row order when several tie)."""
    return bool(heat.max() > 0 and region.flat[int(np.argmax(heat))])


def heat_share(heat: np.ndarray, region: np.ndarray) -> float:
    """The share of the map's heat inside `region`; 0 for a map without heat."""
    total = float(heat.sum())
    return float(heat[region].sum()) / total if total > 0 else 0.0


def faithfulness(heats: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict[str, float | int]:
    """pointing_game, heat_in_mask, mask_area (chance) and faces over pairs of a heatmap and its fake's mask;
    each mask is resized to its heatmap. NaN scores when no pair is given."""
    hits, shares, areas = [], [], []
    for heat, mask in zip(heats, masks, strict=True):
        region = inside(resize_map(np.asarray(mask, dtype=np.float32), heat.shape))
        hits.append(pointing_hit(heat, region))
        shares.append(heat_share(heat, region))
        areas.append(float(region.mean()))
    mean = (lambda xs: float(np.mean(xs))) if hits else (lambda xs: float("nan"))
    return {
        "pointing_game": mean(hits),
        "heat_in_mask": mean(shares),
        "mask_area": mean(areas),
        "faces": len(hits),
    }
