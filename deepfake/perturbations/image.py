"""Per-image perturbations: DeeperForensics-1.0's six image distortions, real JPEG and an antialiased resize.

Every function is `(uint8 H x W x 3 RGB image, param, numpy Generator) -> a new uint8 image of the same size`:
pure (the input is never written), and random only through the generator. The DeeperForensics ones follow
`perturbation/distortions.py` of the original code, quirks included; where they differ from it, it is named:

- Colour order. The original reads frames with OpenCV, so they are BGR, and it converts them with
  `cv2.COLOR_BGR2YCR_CB`. Here frames are RGB, and the same maths is written for RGB (Y = 0.299 R + 0.587 G +
  0.114 B), so a picture perturbed here equals the original's result on that picture. Passing RGB frames to the
  original unchanged would swap the R and B weights, which the original never did.
- OpenCV's float conversion centres Cb and Cr on 0.5, not 128, even for 0-255 values, and the original then maps
  Y and C to "[16/255, 235/255]" while they are in 0-255: harmless (the scaling cancels on the way back), kept.
- CS and CC cast to uint8 (`astype`): they truncate, so they also darken by half a level on average. CS does
  not clip in the original; its values stay inside 0-255 but for a few thousandths, which are clipped here.
- Gaussian blur is OpenCV's 8-bit `GaussianBlur`, bit-exact: its kernel rounded to 1/256 with OpenCV's error
  diffusion, integer sums, reflect-101 borders. (OpenCV before 3.4 filtered 8-bit images in float: up to one
  level apart.)
- "JPEG" is no JPEG at all: a resize down by the factor and back up (`cv2.resize`, bilinear without
  antialiasing), i.e. pixelation, as the authors acknowledge. It emulates OpenCV's 11-bit fixed-point bilinear
  arithmetic (its vector path; its scalar tail rounds differently, so a few pixels in a hundred can differ by one
  level). The real thing is `jpeg` (quality), and the antialiased resize `resize`.
- BW draws block corners in [0, W - 9] (Python's inclusive randint over `W - 1 - 8`), so the last row and
  column are never covered, and `min(H, W) // 256 * p` blocks means no block at all below 256 pixels.
- Randomness (BW, GNC) comes from the generator passed in, seeded per video and frame by the protocol; the
  original used the unseeded global `random` and `np.random`, so no two of its runs agree.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

BLOCK = 8  # BW's block side
BLOCK_GREY = 128
KERNEL_BITS = 8  # OpenCV's 8-bit Gaussian: kernel values in 1/256
RESIZE_BITS = 11  # OpenCV's 8-bit bilinear resize: coefficients in 1/2048

# OpenCV's float RGB <-> YCrCb coefficients (imgproc/src/color_yuv.simd.hpp), in float32 as it computes.
_Y = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CR, _CB = np.float32(0.713), np.float32(0.564)
_R_CR, _G_CR, _G_CB, _B_CB = (np.float32(c) for c in (1.403, -0.714, -0.344, 1.773))
_HALF = np.float32(0.5)  # OpenCV's chroma offset for float images


def to_ycbcr(img: np.ndarray) -> np.ndarray:
    """The original's `bgr2ycbcr` on an RGB image: float32 (H, W, [Y, Cb, Cr]), Y' = (219 Y + 16) / 255."""
    f = img.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = r * _Y[0] + g * _Y[1] + b * _Y[2]
    out = np.stack([y, (b - y) * _CB + _HALF, (r - y) * _CR + _HALF], axis=-1)
    out[..., 0] = (out[..., 0] * (235 - 16) + 16) / 255.0
    out[..., 1:] = (out[..., 1:] * (240 - 16) + 16) / 255.0
    return out


def from_ycbcr(ycbcr: np.ndarray) -> np.ndarray:
    """The original's `ycbcr2bgr`, giving RGB: float32, unclipped."""
    f = ycbcr.astype(np.float32)
    y = (f[..., 0] * 255.0 - 16) / (235 - 16)
    cb = (f[..., 1] * 255.0 - 16) / (240 - 16) - _HALF
    cr = (f[..., 2] * 255.0 - 16) / (240 - 16) - _HALF
    return np.stack([y + cr * _R_CR, y + cr * _G_CR + cb * _G_CB, y + cb * _B_CB], axis=-1)


def _truncate(values: np.ndarray) -> np.ndarray:
    """`astype(np.uint8)` of in-range floats (truncation), with the few out-of-range ones clipped."""
    return np.clip(np.trunc(values), 0, 255).astype(np.uint8)


def color_saturation(img: np.ndarray, param: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """CS: Cb and Cr pulled to the middle, c <- 0.5 + (c - 0.5) p; p = 0 leaves the grey of Y."""
    ycbcr = to_ycbcr(img)
    ycbcr[..., 1:] = 0.5 + (ycbcr[..., 1:] - 0.5) * param
    return _truncate(from_ycbcr(ycbcr))


def color_contrast(img: np.ndarray, param: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """CC: floor(x p), every channel. Called contrast, it is a brightness scale (nothing is kept at the mean)."""
    return (img.astype(np.float32) * param).astype(np.uint8)


def block_wise(img: np.ndarray, param: int, rng: np.random.Generator) -> np.ndarray:
    """BW: `min(H, W) // 256 * p` grey (128) 8 x 8 blocks at uniformly drawn places (none under 256 px)."""
    out = img.copy()
    h, w = img.shape[:2]
    count = min(h, w) // 256 * int(param)
    if count == 0:
        return out
    # (x, y) pairs, drawn in the original's order (x first); a longer draw extends a shorter one.
    corners = rng.integers(0, np.array([w - 1 - BLOCK, h - 1 - BLOCK]), size=(count, 2), endpoint=True)
    for x, y in corners.tolist():
        out[y : y + BLOCK, x : x + BLOCK] = BLOCK_GREY
    return out


def gaussian_noise_color(img: np.ndarray, param: float, rng: np.random.Generator) -> np.ndarray:
    """GNC: white Gaussian noise of variance p on Y, Cb and Cr, in the original's YCbCr scaled to [0, ~1]."""
    ycbcr = to_ycbcr(img) / 255
    noisy = (ycbcr + math.sqrt(param) * rng.standard_normal(ycbcr.shape)) * 255
    return np.clip(from_ycbcr(noisy), 0, 255).astype(np.uint8)


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """`cv2.getGaussianKernel(size, sigma)` for sigma > 0, float64: exp(-x^2 / 2 sigma^2), summing to 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def fixed_point_kernel(size: int, sigma: float, bits: int = KERNEL_BITS) -> np.ndarray:
    """OpenCV's integer kernel for 8-bit images (`getGaussianKernelFixedPoint_ED`): the outer values rounded
    with the error carried inward, the centre taking what makes the sum exactly 2**bits."""
    k = gaussian_kernel(size, sigma)
    scale, err, half = float(1 << bits), 0.0, []
    for value in k[: size // 2]:
        adjusted = value * scale + err
        rounded = int(np.rint(adjusted))  # cvRound: halves to even
        err = adjusted - rounded
        half.append(rounded)
    centre = (1 << bits) - 2 * sum(half)
    return np.array([*half, centre, *half[::-1]], dtype=np.int64)


def gaussian_blur(img: np.ndarray, param: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """GB: `cv2.GaussianBlur(img, (k, k), k / 6)` on uint8, bit for bit (see the module notes); k = p.

    Two integer passes with scipy's `correlate1d` (its `mirror` border is OpenCV's reflect-101): exact, since
    the sums stay below 2**24, and about 0.3 s for a 1080p frame where numpy's shifted sums took seconds.
    """
    from scipy.ndimage import correlate1d  # here: scipy.ndimage costs `import train` most of a second

    k = int(param)
    kernel = fixed_point_kernel(k, k / 6).astype(np.int32)
    rows = correlate1d(img.astype(np.int32), kernel, axis=1, mode="mirror", output=np.int32)  # 1/256 units
    both = correlate1d(rows, kernel, axis=0, mode="mirror", output=np.int32)  # 1/65536 units
    shift = 2 * KERNEL_BITS
    return ((both + (1 << (shift - 1))) >> shift).clip(0, 255).astype(np.uint8)


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cv2.resize's bilinear taps along one axis: source indices and 11-bit weights (half-pixel centres,
    float32 offsets, clamped at the edges)."""
    scale = 1.0 / (dst / src)
    pos = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(pos).astype(np.int64)
    frac = pos - first.astype(np.float32)
    low, high = first < 0, first >= src - 1
    frac[low | high] = 0
    first = np.where(low, 0, np.where(high, src - 1, first))
    one = 1 << RESIZE_BITS
    w0 = np.rint((np.float32(1) - frac) * one).astype(np.int32)
    w1 = np.rint(frac * one).astype(np.int32)
    return first, np.minimum(first + 1, src - 1), w0, w1


def linear_resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv2.resize(img, (width, height))` (INTER_LINEAR) on uint8 HWC: integer horizontal taps, then OpenCV's
    vector-path vertical step, ((r >> 4) * w >> 16) summed and rounded by 2 bits."""
    h, w = img.shape[:2]
    x0, x1, a0, a1 = _linear_taps(w, width)
    y0, y1, b0, b1 = _linear_taps(h, height)
    src = img.astype(np.int32)  # every sum below fits: 255 * 2048 before the shift, 2**15 * 2**11 after
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
    top = ((rows[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((rows[y1] >> 4) * b1[:, None, None]) >> 16
    return ((top + bottom + 2) >> 2).clip(0, 255).astype(np.uint8)


def pixelate(img: np.ndarray, param: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """DeeperForensics' "JPEG": bilinear resize to (H // p, W // p) and back, no antialiasing (pixelation)."""
    h, w = img.shape[:2]
    small = linear_resize(img, max(1, h // int(param)), max(1, w // int(param)))
    return linear_resize(small, h, w)


def jpeg(img: np.ndarray, param: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Real JPEG: Pillow's libjpeg at quality p (4:2:0 chroma, its default), decoded back."""
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=int(param))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB")).copy()


def resize(img: np.ndarray, param: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Down by the factor p with Pillow's antialiased bilinear filter, then back up bilinearly: the resolution
    loss "JPEG" stands in for, without its aliasing (the same sizes as "JPEG" at the same p)."""
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, int(w // param)), max(1, int(h // param))), Image.BILINEAR)
    return np.asarray(small.resize((w, h), Image.BILINEAR))
