"""serve.py: the HTTP API and the page answer as predict.py does, refuse what they must, and stop cleanly.

The subprocess tests share one server (`served`: the session's tiny trained run, 3 frames per video) and start
one more with a token, a password and a short duration limit (`guarded`), which the SIGTERM test stops last.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from deepfake.errors import ConfigError
from deepfake.prediction.driver import predict
from deepfake.prediction.inputs import NOT_A_VIDEO
from deepfake.serving.server import checked, warn_if_exposed
from deepfake.serving.uploads import safe_name
from tests.conftest import ROOT, run_cli
from tests.videos import VideoSet

FRAMES = 3  # MTCNN on the CPU is slow: few frames per video
LIMIT_MB = 0.1  # the shared server's upload limit: the test videos (~30 KB) pass, 200 KB does not
TOKEN, PASSWORD = "s3cret-token", "open sesame"


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    private: Path  # the server's private temp dir
    lines: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.lines)


def _start(checkpoint: Path, *overrides: str, env: dict[str, str] | None = None) -> Server:
    """`python serve.py` on a free port of 127.0.0.1; returns once it prints its address."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), f"checkpoint={checkpoint}", "port=0", "num_workers=0",
         f"extraction.frames_per_video={FRAMES}", *overrides],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if found := re.search(r"at (http://127\.0\.0\.1:\d+/) .*uploads in (\S+);", line):
            break
    else:
        raise AssertionError(f"serve.py exited {proc.wait()} before serving:\n{''.join(lines)}")
    server = Server(proc, found.group(1), Path(found.group(2)), lines)
    threading.Thread(target=lambda: server.lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    return server


def _logged(server: Server, text: str, count: int) -> list[str]:
    """The server's log lines holding `text`, once there are `count` (a line is written as its response ends)."""
    deadline = time.monotonic() + 30
    while len(found := [line for line in list(server.lines) if text in line]) < count:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    return found


def _stop(server: Server) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(60)


@pytest.fixture(scope="module")
def served(trained_run: dict[str, Path]) -> Iterator[Server]:
    server = _start(trained_run["run"], f"serve.max_upload_mb={LIMIT_MB}", "serve.max_concurrent=2")
    yield server
    _stop(server)


@pytest.fixture(scope="module")
def guarded(trained_run: dict[str, Path]) -> Iterator[Server]:
    server = _start(trained_run["run"], "serve.max_duration_s=1", "serve.explain=true",
                    env={"DEEPFAKE_SERVE_TOKEN": TOKEN, "DEEPFAKE_SERVE_PASSWORD": PASSWORD})  # fmt: skip
    yield server
    _stop(server)


def _post(server: Server, path: Path, headers: dict[str, str] | None = None) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(
            f"{server.url}api/predict", files={"file": (path.name, f)}, headers=headers, timeout=120
        )


def _image(trained_run: dict[str, Path]) -> Path:
    return sorted((trained_run["data"] / "test" / "fake").rglob("*.png"))[0]


@pytest.mark.cli
@pytest.mark.slow
def test_api_rows_equal_predict_for_a_video_and_an_image(
    served: Server, trained_run: dict[str, Path], test_videos: VideoSet, tmp_path: Path
) -> None:
    image = _image(trained_run)
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{test_videos.pan}\n{image}\n")
    expected = predict({"checkpoint": str(trained_run["run"]), "input": str(listing), "num_workers": 0,
                        "output": str(tmp_path / "p.csv"), "extraction": {"frames_per_video": FRAMES}})  # fmt: skip
    for path, want in zip((test_videos.pan, image), expected, strict=True):
        answer = _post(served, path)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert got["path"] == path.name
        assert got["prob"] == pytest.approx(want["prob"], abs=1e-6)
        for key in ("pred", "frames_used", "faces_found", "status", "error"):
            assert got[key] == want[key], key
        assert got["threshold"] == 0.5
        assert got["aggregation"] == {"faces": "max", "frames": "mean", "k": 5}
        assert got["checkpoint"] == str(trained_run["run"] / "checkpoints" / "best.pt")
    assert got["frames_used"] is None  # the image: a face crop scored as it is
    video = _post(served, test_videos.pan).json()
    assert video["frames_used"] == video["faces_found"] == FRAMES
    lines = _logged(served, '"POST /api/predict" 200', 3)
    assert all(re.search(r"\d+\.\d ms$", line.strip()) for line in lines)


@pytest.mark.cli
@pytest.mark.slow
def test_bad_files_get_error_rows_and_the_server_keeps_answering(
    served: Server, trained_run: dict[str, Path], test_videos: VideoSet
) -> None:
    not_video = _post(served, test_videos.not_video).json()
    assert (not_video["status"], not_video["prob"], not_video["error"]) == ("error", None, NOT_A_VIDEO)
    truncated = _post(served, test_videos.truncated).json()
    assert truncated["status"] == "error" and truncated["error"].startswith("InvalidDataError")
    no_face = _post(served, test_videos.no_face).json()
    assert (no_face["status"], no_face["prob"], no_face["frames_used"]) == ("no_face", 0.5, 0)
    missing = httpx.post(f"{served.url}api/predict", timeout=30)
    assert missing.status_code == 422 and "file" in missing.text
    assert httpx.get(f"{served.url}api/health").json()["model_loaded"] is True
    assert _post(served, _image(trained_run)).json()["status"] == "ok"
    assert [p.name for p in served.private.iterdir()] == ["gradio"]  # every request's folder deleted


@pytest.mark.cli
@pytest.mark.slow
def test_three_concurrent_requests_all_answer(served: Server, test_videos: VideoSet) -> None:
    """serve.max_concurrent=2: two are scored at once in threads sharing the model, the third waits."""
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _post(served, test_videos.pan), range(3)))
    assert [a.status_code for a in answers] == [200] * 3
    probs = {a.json()["prob"] for a in answers}
    assert len(probs) == 1 and None not in probs  # one shared model, the same answer each time


@pytest.mark.cli
@pytest.mark.slow
def test_uploads_over_the_limit_are_refused(served: Server, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 200_000)
    answer = _post(served, big)
    assert answer.status_code == 413
    assert "serve.max_upload_mb" in answer.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
        boundary = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
        yield boundary
        for _ in range(20):
            yield b"\0" * 10_000
        yield b"\r\n--b--\r\n"

    streamed = httpx.post(f"{served.url}api/predict", content=chunks(),
                          headers={"content-type": "multipart/form-data; boundary=b"}, timeout=30)  # fmt: skip
    assert streamed.status_code == 413 and "serve.max_upload_mb" in streamed.json()["detail"]
    assert httpx.get(f"{served.url}api/health").status_code == 200


@pytest.mark.cli
@pytest.mark.slow
def test_page_shows_a_verdict_after_an_upload_and_loads_nothing_remote(
    served: Server, test_videos: VideoSet, tmp_path: Path
) -> None:
    from tests.browser import Browser, chromium

    if chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    with Browser() as browser:
        browser.open(served.url)
        browser.wait_for("document.querySelector('input[type=file]') !== null")
        browser.upload("input[type=file]", test_videos.pan)
        text = browser.wait_for(
            "(t => t.includes('probability of fake') && t)"
            "((document.querySelector('#verdict') || {innerText: ''}).innerText)"
        )
        api = _post(served, test_videos.pan).json()
        assert f"{api['pred'].upper()}: probability of fake {api['prob']:.4f}" in text
        assert "threshold 0.5" in text and "frames: mean" in text
        hosts = {
            re.sub(r"^(\w+://[^/]+).*", r"\1", u)
            for u in browser.requests
            if re.match(r"(https?|wss?)://", u)
        }
        assert hosts <= {served.url.rstrip("/")}, hosts  # the page's files are the package's own


@pytest.mark.cli
@pytest.mark.slow
def test_token_password_and_duration_limit(
    guarded: Server, trained_run: dict[str, Path], test_videos: VideoSet
) -> None:
    image = _image(trained_run)
    assert _post(guarded, image).status_code == 401
    wrong = _post(guarded, image, {"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "DEEPFAKE_SERVE_TOKEN" in wrong.json()["detail"]
    assert httpx.get(f"{guarded.url}api/info").status_code == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert _post(guarded, image, bearer).json()["status"] == "ok"
    info = httpx.get(f"{guarded.url}api/info", headers=bearer).json()
    assert (
        info["checkpoints"][0]["architecture"] == "test_resnet"
        and info["extraction"]["frames_per_video"] == FRAMES
    )
    assert info["checkpoints"][0]["model_card"].startswith(
        "---"
    )  # the run's MODEL_CARD.md, front matter first
    assert httpx.get(f"{guarded.url}api/health").status_code == 200  # liveness needs no token
    long = _post(guarded, test_videos.pan, bearer)  # 40 frames at 25 fps: 1.6 s, over the 1 s limit
    assert long.status_code == 413 and "serve.max_duration_s" in long.json()["detail"]
    login = f"{guarded.url}login"
    assert httpx.post(login, data={"username": "anyone", "password": "nope"}).status_code >= 400
    assert httpx.post(login, data={"username": "anyone", "password": PASSWORD}).status_code == 200


@pytest.mark.cli
@pytest.mark.slow
def test_page_behind_its_password_shows_the_grad_cam_overlay(
    guarded: Server, trained_run: dict[str, Path], tmp_path: Path
) -> None:
    """Gradio's own client drives the page's upload event (as the browser does) after logging in."""
    from gradio_client import Client, handle_file
    from PIL import Image

    image = _image(trained_run)
    client = Client(guarded.url, auth=("anyone", PASSWORD), download_files=str(tmp_path), verbose=False)
    shown, _, gallery, row, download = client.predict(handle_file(str(image)), api_name="/score")
    prob = json.loads(row)["prob"]
    assert f"probability of fake {prob:.4f} (calibrated)" in shown
    assert json.loads(Path(download).read_text())["prob"] == prob
    (face,) = gallery
    assert face["caption"] == f"{prob:.3f} (frame 0)"
    with Image.open(image) as crop, Image.open(face["image"]) as overlay:
        assert overlay.width > crop.width  # the explanation's overlay panel, not the 32 px crop itself


@pytest.mark.cli
@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_and_exits_0(guarded: Server, test_videos: VideoSet) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_post, guarded, test_videos.five, bearer)  # 5 frames: under the duration limit
        deadline = time.monotonic() + 30
        while not guarded.private.exists() or len(list(guarded.private.iterdir())) < 2:  # its folder exists
            assert time.monotonic() < deadline, guarded.log()
            time.sleep(0.02)
        guarded.proc.send_signal(signal.SIGTERM)
        answer = pending.result(60)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert guarded.proc.wait(60) == 0, guarded.log()
    assert "stopped" in guarded.log() and not guarded.private.exists()


@pytest.mark.cli
def test_a_port_in_use_is_one_error_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli(
            [str(ROOT / "serve.py"), f"checkpoint={tmp_path}", f"port={port}"], cwd=tmp_path, timeout=120
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use): pass another port= (0 = any free one) or host="
    )
    assert "Traceback" not in proc.stderr


def test_uploaded_names_stay_inside_their_folder() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\x\\evil name;rm.mp4") == "evil_name_rm.mp4"
    assert safe_name("..") == safe_name("") == safe_name(None) == "upload"
    assert safe_name(".hidden.png") == "hidden.png"


def test_server_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="checkpoint is not set"):
        checked({})
    with pytest.raises(ConfigError, match=r"serve.max_concurrent must be >= 1 \(got 0\)"):
        checked({"checkpoint": "x", "serve": {"max_concurrent": 0}})
    with pytest.raises(ConfigError, match="port must be in"):
        checked({"checkpoint": "x", "port": 70000})
    with pytest.raises(ConfigError, match=r"serve\.explain=true needs a method"):
        checked({"checkpoint": "x", "serve": {"explain": True}, "explain": {"method": "none"}})
    assert checked({"checkpoint": "x"}).host == "127.0.0.1"  # loopback unless asked


def test_listening_beyond_this_machine_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="deepfake"):
        assert not warn_if_exposed("127.0.0.1", "T", "P") and not warn_if_exposed("::1", "T", "P")
        assert caplog.messages == []
        assert warn_if_exposed("0.0.0.0", "T", "P")
    assert caplog.messages == [
        "host=0.0.0.0: the server answers other machines, not only this one; set T and P, or put it behind a "
        "proxy that authenticates"
    ]
