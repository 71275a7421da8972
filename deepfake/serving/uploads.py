"""Where uploads live and what is refused: a private temp dir per server, a folder per request (deleted after
scoring), the upload size limit (enforced while the body streams in) and the video duration limit."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Refused(Exception):
    """A request the server will not score: an HTTP status and the one-line reason a person reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def safe_name(filename: str | None) -> str:
    """An uploaded file's name as the row's `path`: its last component, other characters replaced; never empty
    or a dot name, so it can never leave the request's folder."""
    base = _UNSAFE.sub("_", Path((filename or "").replace("\\", "/")).name).lstrip(".")
    return base[:120] or "upload"


class PrivateDir:
    """The server's temp dir (mode 0700, removed at shutdown); each request gets its own folder in it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="deepfake-serve-"))

    @contextlib.contextmanager
    def request(self) -> Iterator[Path]:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def duration_s(path: Path) -> float | None:
    """A video's duration in seconds from its container (None when it cannot tell: the decoder then reports)."""
    try:
        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / av.time_base
            stream = container.streams.video[0]
            if stream.duration and stream.time_base:
                return float(stream.duration * Fraction(stream.time_base))
    except (av.error.FFmpegError, OSError, ValueError, IndexError):
        return None
    return None


def check_duration(path: Path, limit_s: float) -> None:
    seconds = duration_s(path) if limit_s > 0 else None
    if seconds is not None and seconds > limit_s:
        raise Refused(413, f"the video lasts {seconds:.0f} s, over this server's limit of {limit_s:g} s "
                           "(serve.max_duration_s): cut it shorter, or raise the limit")  # fmt: skip


class BodyLimit:
    """ASGI middleware (added inside the app, so its exception handlers answer): a request body over `limit`
    bytes is refused with 413, from its Content-Length before anything is read, or as soon as a streamed
    (chunked) body passes the limit."""

    def __init__(self, app: ASGIApp, limit: int, message: str) -> None:
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            body = json.dumps({"detail": self.message}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # FastAPI re-raises an HTTPException met while reading the form
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)
