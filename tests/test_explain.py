"""Explanations' core (deepfake.explain): target layers per family, heatmaps that land where a hand-built model
looks, the faithfulness arithmetic, overlay files and names, and the projector files TensorBoard reads."""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deepfake.errors import ConfigError
from deepfake.explain.cam import explain_crops
from deepfake.explain.embeddings import pooled_features, tsne_figure, write_projector
from deepfake.explain.faithfulness import faithfulness, heat_share, inside, pointing_hit
from deepfake.explain.overlay import Names, face_overlay, mirrored, write_face
from deepfake.explain.target import TokensToGrid, cam_target
from deepfake.model.detector import DeepfakeDetector, get_model
from deepfake.model.temporal import TemporalHead

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
#: The region the hand-built models read: the top-right quadrant (rows 0-31, columns 32-63), off every axis
#: of symmetry, so a transposed or mirrored map would miss it.
REGION = (slice(0, SIZE // 2), slice(SIZE // 2, SIZE))


def region_mask(size: int = SIZE) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., : size // 2, size // 2 :] = 1
    return mask


class Gate(nn.Module):
    """Zeroes a feature map outside the quadrant: the convolutions' receptive fields spill over its edge."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("region", region_mask(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.region


class RegionCnn(nn.Module):
    """A CNN whose decision depends on the top-right quadrant only: its input is zeroed outside it, and so is
    its last stage's map (no biases, ReLUs: nothing outside is ever non-zero)."""

    feature_info: ClassVar[list[dict]] = [{"module": "stage", "num_chs": 8, "reduction": 4}]
    num_features = 8
    pretrained_cfg: ClassVar[dict] = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1, bias=False), nn.ReLU(), Gate(SIZE // 4))
        self.register_buffer("region", region_mask())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage(self.stem(x * self.region)).mean((2, 3))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm1(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 16, 16, bias=False)
        self.grid_size = (SIZE // 16, SIZE // 16)


class RegionTokens(nn.Module):
    """ViT-shaped: two prefix tokens, then a 4 x 4 grid of patch tokens in row order; it zeroes its input outside
    the quadrant, and its features are the mean of the patch tokens (all zero outside)."""

    num_prefix_tokens = 2
    num_features = 8
    pretrained_cfg = RegionCnn.pretrained_cfg

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(8)
        self.prefix = nn.Parameter(
            torch.ones(1, 2, 8)
        )  # large and positive: kept in, they would take the heat
        self.blocks = nn.Sequential(Block())
        self.register_buffer("region", region_mask())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed.proj(x * self.region).flatten(2).transpose(1, 2)
        tokens = self.blocks(torch.cat([self.prefix.expand(len(x), -1, -1), tokens], 1))
        return tokens[:, 2:].mean(1)


def detector(make: type[nn.Module], frames: int = 1) -> DeepfakeDetector:
    torch.manual_seed(0)
    backbone = make()
    head = TemporalHead(backbone.num_features, frames) if frames > 1 else None
    model = DeepfakeDetector(backbone, img_size=SIZE, head=head, frames=frames)
    if head is None:
        nn.init.constant_(model.head[1].weight, 1.0)  # every feature counts towards fake
    return model.eval()


class Member:
    def __init__(self, model: nn.Module) -> None:
        self.model, self.img_size = model, SIZE


def faces(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(30, 255, (count, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


def share_in_region(heat: np.ndarray) -> float:
    return float(heat[REGION].sum() / heat.sum())


def in_region(heat: np.ndarray) -> bool:
    """The peak inside the quadrant, and no heat beyond half a 16 px cell of it (the bilinear upsampling of a
    coarse map spills over its edge), so not a misplaced map."""
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    edge = SIZE // 2 - 8
    return bool(
        peak[0] < SIZE // 2 <= peak[1] and heat[SIZE // 2 + 8 :].max() == 0 and heat[:, :edge].max() == 0
    )


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "gradcam++"])
@pytest.mark.parametrize("backbone", [RegionCnn, RegionTokens])
def test_the_heat_lands_in_the_one_region_the_model_reads(backbone: type[nn.Module], method: str) -> None:
    model = detector(backbone)
    heats = explain_crops([Member(model)], faces(3), method)
    assert heats.shape == (3, SIZE, SIZE) and heats.dtype == np.float32
    assert heats.min() >= 0 and math.isclose(heats.max(), 1.0, abs_tol=1e-4)
    for heat in heats:
        assert in_region(heat) and share_in_region(heat) > 0.8  # the rest: bilinear spill over the edge


def test_flip_tta_maps_the_mirrored_face_back() -> None:
    heats = explain_crops([Member(detector(RegionCnn))], faces(2), "gradcam", tta="flip")
    # on the mirrored face the model reads what is the top-left quadrant of the face itself: mirrored back, that
    # view's heat lies there, and the mean holds half of each view's
    half = SIZE // 2
    for heat in heats:
        left, right = heat[:half, :half].sum() / heat.sum(), heat[:half, half:].sum() / heat.sum()
        assert heat[half + 8 :].max() == 0 and 0.3 < left < 0.7 and 0.3 < right < 0.7 and left + right > 0.75


def test_a_clip_model_gets_one_map_per_frame_through_the_shared_backbone() -> None:
    model = detector(RegionCnn, frames=3)
    clip = faces(3)
    clip[1, :, REGION[0], REGION[1]] = 0  # the middle frame shows the model nothing
    heats = explain_crops([Member(model)], clip, "hirescam")
    assert heats.shape == (3, SIZE, SIZE)
    assert heats[1].max() == 0
    for k in (0, 2):
        assert heats[k].max() > 0 and in_region(heats[k])


def test_timm_vit_maps_use_the_real_patch_grid() -> None:
    model = get_model("test_vit", img_size=48).eval()  # 3 x 3 patches of 16 px, not 14 x 14
    target = cam_target(model)
    assert target.path == "backbone.blocks.5.norm1" and target.family == "vit"
    assert target.reshape.grid == (3, 3) and target.reshape.prefix == model.backbone.num_prefix_tokens
    member = Member(model)
    member.img_size = 48
    heats = explain_crops([member], faces(2), "gradcam")  # 64 px crops, explained at 48 px, mapped back
    assert heats.shape == (2, SIZE, SIZE) and heats.min() >= 0 and heats.max() <= 1


def test_tokens_are_laid_on_the_grid_in_row_order_without_the_prefix() -> None:
    tokens = torch.arange(2 + 6, dtype=torch.float32).view(1, 8, 1)  # 2 prefix tokens, then a 2 x 3 grid
    grid = TokensToGrid(2, (2, 3))(tokens)
    assert grid.shape == (1, 1, 2, 3)
    assert grid[0, 0].tolist() == [[2, 3, 4], [5, 6, 7]]
    with pytest.raises(ValueError, match="7 tokens"):
        TokensToGrid(2, (2, 3))(tokens[:, :7])


def test_default_layers_per_family_and_the_layer_override() -> None:
    assert cam_target(get_model("tiny")).path == "backbone.layer4"
    assert cam_target(get_model("tiny", streams=["rgb", "srm"])).path == "backbone.backbone.layer4"
    late = get_model("tiny", streams=["rgb", "srm"], fusion="late")
    assert cam_target(late).path == "backbone.backbones.0.layer4"  # the RGB branch
    assert cam_target(get_model("tiny", frames=2)).path == "backbone.layer4"
    assert cam_target(late, "backbone.backbones.-1.layer3").module is late.backbone.backbones[1].layer3
    model = get_model("tiny")
    model.explain_layer = "backbone.layer3"  # the model config's choice beats the family's
    assert cam_target(model).module is model.backbone.layer3
    assert cam_target(model, "backbone.layer2").module is model.backbone.layer2  # the command line beats both


def test_an_unknown_layer_is_one_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as e:
        cam_target(get_model("tiny"), "backbone.layer9")
    message = str(e.value)
    assert "explain.layer=backbone.layer9 is not a layer of test_resnet" in message
    assert "'layer9' is not a child of ResNet" in message and "default is backbone.layer4" in message
    bare = DeepfakeDetector(nn.Sequential(nn.Flatten()), img_size=SIZE, head=nn.Linear(1, 1))
    with pytest.raises(ConfigError, match=r"no Grad-CAM layer is known .* model.explain_layer=<module path>"):
        cam_target(bare, key="model.explain_layer")


def test_pointing_game_and_heat_share_on_hand_made_masks() -> None:
    mask = np.zeros((4, 4), np.float32)
    mask[:2, :2] = 0.5  # an SBI mask at blend ratio 0.5: its inside is where it reaches half of 0.5
    mask[0, 3] = 0.1  # faint noise stays outside
    region = inside(mask)
    assert region.sum() == 4
    hit = np.zeros((4, 4), np.float32)
    hit[0, 0], hit[3, 3] = 1.0, 0.5  # maximum inside; a third of the heat outside
    miss = np.zeros((4, 4), np.float32)
    miss[3, 3], miss[1, 1] = 1.0, 0.25
    cold = np.zeros((4, 4), np.float32)  # no heat: points nowhere
    assert pointing_hit(hit, region) and not pointing_hit(miss, region) and not pointing_hit(cold, region)
    assert heat_share(hit, region) == pytest.approx(2 / 3) and heat_share(cold, region) == 0
    big_mask = np.kron(mask, np.ones((2, 2), np.float32))  # 8 x 8: resized to the heatmap's 4 x 4
    scores = faithfulness([hit, miss, cold], [mask, big_mask, mask])
    assert scores == pytest.approx(
        {"pointing_game": 1 / 3, "heat_in_mask": (2 / 3 + 0.2 + 0) / 3, "mask_area": 0.25, "faces": 3}
    )
    assert math.isnan(faithfulness([], [])["pointing_game"])


def test_overlay_pixels_and_the_files_beside_them(tmp_path: Path) -> None:
    crop = faces(1)[0].permute(1, 2, 0).numpy()
    heat = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    image = face_overlay(crop, heat, 0.93)
    assert (
        image.shape == (192, 192, 3) and image.dtype == np.uint8
    )  # 64 px enlarged 3x: the text stays legible
    assert (image[4:12, 4:40] == 255).all(axis=-1).any()  # white caption text on its dark box
    with_mask = face_overlay(crop, heat, 0.93, mask=np.ones((8, 8), np.float32))
    assert with_mask.shape == (192, 2 * 192 + 4, 3)
    png = write_face(tmp_path / "x_explain", PurePosixPath("clips/a/000012_0"), image, heat * 2 - 0.5)
    assert png == (tmp_path / "x_explain/clips/a/000012_0.png").resolve()
    saved = np.load(png.with_suffix(".npy"))
    assert saved.dtype == np.float32 and saved.shape == (SIZE, SIZE) and saved.min() == 0 and saved.max() == 1
    assert np.asarray(Image.open(png)).shape == (192, 192, 3)
    with pytest.raises(ValueError, match="leaves"):
        write_face(tmp_path / "x_explain", PurePosixPath("../escape"), image, heat)


def test_names_mirror_the_inputs_safely_and_uniquely(tmp_path: Path) -> None:
    base = tmp_path / "in"
    names = Names()
    assert names.claim(mirrored(str(base / "set a/vid 1.mp4"), base)) == PurePosixPath("set_a/vid_1")
    assert names.claim(mirrored(str(base / "set a/vid_1.avi"), base)) == PurePosixPath("set_a/vid_1_2")
    assert names.claim(mirrored(str(base / "SET_A/VID_1.png"), base)) == PurePosixPath("SET_A/VID_1_3")
    outside = mirrored("/elsewhere/../../x/.hidden.jpg", base)  # not below the input folder: all of its path
    assert ".." not in outside.parts and outside == PurePosixPath("elsewhere/_/_/x/hidden")


def test_projector_files_read_by_tensorboard_s_own_plugin(tmp_path: Path) -> None:
    from tensorboard.plugins.projector import projector_plugin as plugin

    model = get_model("tiny", img_size=SIZE).eval()
    images = faces(5)
    features = pooled_features(model, images).numpy()
    assert features.shape == (5, model.backbone.num_features)
    meta = [[i % 2, f"method\t{i}", f"video {i}\n", 0.5] for i in range(5)]  # tabs and breaks: made safe
    folder = write_projector(tmp_path / "embeddings", "celebdf", features, meta, images[:, :, :32, :32])
    configs, paths = plugin.ProjectorPlugin._read_latest_config_files(None, [("celebdf", str(folder))])
    (embedding,) = configs["celebdf"].embeddings
    resolve = lambda p: plugin._rel_to_abs_asset_path(p, paths["celebdf"])  # noqa: E731
    np.testing.assert_allclose(
        plugin._read_tensor_tsv_file(resolve(embedding.tensor_path)), features, rtol=1e-6
    )
    rows = Path(resolve(embedding.metadata_path)).read_text().splitlines()
    assert rows[0].split("\t") == ["label", "method", "video", "prob"]
    assert rows[2].split("\t") == ["1", "method 1", "video 1", "0.5"] and len(rows) == 6
    assert list(embedding.sprite.single_image_dim) == [32, 32]
    assert Image.open(resolve(embedding.sprite.image_path)).size == (96, 96)  # 3 x 3 cells for 5 faces
    assert list(folder.glob("events.out.tfevents.*"))  # a run TensorBoard lists
    write_projector(tmp_path / "embeddings", "celebdf", features[:2], meta[:2], images[:2, :, :32, :32])
    assert len(Path(resolve(embedding.metadata_path)).read_text().splitlines()) == 3  # replaced, not appended


def test_tsne_picture_colours_by_label_and_method() -> None:
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (20, 8)), rng.normal(6, 1, (20, 8))])
    methods = ["real"] * 20 + ["Deepfakes"] * 10 + ["FaceSwap"] * 10
    fig = tsne_figure(features, [0] * 20 + [1] * 20, methods, seed=0, title="celebdf")
    by_label, by_method = fig.axes
    assert [t.get_text() for t in by_label.get_legend().get_texts()] == ["real (20)", "fake (20)"]
    assert [t.get_text() for t in by_method.get_legend().get_texts()] == [
        "Deepfakes (10)", "FaceSwap (10)", "real (20)",
    ]  # fmt: skip


def test_every_method_choice_has_its_grad_cam_class() -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.base_cam import BaseCAM

    from deepfake.choices import EXPLAIN_METHODS
    from deepfake.explain.cam import CAM_CLASSES

    assert ("none", *CAM_CLASSES) == EXPLAIN_METHODS
    assert all(issubclass(getattr(pytorch_grad_cam, name), BaseCAM) for name in CAM_CLASSES.values())
