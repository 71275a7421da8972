"""A real MLflow tracking server for the tests, run from its own virtual environment.

MLflow 3's server needs SQLAlchemy 2, while this project pins SQLAlchemy < 2 (hydra-optuna-sweeper -> optuna < 3),
so the server runs apart, as a lab's does. `.ci/run` builds one and exports `DEEPFAKE_MLFLOW_SERVER` (its
`bin/mlflow`); on a workstation, make one beside the checkout (git ignores it) and the tests find it:

    python3 -m venv .mlflow-server && .mlflow-server/bin/pip install mlflow

Without either, the tests that need it are skipped with that command as the reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = "DEEPFAKE_MLFLOW_SERVER"
HOW = (
    f"no MLflow server to test against: set {ENV}=/path/to/venv/bin/mlflow, or make one with "
    "`python3 -m venv .mlflow-server && .mlflow-server/bin/pip install mlflow` (it needs SQLAlchemy 2, which "
    "this project's environment cannot have)"
)


def server_command() -> Path | None:
    """The `mlflow` executable of the server's environment: $DEEPFAKE_MLFLOW_SERVER, else ./.mlflow-server."""
    given = os.environ.get(ENV)
    if given:
        path = Path(given).expanduser()
        return path if path.is_file() else None
    local = ROOT / ".mlflow-server" / "bin" / "mlflow"
    return local if local.is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite store and proxied artifacts under `folder`.

    It runs in its own process group: `mlflow server` starts uvicorn as a child, and `kill()` must stop both,
    as a crash or an operator's kill would."""

    def __init__(self, command: Path, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.log = (folder / "server.log").open("w")
        self.proc = subprocess.Popen(
            [
                str(command), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job runner: faster start
        )  # fmt: skip

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}: {self.log_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"mlflow server not ready after {timeout:.0f} s: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        self.log.flush()
        return (self.folder / "server.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the server and its worker: no goodbye, as when the machine or the process dies."""
        self._signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        self._signal(signal.SIGKILL)  # a worker that outlived the parent
        self.log.close()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)  # the group this object started, and only it
