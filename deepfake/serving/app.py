"""The FastAPI application: /api/predict, /api/health, /api/info, OpenAPI docs at /docs, and the page at /.

Every request that scores goes through `Service.answer`: the upload is copied into its own folder of the
server's private temp dir, a video's duration is checked, the model scores it in a worker thread (never on
the event loop) with at most `serve.max_concurrent` at once (the others wait their turn), and the folder is
deleted whatever happens. One access-log line per request names the method, path, status and milliseconds.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request, UploadFile
from omegaconf import DictConfig, OmegaConf

from deepfake.prediction.inputs import video_kind
from deepfake.serving.model import Answer, ServedModel
from deepfake.serving.uploads import (
    ASGIApp,
    BodyLimit,
    Message,
    PrivateDir,
    Receive,
    Refused,
    Scope,
    Send,
    check_duration,
    safe_name,
)
from deepfake.version import __version__

log = logging.getLogger("deepfake")
access = logging.getLogger("deepfake.access")

CHUNK = 1 << 20  # bytes copied at a time from an upload into its folder


class Service:
    """What every request shares: the model, the private dir, the limits, the secrets and the queue."""

    def __init__(self, cfg: DictConfig, model: ServedModel, private: PrivateDir) -> None:
        self.model, self.private = model, private
        s = cfg.serve
        self.max_concurrent = int(s.max_concurrent)
        self.max_bytes = int(s.max_upload_mb * 1024 * 1024)
        self.max_duration_s = float(s.max_duration_s)
        self.token = os.environ.get(s.token_env) or None
        self.password = os.environ.get(s.password_env) or None
        self.token_env = s.token_env
        self._limiter: anyio.CapacityLimiter | None = None
        p = model.pcfg
        one = len(model.loaded) == 1
        paths = [str(d.path) for d in model.loaded]
        self.meta = {
            "threshold": p.threshold,
            "aggregation": OmegaConf.to_container(p.aggregation, resolve=True),
            "checkpoint": paths[0] if one else paths,
            "calibrated": p.calibrated,
        }

    @property
    def too_large(self) -> str:
        return (f"the upload is over this server's limit of {self.max_bytes / 2**20:g} MiB (serve.max_upload_mb): "
                "send a shorter or smaller file, or raise the limit")  # fmt: skip

    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # made on the event loop, at the first request
            self._limiter = anyio.CapacityLimiter(self.max_concurrent)
        return self._limiter

    async def answer(self, source: Path | UploadFile, filename: str | None) -> Answer:
        """Score one uploaded file (an UploadFile, or a file the page received) in a private folder."""
        name = safe_name(filename)
        with self.private.request() as folder:
            path = folder / name
            if isinstance(source, Path):
                await anyio.to_thread.run_sync(shutil.copyfile, source, path)
            else:
                await _save(source, path, self.max_bytes, self.too_large)
            if video_kind(str(path)) == "video":
                await anyio.to_thread.run_sync(check_duration, path, self.max_duration_s)
            answer = await anyio.to_thread.run_sync(self.model.score, path, name, limiter=self.limiter())
        return answer

    def api_row(self, answer: Answer) -> dict[str, Any]:
        return {**answer.row, **self.meta}


async def _save(upload: UploadFile, path: Path, limit: int, message: str) -> None:
    size = 0
    with path.open("wb") as out:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise Refused(413, message)
            out.write(chunk)


class AccessLog:
    """ASGI middleware: one line per HTTP request, when its response ends: client, method, path, status, ms."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            client = scope.get("client") or ("-", 0)
            access.info('%s "%s %s" %d %.1f ms', client[0], scope["method"], scope["path"], status,
                        (time.perf_counter() - t0) * 1000)  # fmt: skip


def build_app(service: Service) -> FastAPI:
    """The API's routes, the token check, the size limit and the access log (the page is mounted by `page`)."""
    app = FastAPI(
        title="deepfake detector",
        version=__version__,
        description="Is this video or face image fake? The same probability as `predict.py` with the same settings.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, limit=service.max_bytes, message=service.too_large)
    app.add_middleware(AccessLog)

    async def token(request: Request) -> None:
        if service.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), service.token.encode()):
            raise HTTPException(401, f"a valid token is needed: send `Authorization: Bearer <${service.token_env}>`",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """Liveness: the model is loaded; the device and the package version."""
        return {
            "status": "ok",
            "model_loaded": True,
            "device": str(service.model.device),
            "version": __version__,
        }

    @app.get("/api/info", dependencies=[Depends(token)])
    async def info() -> dict[str, Any]:
        """The checkpoints' model card fields, the calibration and the crop (extraction) settings."""
        return service.model.info()

    @app.post("/api/predict", dependencies=[Depends(token)])
    async def predict(file: UploadFile) -> dict[str, Any]:
        """predict.py's row for the uploaded video or image (path, prob, pred, frames_used, faces_found,
        status, error), with the threshold, aggregation and checkpoint it was scored with. A file that cannot
        be scored is a row with status `error` (HTTP 200), as in predict.py's output."""
        answer = await service.answer(file, file.filename)
        return service.api_row(answer)

    return app
