"""Shared fixtures: small on-disk datasets written as real image files, and Hydra compose helpers.

Also the test tiers' guards: the hubs are offline for the whole session, and a test that starts a Python
subprocess (a CLI run, torchrun) must carry the `cli` marker so `pytest -m "not slow and not cli"` stays fast.
"""

from __future__ import annotations

import os

# huggingface_hub reads these once, at import; set them before anything (timm, a test module) imports it, so no
# test waits on the network. Subprocesses inherit them.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"

import multiprocessing.util  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Generator, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from PIL import Image  # noqa: E402

from deepfake.config import register_configs  # noqa: E402

if TYPE_CHECKING:
    from tests.videos import VideoSet

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

register_configs()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep generated data out of ~/.cache."""
    monkeypatch.setenv("DEEPFAKE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


#: The test being set up, run or torn down (fixtures it requests included); None between tests.
_current: pytest.Item | None = None
#: Where this environment's interpreter and console scripts (torchrun, tensorboard, ...) live.
_ENV_BIN = Path(sys.executable).parent


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    global _current
    _current = item
    try:
        return (yield)
    finally:
        _current = None


def _require_cli(what: str) -> None:
    if _current is not None and not _current.get_closest_marker("cli"):
        raise RuntimeError(
            f"{_current.nodeid} starts {what}: mark it @pytest.mark.cli "
            "(the fast tier, -m 'not slow and not cli', runs no subprocesses)"
        )


def _refuse_unmarked_subprocess(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: a test (or a fixture it uses) that starts Python, torchrun, tensorboard... without `cli` fails.
    System tools that library code runs by itself in milliseconds (git for provenance, uname, ldconfig) pass."""
    if event != "subprocess.Popen":
        return
    executable, argv = args[0], args[1]
    words = [argv] if isinstance(argv, str | bytes | os.PathLike) else list(argv)
    program = os.fsdecode(executable or words[0])
    found = Path(shutil.which(program) or program)
    if found.name.startswith("python") or found.parent == _ENV_BIN:
        _require_cli(f"`{found.name}` in a subprocess")


def _guarded_spawnv_passfds(path: str | bytes, args: list[str], passfds: tuple[int, ...]) -> int:
    """multiprocessing's spawn and forkserver start a fresh interpreter without subprocess.Popen (so without an
    audit event); torch.multiprocessing.spawn goes through here. Forked DataLoader workers do not."""
    _require_cli(f"`{Path(os.fsdecode(path)).name}` through multiprocessing spawn")
    return _spawnv_passfds(path, args, passfds)


sys.addaudithook(_refuse_unmarked_subprocess)
_spawnv_passfds = multiprocessing.util.spawnv_passfds
multiprocessing.util.spawnv_passfds = _guarded_spawnv_passfds


def write_face(path: Path, label: int, rng: np.random.Generator, size: int = 32) -> None:
    """A tiny image whose fakes carry a bright square: learnable within a couple of epochs."""
    img = rng.integers(60, 120, size=(size, size, 3), dtype=np.uint8)
    if label:
        img[size // 4 : size // 2, size // 4 : size // 2] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def make_folder_dataset(root: Path, videos: int = 4, frames: int = 3, size: int = 32, seed: int = 0) -> Path:
    """Write `root/{train,val,test}/{real,fake}/...` with JPEG and PNG frames and a nested method folder."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for v in range(videos):
            for f in range(frames):
                ext = "png" if f % 2 else "jpg"
                write_face(root / split / "real" / f"{split}_r{v:03d}" / f"{f:04d}.{ext}", 0, rng, size)
                method = "Deepfakes" if v % 2 else "FaceSwap"
                write_face(
                    root / split / "fake" / method / f"{split}_f{v:03d}" / f"{f:04d}.{ext}", 1, rng, size
                )
    return root


@pytest.fixture(autouse=True)
def restore_torch_globals() -> Iterator[None]:
    """The one thread guard: `hardware.num_threads`, `hardware.deterministic` and `one_thread` switch
    process-wide torch state, so every test leaves it as it found it."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> None:
    """Tiny tensors on a shared box: one intra-op thread is faster and steadier than contending for all of them
    (`pytestmark = pytest.mark.usefixtures("one_thread")`); `restore_torch_globals` restores the count."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real-vs-fake folder dataset shared by one module's runs (they only read it)."""
    return make_folder_dataset(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]) / "data")


@pytest.fixture
def folder_dataset(tmp_path: Path) -> Path:
    return make_folder_dataset(tmp_path / "dataset")


FAST = [
    "model=tiny",
    "data.num_workers=0",
    "data.img_size=32",
    "training.batch_size=8",
    "training.num_epochs=2",
    "training.log_every_n_steps=1",
    "calibration_min_samples=0",  # tiny validation splits: fit the temperature anyway (its tests read it)
    "eval.score_test_split=false",  # ~0.6 CPU-s a run; tests/test_run_end.py and test_quickstart.py cover it
]


@pytest.fixture
def compose_cfg() -> Iterator[Callable[..., DictConfig]]:
    """Compose `conf/train.yaml` with overrides through Hydra's compose API (no Hydra run dir)."""

    def _compose(overrides: list[str], config_name: str = "train") -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)

    yield _compose


def run_cli(
    args: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python <args>` from the repo as a user would, capturing both streams."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


def make_flat_test_set(root: Path, videos: int = 4, frames: int = 3, seed: int = 0) -> Path:
    """A test set laid out as `root/{real,fake}/...` (no split folders), where every third image is drawn as
    the other class, so AUC and accuracy sit strictly between 0 and 1; plus one loose image (its own video)."""
    rng = np.random.default_rng(seed)
    for v in range(videos):
        for f in range(frames):
            flipped = (v + f) % 3 == 0
            write_face(root / "real" / f"r{v:02d}" / f"{f:03d}.png", int(flipped), rng)
            method = "NeuralTextures" if v % 2 else "Face2Face"
            write_face(root / "fake" / method / f"f{v:02d}" / f"{f:03d}.jpg", int(not flipped), rng)
    write_face(root / "real" / "loose.png", 0, rng)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished run (tiny model, 2 epochs) whose last step scored two test sets and wrote its report;
    shared, read-only, by the evaluate, predict, export, TensorBoard and report tests. Keys: run, data, celebdf (dataset root), dfdc (flat)."""
    from train import train

    base = tmp_path_factory.mktemp("trained")
    paths = {
        "data": make_folder_dataset(base / "ffpp"),
        "celebdf": make_folder_dataset(base / "celebdf", videos=3, seed=1),
        "dfdc": make_flat_test_set(base / "dfdc", seed=2),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFAKE_CACHE", str(base / "cache"))
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[
                    *FAST,
                    "data=folder",
                    f"data.root={paths['data']}",
                    f"base_path={base}",
                    f"data.test_sets=[{paths['celebdf']},{paths['dfdc']}]",
                    "eval.bootstrap_samples=200",
                    "eval.target_fpr=0.1",  # 12 real validation images: enough for a 10% FPR threshold
                ],
            )
        train(cfg)
    runs = [p for p in (base / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return {"run": runs[0], **paths}


@pytest.fixture(scope="session")
def test_videos(tmp_path_factory: pytest.TempPathFactory) -> VideoSet:
    """Short H.264 clips with real faces, written once per session (see tests/videos.py)."""
    from tests.videos import write_test_videos

    return write_test_videos(tmp_path_factory.mktemp("videos"))
