"""Procedural face-crop deepfake dataset whose fakes are Self-Blended Images, written once as JPEGs.

It is the project's embedded default dataset, so ``python train.py`` runs offline on a 2-core CPU in under a
minute. Fakes follow SBI (Shiohara & Yamasaki, CVPR 2022): each real frame is blended with a colour/frequency/
position-perturbed copy of itself, so the only evidence is a blending boundary and an inside/outside
inconsistency, partly hidden by JPEG. Real and fake videos of a person share frames, so identity is no cue.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
FAKE_METHOD = "sbi"
DEFAULT_VIDEOS_PER_SPLIT = {"train": 300, "val": 100, "test": 100}
COMPLETE_MARKER = ".complete"

Array = np.ndarray

_SKIN = np.array([[0.96, 0.80, 0.69], [0.80, 0.60, 0.45], [0.55, 0.37, 0.25], [0.33, 0.21, 0.14]], np.float32)
_HAIR = np.array(
    [[0.07, 0.05, 0.04], [0.28, 0.17, 0.09], [0.78, 0.63, 0.38], [0.52, 0.24, 0.11], [0.62, 0.61, 0.60]],
    np.float32,
)
_IRIS = np.array([[0.35, 0.20, 0.10], [0.30, 0.45, 0.65], [0.30, 0.45, 0.30], [0.14, 0.10, 0.08]], np.float32)


def _grid(size: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates in [0, 1], shaped to broadcast against (frames, H, W)."""
    c = ((np.arange(size) + 0.5) / size).astype(np.float32)
    return c[None, None, :], c[None, :, None]


def _hat_matrix(pos: Array, n: int) -> Array:
    """Linear-interpolation weights (..., len, n) that sample a length-n axis at fractional indices pos."""
    return np.maximum(0.0, 1.0 - np.abs(np.clip(pos, 0, n - 1)[..., None] - np.arange(n))).astype(np.float32)


def _gauss_matrix(size: int, sigma: Array) -> Array:
    """Per-frame (F, size, size) Gaussian blur operators, row-normalised so borders keep their brightness."""
    d = np.arange(size, dtype=np.float32)
    k = np.exp(-((d[:, None] - d[None, :]) ** 2) / (2.0 * sigma.reshape(-1, 1, 1) ** 2))
    return (k / k.sum(-1, keepdims=True)).astype(np.float32)


def _separable(img: Array, rows: Array, cols: Array) -> Array:
    """Apply per-frame linear operators along H and W: rows @ img @ cols.T for (F, H, W[, C]) images."""
    if img.ndim == 3:
        return rows @ img @ cols.transpose(0, 2, 1)
    chw = img.transpose(0, 3, 1, 2)
    return (rows[:, None] @ chw @ cols.transpose(0, 2, 1)[:, None]).transpose(0, 2, 3, 1)


def _ellipse(x: Array, y: Array, cx: Any, cy: Any, rx: Any, ry: Any, px: float, angle: Any = 0.0) -> Array:
    """Anti-aliased ellipse coverage in [0, 1] with a one-pixel soft edge."""
    dx, dy = x - cx, y - cy
    c, s = np.cos(angle), np.sin(angle)
    d = np.sqrt(((c * dx + s * dy) / rx) ** 2 + ((c * dy - s * dx) / ry) ** 2)
    return np.clip((1.0 - d) * np.minimum(rx, ry) / px + 0.5, 0.0, 1.0)


def _window(c: Array, r: Array, r_other: Array, size: int) -> slice:
    """Pixel range covering c +- r (plus a pixel) in every frame."""
    reach = np.max(np.maximum(r, r_other)) + 1.0 / size
    return slice(max(0, int((np.min(c) - reach) * size)), max(0, int(np.ceil((np.max(c) + reach) * size))))


def _paint(img: Array, alpha: Array, colour: Any) -> None:
    img += alpha[..., None] * (np.asarray(colour, np.float32) - img)


def _sample_identity(rng: np.random.Generator) -> dict[str, Any]:
    """Per-person constants, so all frames of a video show one recognisable identity."""
    u = rng.uniform
    t = u(0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    skin = _SKIN[i] + (t - i) * (_SKIN[i + 1] - _SKIN[i]) + u(-0.03, 0.03, 3)
    rx = u(0.23, 0.30)
    light = np.array([u(-0.6, 0.6), u(-0.6, 0.1), 1.0])
    hair = _HAIR[rng.integers(len(_HAIR))] * u(0.8, 1.2) + u(-0.03, 0.03, 3)
    return {
        "skin": skin.astype(np.float32),
        "hair": hair.clip(0, 1).astype(np.float32),
        "iris": _IRIS[rng.integers(len(_IRIS))],
        "shirt": u(0.1, 0.9, 3).astype(np.float32),
        "bg": u(0.1, 0.9, (2, 3)),
        "bg_angle": u(0, 2 * np.pi),
        "bg_tex": rng.normal(0, u(0.02, 0.08), (5, 5, 3)),
        "cx": 0.5 + u(-0.03, 0.03),
        "cy": 0.47 + u(-0.03, 0.03),
        "rx": rx,
        "ry": rx * u(1.15, 1.4),
        "light": light / np.linalg.norm(light),
        "long_hair": u() < 0.4,
        "bald": u() < 0.1,
        "beard": u() < 0.2,
        "hairline": u(0.35, 0.65),
        "eye_dx": u(0.32, 0.42),
        "eye_dy": u(0.08, 0.2),
        "eye_r": u(0.13, 0.18),
        "brow_tilt": u(-0.25, 0.25),
        "mouth_y": u(0.45, 0.6),
        "mouth_w": u(0.28, 0.45),
        "mouth_h": u(0.06, 0.11),
        "noise": u(0.006, 0.02),
        "strands": u(0.03, 0.1),
        "strand_freq": u(1.2, 2.2),
    }


def _background(p: dict[str, Any], n: int, size: int, x: Array, y: Array) -> Array:
    """The identity's background for n frames: a two-colour gradient with a smooth texture."""
    t = np.clip((x - 0.5) * np.cos(p["bg_angle"]) + (y - 0.5) * np.sin(p["bg_angle"]) + 0.5, 0, 1)
    up = _hat_matrix((np.arange(size) + 0.5) / size * 4, 5)
    tex = (up @ p["bg_tex"].transpose(2, 0, 1) @ up.T).transpose(1, 2, 0)
    bg = p["bg"][0] + t[..., None] * (p["bg"][1] - p["bg"][0]) + tex
    return np.repeat(bg.astype(np.float32), n, axis=0)


def _face_and_hair(
    rng: np.random.Generator, p: dict[str, Any], img: Array, x: Array, y: Array, box: tuple[Array, ...]
) -> None:
    """Paint into img the lit face ellipse (light jittered per frame), then the beard and the hair cap."""
    cx, cy, rx, ry = box
    n, size = img.shape[0], img.shape[1]
    px = 1.0 / size
    skin, hair = p["skin"], p["hair"]
    u, v = (x - cx) / rx, (y - cy) / ry
    nz = np.sqrt(np.clip(1.0 - u**2 - v**2, 0.0, 1.0))
    light = p["light"] + rng.uniform(-0.08, 0.08, (n, 3))
    light /= np.linalg.norm(light, axis=1, keepdims=True)
    lx, ly, lz = (light[:, i, None, None].astype(np.float32) for i in range(3))
    shade = 0.6 + 0.45 * np.clip(lx * u + ly * v + lz * nz, 0.0, 1.0)
    blush = _ellipse(x, y, cx, cy + 0.25 * ry, rx * 0.75, ry * 0.25, 0.2)
    face = skin * shade[..., None] + 0.12 * blush[..., None] * np.array([0.3, -0.1, -0.1], np.float32)
    face_alpha = _ellipse(x, y, cx, cy, rx, ry, px)
    img += face_alpha[..., None] * (face - img)

    if p["beard"]:
        _paint(img, 0.6 * np.clip((y - cy - 0.2 * ry) / (0.15 * ry), 0, 1) * face_alpha, hair)
    if not p["bald"]:
        line = cy - ry * p["hairline"] + 0.35 * ry * ((x - cx) / rx) ** 2
        cap = _ellipse(x, y, cx, cy - ry * 0.12, rx * 1.08, ry * 0.98, px) * np.clip((line - y) / px, 0, 1)
        strands = 1.0 + p["strands"] * np.sin((x - cx) * size * p["strand_freq"] + 3.0 * y)[..., None]
        img += cap[..., None] * (hair * strands - img)


def _render_video(rng: np.random.Generator, p: dict[str, Any], n: int, size: int) -> tuple[Array, Array]:
    """Draw n frames of identity p with per-frame jitter; returns images (n, H, W, 3) and face boxes."""
    x, y = _grid(size)
    px = 1.0 / size

    def f(lo: float, hi: float) -> Array:
        return rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)

    scale = 1.0 + f(-0.04, 0.04)
    cx, cy = p["cx"] + f(-0.02, 0.02), p["cy"] + f(-0.02, 0.02)
    rx, ry = p["rx"] * scale, p["ry"] * scale

    img = _background(p, n, size, x, y)

    def paint(cx: Any, cy: Any, rx: Any, ry: Any, colour: Any, angle: Any = 0.0, **kw: Any) -> None:
        # Only the ellipse's bounding window (over all frames) is computed: most features are tiny.
        rows, cols = _window(cy, ry, rx, size), _window(cx, rx, ry, size)
        alpha = kw.get("opacity", 1.0) * _ellipse(x[..., cols], y[:, rows], cx, cy, rx, ry, px, angle)
        if "within" in kw:
            alpha *= _ellipse(x[..., cols], y[:, rows], *kw["within"], px)
        _paint(img[:, rows, cols], alpha, colour)

    skin, hair = p["skin"], p["hair"]
    paint(cx, cy + ry * 1.8, rx * 2.0, ry * 0.95, p["shirt"])
    paint(cx, cy + ry * 0.9, rx * 0.45, ry * 0.6, skin * 0.78)
    if p["long_hair"]:
        paint(cx, cy + ry * 0.15, rx * 1.22, ry * 1.12, hair * 0.85)
    for s in (-1, 1):
        paint(cx + s * rx * 0.97, cy, rx * 0.14, ry * 0.17, skin * 0.88)

    _face_and_hair(rng, p, img, x, y, (cx, cy, rx, ry))

    ex, ey, er = p["eye_dx"] * rx, cy - p["eye_dy"] * ry, p["eye_r"] * rx
    eye_h = er * np.where(rng.uniform(size=(n, 1, 1)) < 0.1, 0.15, f(0.45, 0.6))
    gaze = f(-0.25, 0.25) * er
    for s in (-1, 1):
        paint(cx + s * ex, ey - 0.8 * er - 0.06 * ry, er * 1.3, 0.22 * er, hair * 0.7, s * p["brow_tilt"])
        eye = (cx + s * ex, ey, er, eye_h)
        paint(*eye, (0.93, 0.92, 0.88))
        paint(cx + s * ex + gaze, ey, er * 0.5, er * 0.5, p["iris"], within=eye)
        paint(cx + s * ex + gaze, ey, er * 0.22, er * 0.22, (0.05, 0.05, 0.05), within=eye)
        paint(cx + s * 0.07 * rx, cy + 0.3 * ry, 0.05 * rx, 0.03 * ry, skin * 0.4, opacity=0.5)
    paint(cx - 0.06 * rx * np.sign(p["light"][0]), cy + 0.1 * ry, 0.06 * rx, 0.22 * ry, 0.0, opacity=0.12)

    my, mw, mh = cy + p["mouth_y"] * ry, p["mouth_w"] * rx, p["mouth_h"] * ry * f(0.7, 1.3)
    paint(cx, my, mw, mh, skin * np.array([0.85, 0.5, 0.5], np.float32))
    paint(cx, my, mw * 0.9, np.maximum(mh * 0.25, px), (0.3, 0.1, 0.1))

    img *= f(0.9, 1.1)[..., None] * rng.uniform(0.97, 1.03, (n, 1, 1, 3)).astype(np.float32)
    img += p["noise"] * rng.standard_normal(img.shape, dtype=np.float32)
    boxes = np.stack([cx, cy, rx, ry], axis=1)[..., 0, 0]
    return np.clip(img, 0.0, 1.0), boxes


def _self_blend(rng: np.random.Generator, img: Array, boxes: Array) -> Array:
    """SBI: blend each frame with a perturbed copy of itself inside a deformed, soft face mask."""
    n, size = img.shape[0], img.shape[1]
    unit = size / 64.0
    strength = rng.uniform(0.6, 1.0)  # per video; per-frame draws below scale it down further

    def f(lo: float, hi: float, shape: tuple[int, ...] = (n, 1, 1, 1)) -> Array:
        return rng.uniform(lo, hi, shape).astype(np.float32)

    def signed(lo: float, hi: float, shape: tuple[int, ...] = (n, 1, 1, 1)) -> Array:
        return f(lo, hi, shape) * rng.choice(np.array([-1.0, 1.0], np.float32), shape)

    # Source-target colour mismatch (SBI's RGB/HSV/brightness-contrast jitter), with a guaranteed minimum.
    direction = rng.standard_normal((n, 1, 1, 3), dtype=np.float32)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    src = img * (1.0 + strength * signed(0.3, 1.0) * 0.35) + strength * f(0.3, 1.0) * 0.28 * direction
    mean = src.mean(axis=(1, 2, 3), keepdims=True)
    src = mean + (src - mean) * (1.0 + strength * f(-1, 1) * 0.25)
    theta = strength * rng.uniform(-1, 1, n) * 0.4
    # Rodrigues rotation about the grey axis: a hue shift that keeps luminance roughly unchanged.
    eye = np.eye(3)
    cross = (np.roll(eye, 1, 0) - np.roll(eye, -1, 0)) / np.sqrt(3)
    c, sn = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    rot = c * eye + sn * cross + (1 - c) / 3
    src = (src.reshape(n, -1, 3) @ rot.transpose(0, 2, 1).astype(np.float32)).reshape(img.shape)

    # Frequency mismatch: blur (SBI's downscale) or unsharp-mask sharpening.
    sharpen = rng.uniform(size=n) < 0.5
    blurred = _separable(src, *(2 * (_gauss_matrix(size, rng.uniform(0.7, 1.5, n) * unit),)))
    amount = np.where(sharpen, -rng.uniform(0.8, 2.0, n), rng.uniform(0.6, 1.0, n))
    src = src + amount.reshape(n, 1, 1, 1).astype(np.float32) * (blurred - src)

    # Position mismatch: the source is slightly rescaled about the face centre and shifted.
    cx, cy, rx, ry = (boxes[:, i, None] for i in range(4))
    zoom = 1.0 + strength * rng.uniform(-0.05, 0.05, (n, 1))
    shift = rng.uniform(-1.5, 1.5, (n, 2)) * unit / size
    grid = (np.arange(size) + 0.5) / size
    rows = _hat_matrix((cy + (grid - cy) / zoom - shift[:, 1:]) * size - 0.5, size)
    cols = _hat_matrix((cx + (grid - cx) / zoom - shift[:, :1]) * size - 0.5, size)
    src = _separable(src, rows, cols)

    # Blend mask: a face ellipse with low-order radial wobble, Gaussian-blurred, times a blend ratio.
    x, y = _grid(size)
    mcx, mcy = (
        (cx + rx * rng.uniform(-0.05, 0.05, (n, 1)))[..., None],
        (cy + ry * f(0.0, 0.12, (n, 1)))[..., None],
    )
    mrx, mry = (rx * f(0.7, 0.95, (n, 1)))[..., None], (ry * f(0.75, 1.0, (n, 1)))[..., None]
    ang = np.arctan2((y - mcy) / mry, (x - mcx) / mrx)
    rho = np.sqrt(((x - mcx) / mrx) ** 2 + ((y - mcy) / mry) ** 2)
    k = np.arange(2, 5).reshape(1, 3, 1, 1)
    wobble = f(-0.08, 0.08, (n, 3, 1, 1)) * np.cos(k * ang[:, None] + f(0, 2 * np.pi, (n, 3, 1, 1)))
    hard = np.clip((1.0 + wobble.sum(1) - rho) * np.minimum(mrx, mry) * size + 0.5, 0.0, 1.0)
    sigma = rng.uniform(0.7, 2.5, n) * unit
    mask = _separable(hard.astype(np.float32), *(2 * (_gauss_matrix(size, sigma),)))
    mask *= rng.choice([0.8, 1.0, 1.0, 1.0], (n, 1, 1)).astype(np.float32)
    return np.clip(img + mask[..., None] * (src - img), 0.0, 1.0)


def _write_dataset(root: Path, params: dict[str, Any]) -> None:
    """Each person gets a real video and, from the same frames, a self-blended fake one (like FF++ fakes).

    Pairing makes identity useless as a cue, so a detector has to find the blend instead of memorising faces.
    """
    size, frames, seed, quality = (
        params[k] for k in ("img_size", "frames_per_video", "seed", "jpeg_quality")
    )
    for si, split in enumerate(SPLITS):
        n_videos = params["videos_per_split"].get(split, 0)
        for person in range((n_videos + 1) // 2):
            rng = np.random.default_rng([seed, si, person])  # per person: stable when other counts change
            imgs, boxes = _render_video(rng, _sample_identity(rng), frames, size)
            vid = f"{split}{person:04d}"  # the split in the id keeps identities disjoint across splits
            videos = [(root / split / "real" / vid, imgs)]
            if 2 * person + 1 < n_videos:
                fake = _self_blend(rng, imgs, boxes)
                videos.append((root / split / "fake" / FAKE_METHOD / f"{vid}_{FAKE_METHOD}", fake))
            for out, video in videos:
                out.mkdir(parents=True)
                for i, frame in enumerate((video * 255.0 + 0.5).astype(np.uint8)):
                    Image.fromarray(frame).save(out / f"{i:03d}.jpg", quality=quality, subsampling=2)


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    try:
        return json.loads((root / COMPLETE_MARKER).read_text()) == params
    except (OSError, ValueError):
        return False


def generate_synthetic_dataset(
    root: str | Path,
    *,
    img_size: int = 64,
    videos_per_split: dict[str, int] | None = None,
    frames_per_video: int = 8,
    seed: int = 0,
    jpeg_quality: int = 90,
) -> Path:
    """Write the dataset under root (once) and return root.

    Layout: ``root/{split}/real/<id>/<frame>.jpg`` and ``root/{split}/fake/sbi/<id>_sbi/<frame>.jpg``;
    videos_per_split counts real plus fake videos (real gets the odd one). The tree is built in a unique
    sibling folder, marked complete, then renamed into place, so neither a crash nor a concurrent caller
    leaves a half-written dataset that looks finished.
    """
    root = Path(root)
    videos = dict(DEFAULT_VIDEOS_PER_SPLIT if videos_per_split is None else videos_per_split)
    if not set(videos) <= set(SPLITS) or any(int(v) < 0 for v in videos.values()):
        raise ValueError(f"videos_per_split must map a subset of {SPLITS} to counts >= 0, got {videos}")
    if img_size < 16 or frames_per_video < 1 or not 1 <= jpeg_quality <= 100:
        raise ValueError("need img_size >= 16, frames_per_video >= 1 and 1 <= jpeg_quality <= 100")
    params = {
        "format_version": FORMAT_VERSION,
        "img_size": int(img_size),
        "videos_per_split": {k: int(v) for k, v in videos.items()},
        "frames_per_video": int(frames_per_video),
        "seed": int(seed),
        "jpeg_quality": int(jpeg_quality),
    }
    if _is_complete(root, params):
        return root
    if root.exists() and not (root / COMPLETE_MARKER).exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty and was not written by generate_synthetic_dataset")

    root.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*root.parent.glob(f".{root.name}.tmp-*"), *root.parent.glob(f".{root.name}.old-*")]:
        with contextlib.suppress(OSError):  # left by killed runs (a live one lasts seconds) or just removed
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _write_dataset(tmp, params)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(params, sort_keys=True))
        if root.exists() and not _is_complete(root, params):  # ours, from other parameters (or empty)
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(root, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _is_complete(root, params):  # else another caller published the same dataset first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
