"""The perturbations against hand computations on small arrays, and (where OpenCV is installed) against the
DeeperForensics-1.0 code's OpenCV calls themselves."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image
from skimage import data

from deepfake.choices import PERTURBATION_LEVELS, PERTURBATIONS
from deepfake.errors import ConfigError
from deepfake.extraction.video import read_frames
from deepfake.perturbations import image
from deepfake.perturbations.protocol import (
    DEEPERFORENSICS,
    TYPES,
    Setting,
    frame_rng,
    perturb_clip,
    perturb_image,
    setting,
    settings,
)
from deepfake.perturbations.video import compress_clip, reencode_file
from tests.videos import VideoSet


def face(size: int = 48) -> np.ndarray:
    """A real, colourful face crop (the astronaut's), size x size."""
    return np.asarray(Image.fromarray(data.astronaut()[50:190, 160:300]).resize((size, size)))


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def luma(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_cs_level_5_is_grey_at_the_frames_luma() -> None:
    img = face()
    out = perturb_image(setting("CS", 5), img, frame_rng(0, "v", 0))
    assert TYPES["CS"].params[4] == 0.0
    assert int((out.max(-1).astype(int) - out.min(-1)).max()) <= 1  # R = G = B, up to the truncation
    assert np.abs(out[..., 1] - luma(img)).max() <= 1.0  # the grey is Y
    assert (img.max(-1).astype(int) - img.min(-1)).max() > 60  # and the input was colourful


def test_cs_is_the_original_maths_written_for_rgb() -> None:
    """By hand, from the original's steps (cv2's float YCrCb with its 0.5 chroma offset, the [16, 235]/[16, 240]
    mapping, c <- 0.5 + (c - 0.5) p, back, truncate): R takes Cr, B takes Cb, whatever order the array uses."""
    img, p = face(16), 0.3
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr, cb = (r - y) * 0.713 + 0.5, (b - y) * 0.564 + 0.5

    def squeeze(c: np.ndarray) -> np.ndarray:
        scaled = (c * 224 + 16) / 255
        return ((0.5 + (scaled - 0.5) * p) * 255 - 16) / 224 - 0.5

    cr, cb = squeeze(cr), squeeze(cb)
    expected = np.stack([y + 1.403 * cr, y - 0.714 * cr - 0.344 * cb, y + 1.773 * cb], -1)
    out = image.color_saturation(img, p)
    assert np.abs(out - np.trunc(expected)).max() <= 1  # float32 against float64 at the truncation edge
    assert (out == np.trunc(expected)).mean() > 0.95
    vivid = random_image(16, 16)
    swapped = image.color_saturation(np.ascontiguousarray(vivid[..., ::-1]), p)[..., ::-1]
    assert (
        np.abs(swapped.astype(int) - image.color_saturation(vivid, p)).max() > 20
    )  # BGR data: another picture


def test_cc_is_floor_x_times_p() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
    for p in TYPES["CC"].params:
        expected = np.array([math.floor(int(v) * Fraction(str(p))) for v in range(256)]).reshape(16, 16, 1)
        assert (image.color_contrast(values, p) == expected).all()


def test_gb_kernel_size_and_sigma_are_the_originals() -> None:
    for level, k in zip(range(1, 6), (7, 9, 13, 17, 21), strict=True):
        assert setting("GB", level).param == k
        sigma = k / 6
        x = np.arange(k) - k // 2
        by_hand = np.exp(-(x**2) / (2 * sigma**2))
        assert np.allclose(image.gaussian_kernel(k, sigma), by_hand / by_hand.sum(), rtol=0, atol=1e-15)
        fixed = image.fixed_point_kernel(k, sigma)
        assert len(fixed) == k and fixed.sum() == 256 and (fixed == fixed[::-1]).all()
        assert np.abs(fixed - by_hand / by_hand.sum() * 256).max() < 1  # rounded to 1/256, error diffused


def test_gb_of_an_impulse_is_the_kernels_outer_product() -> None:
    img = np.zeros((31, 31, 3), np.uint8)
    img[15, 15] = 255
    k = image.fixed_point_kernel(7, 7 / 6)
    out = image.gaussian_blur(img, 7)
    expected = (255 * np.outer(k, k) + 32768) >> 16  # 8-bit kernel values, rounded from 1/65536
    assert (out[12:19, 12:19, 0] == expected).all()
    assert out.sum() == out[12:19, 12:19].sum()  # nothing outside the 7 x 7 support


def test_gb_borders_reflect_101() -> None:
    """A bright column at x = 1: at x = 0 the window holds it twice (x = 1 and the mirrored x = -1); with
    edge-repeating borders (x = -1 -> 0) it would hold it once."""
    img = np.zeros((9, 9, 3), np.uint8)
    img[:, 1] = 255
    k = image.fixed_point_kernel(7, 7 / 6)  # k[2] and k[4] weigh offsets -1 and +1
    expected = ((k[2] + k[4]) * 255 * 256 + 32768) >> 16
    assert image.gaussian_blur(img, 7)[4, 0, 0] == expected


def test_jpeg_at_2_halves_then_restores_the_size() -> None:
    """The factor 2 is level 1 (the issue's "level 2" names the parameter): H // 2 x W // 2, then back."""
    assert setting("JPEG", 1).param == 2
    blocks = np.array([[0, 100, 40], [200, 60, 255]], np.uint8)  # 2 x 3 values, each a 2 x 2 block below
    img = blocks.repeat(2, 0).repeat(2, 1)[..., None].repeat(3, -1)
    assert img.shape == (4, 6, 3)
    half = image.linear_resize(img, 2, 3)
    assert (half[..., 0] == blocks).all()  # halving averages each 2 x 2 block
    out = perturb_image(setting("JPEG", 1), img, frame_rng(0, "v", 0))
    assert out.shape == img.shape
    # Back up bilinearly with half-pixel centres: x = 1 samples 0.25 between columns 0 and 1 (3/4 : 1/4), row 0
    # samples -0.25, clamped to row 0; rounded half up.
    assert out[0, 1, 0] == math.floor(0.75 * 0 + 0.25 * 100 + 0.5)
    assert out[0, 0, 0] == 0 and out[0, 5, 0] == 40
    odd = perturb_image(setting("JPEG", 1), random_image(13, 9), frame_rng(0, "v", 0))
    assert odd.shape == (13, 9, 3)


def test_real_jpeg_and_resize_mean_what_they_say() -> None:
    checker = (np.indices((48, 48)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    aliased = image.pixelate(checker, 3)  # samples single pixels: the pattern survives as 0/255 stripes
    smooth = image.resize(checker, 3)  # averages before sampling: close to the mean grey
    assert aliased.std() > 50 and smooth.std() < 10
    img = face()
    errors = [np.abs(image.jpeg(img, q).astype(int) - img).mean() for q in TYPES["JPEGQ"].params]
    assert errors == sorted(errors) and errors[0] > 0  # quality 90 ... 10: more loss each level


def test_gnc_noise_variance_is_p_in_the_originals_ycbcr() -> None:
    grey = np.full((96, 96, 3), 128, np.uint8)  # mid-grey: no clipping at levels 1-2
    for level in (1, 2):
        p = setting("GNC", level).param
        out = perturb_image(setting("GNC", level), grey, frame_rng(3, "video", level))
        residual = (image.to_ycbcr(out) - image.to_ycbcr(grey)) / 255
        variance = residual.reshape(-1, 3).var(0)
        assert np.allclose(variance, p, rtol=0.1), (level, variance)


def test_bw_block_count_follows_the_formula() -> None:
    class Diagonal:
        """A stand-in generator placing block k at (8k, 8k): blocks never overlap, so they can be counted."""

        def integers(self, low: int, high: np.ndarray, size: tuple[int, int], endpoint: bool) -> np.ndarray:
            return np.arange(size[0])[:, None].repeat(2, 1) * 8

    black = np.zeros((600, 520, 3), np.uint8)  # min side 520: 520 // 256 = 2 blocks per unit of p
    for level, p in zip(range(1, 3), (16, 32), strict=True):
        out = image.block_wise(black, setting("BW", level).param, Diagonal())  # type: ignore[arg-type]
        assert (out[..., 0] == 128).sum() == 2 * p * 64
    assert (
        image.block_wise(random_image(255, 900), 80, frame_rng(0, "v", 0)) == random_image(255, 900)
    ).all()


def test_bw_never_covers_the_last_row_and_column() -> None:
    class Last:
        def integers(self, low: int, high: np.ndarray, size: tuple[int, int], endpoint: bool) -> np.ndarray:
            assert endpoint
            return np.broadcast_to(np.asarray(high), size)

    out = image.block_wise(np.zeros((256, 300, 3), np.uint8), 1, Last())  # type: ignore[arg-type]
    assert (out[247:255, 291:299] == 128).all()  # the highest corner the original can draw: (W - 9, H - 9)
    assert (out[255] == 0).all() and (out[:, 299] == 0).all()


def test_seeding_is_per_video_and_frame_and_common_to_the_levels() -> None:
    img = random_image(512, 512)
    one = perturb_image(setting("BW", 1), img, frame_rng(7, "a/000", 3))
    two = perturb_image(setting("BW", 2), img, frame_rng(7, "a/000", 3))
    assert ((one != img) <= (two != img)).all()  # level 2's blocks include level 1's
    again = perturb_image(setting("BW", 1), img, frame_rng(7, "a/000", 3))
    other = perturb_image(setting("BW", 1), img, frame_rng(7, "a/001", 3))
    assert (one == again).all() and (one != other).any()
    assert (perturb_image(Setting("clean", 0), img, frame_rng(0, "v", 0)) == img).all()


def test_vc_bitrate_falls_as_crf_rises() -> None:
    photo = data.astronaut()
    clip = [
        np.ascontiguousarray(photo[100 + 2 * i : 164 + 2 * i, 150 + 3 * i : 214 + 3 * i]) for i in range(12)
    ]
    sizes = []
    for level in range(1, 6):
        crf = int(setting("VC", level).param)
        squeezed = compress_clip(clip, crf)
        assert [f.shape for f in squeezed.frames] == [f.shape for f in clip]
        sizes.append(squeezed.bytes)
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 5, sizes
    odd = [f[:63, :61] for f in clip[:4]] + [clip[4][:50, :40]]  # odd and mixed sizes share one canvas
    back = perturb_clip(setting("VC", 1), odd, [frame_rng(0, "v", i) for i in range(5)])
    assert [f.shape for f in back] == [f.shape for f in odd]
    assert 0 < np.abs(back[0].astype(int) - odd[0]).mean() < 12


def test_vc_reencodes_a_file_keeping_frames_rate_and_rotation(test_videos: VideoSet, tmp_path) -> None:
    out = tmp_path / "rotated_crf40.mp4"
    assert reencode_file(test_videos.rotated, out, 40) == 20
    before, after = read_frames(test_videos.rotated, 5), read_frames(out, 5)
    assert after.info == before.info  # size, rate, frame count and display rotation
    assert [i for i, _ in after.frames] == [i for i, _ in before.frames]
    assert out.stat().st_size < test_videos.rotated.stat().st_size  # CRF 40 against the source's CRF 18
    with av.open(str(out)) as c:
        types = [av.video.frame.PictureType(f.pict_type).name for f in c.decode(video=0)]
    assert types.count("I") == 1  # x264 chose its own frame types; the source's keyframes were not forced


def test_the_types_are_the_config_choices() -> None:
    assert tuple(TYPES) == PERTURBATIONS and set(DEEPERFORENSICS) <= set(TYPES)
    assert all(len(t.params) == len(PERTURBATION_LEVELS) for t in TYPES.values())


def test_settings_are_checked() -> None:
    grid = settings(DEEPERFORENSICS, [1, 2, 3, 4, 5])
    assert len(grid) == 35 and grid[0].name == "CS-1" and grid[-1].name == "VC-5"
    assert [s.video for s in grid].count(True) == 5
    with pytest.raises(ConfigError, match=r"perturb.types holds unknown type\(s\) XX; known: CS, CC"):
        settings(["GB", "XX"], [1])
    with pytest.raises(ConfigError, match=r"perturb\.levels must be a non-empty list of 1, 2, 3, 4, 5"):
        settings(["GB"], [0, 6])
    with pytest.raises(ConfigError, match="must not repeat"):
        settings(["GB", "GB"], [1])
    with pytest.raises(ConfigError, match=r"perturb\.type='gb' is not a perturbation type"):
        setting("gb", 1)


@pytest.mark.parametrize("kind", ["CS", "CC", "GNC", "GB", "JPEG"])
def test_same_pictures_as_the_original_opencv_code(kind: str) -> None:
    """With OpenCV installed (the `bench` extra), each function equals the original's OpenCV calls on the BGR
    version of the picture: bit for bit, but for "JPEG" (OpenCV's scalar tail rounds differently)."""
    cv = pytest.importorskip("cv2")
    rgb = np.concatenate([face(64), random_image(64, 64)], axis=1)
    bgr = np.ascontiguousarray(rgb[..., ::-1])

    def bgr2ycbcr(x: np.ndarray) -> np.ndarray:
        out = cv.cvtColor(x.astype(np.float32), cv.COLOR_BGR2YCR_CB)[:, :, (0, 2, 1)].astype(np.float32)
        out[:, :, 0] = (out[:, :, 0] * (235 - 16) + 16) / 255.0
        out[:, :, 1:] = (out[:, :, 1:] * (240 - 16) + 16) / 255.0
        return out

    def ycbcr2bgr(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        x[:, :, 0] = (x[:, :, 0] * 255.0 - 16) / (235 - 16)
        x[:, :, 1:] = (x[:, :, 1:] * 255.0 - 16) / (240 - 16)
        return cv.cvtColor(x[:, :, (0, 2, 1)].astype(np.float32), cv.COLOR_YCR_CB2BGR)

    for level in range(1, 6):
        p = setting(kind, level).param
        ours = perturb_image(setting(kind, level), rgb, np.random.default_rng(level))
        if kind == "CS":
            y = bgr2ycbcr(bgr)
            y[:, :, 1:] = 0.5 + (y[:, :, 1:] - 0.5) * p
            theirs = ycbcr2bgr(y).astype(np.uint8)
        elif kind == "CC":
            theirs = (bgr.astype(np.float32) * p).astype(np.uint8)
        elif kind == "GNC":
            noise = np.random.default_rng(level).standard_normal(bgr.shape)
            theirs = np.clip(ycbcr2bgr((bgr2ycbcr(bgr) / 255 + math.sqrt(p) * noise) * 255), 0, 255)
            theirs = theirs.astype(np.uint8)
        elif kind == "GB":
            theirs = cv.GaussianBlur(bgr, (p, p), p / 6)
        else:
            theirs = cv.resize(cv.resize(bgr, (128 // p, 64 // p)), (128, 64))
        diff = np.abs(theirs[..., ::-1].astype(int) - ours)
        assert diff.max() <= 1
        assert (diff == 0).mean() >= (0.98 if kind == "JPEG" else 0.9999), (kind, level)


def test_vc_gives_the_same_clip_every_time() -> None:
    """x264's AVX-512 code reads uninitialised memory (widths not a multiple of 128 px): encodes of other clips
    in between leave garbage behind, which must not change the result (where the CPU has AVX-512)."""
    photo = data.astronaut()
    clip = [
        np.ascontiguousarray(photo[100 + 3 * i : 260 + 3 * i, 150 + 4 * i : 310 + 4 * i]) for i in range(10)
    ]
    first = compress_clip(clip, 35)
    for k in range(3):
        compress_clip([f[: 64 + 16 * k, : 96 + 8 * k] for f in clip], 30)  # other sizes: other allocations
        again = compress_clip(clip, 35)
        assert again.bytes == first.bytes
        assert all((a == b).all() for a, b in zip(again.frames, first.frames, strict=True))
