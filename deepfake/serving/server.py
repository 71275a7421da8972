"""`serve.py`'s driver: check the config, load the model once, build the app (and page), run uvicorn.

The socket is bound here first (a port in use is one `error:` line, and `port=0` learns its port before the
start line is printed). uvicorn shuts down gracefully on SIGTERM or Ctrl-C: it stops accepting, lets the
requests in flight finish within `serve.shutdown_timeout_s`, and the process exits 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deepfake.config import ServeConfig
from deepfake.errors import ConfigError, UserError

log = logging.getLogger("deepfake")


def checked(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    """Merge onto the schema and check the server's own values (the scoring keys: predict.py's checks)."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(ServeConfig), cfg)
    except Exception as e:  # omegaconf raises several types; all mean "this config is malformed"
        raise ConfigError(f"invalid serve config: {e}") from None
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("checkpoint is not set: pass checkpoint=<run directory or .pt file>")
    s = cfg.serve
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"port must be in [0, 65535] (got {cfg.port})")
    if s.max_concurrent < 1:
        raise ConfigError(f"serve.max_concurrent must be >= 1 (got {s.max_concurrent})")
    if s.max_upload_mb <= 0:
        raise ConfigError(f"serve.max_upload_mb must be > 0 (got {s.max_upload_mb})")
    if s.max_duration_s < 0:
        raise ConfigError(f"serve.max_duration_s must be >= 0 (0 = no limit; got {s.max_duration_s})")
    if s.explain and cfg.explain.method == "none":
        raise ConfigError("serve.explain=true needs a method: pass explain=gradcam (or hirescam, gradcam++)")
    if s.shutdown_timeout_s <= 0:
        raise ConfigError(f"serve.shutdown_timeout_s must be > 0 (got {s.shutdown_timeout_s})")
    return cfg


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one error naming the fix."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog; from now on connections wait in the queue, none is refused
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}): pass another port= "
                        "(0 = any free one) or host=") from None  # fmt: skip
    sock.set_inheritable(True)
    return sock


def warn_if_exposed(host: str, token_env: str, password_env: str) -> bool:
    """Log a warning when `host` is not a loopback address; True if it was."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning("host=%s: the server answers other machines, not only this one; set %s and %s, or put it "
                    "behind a proxy that authenticates", host, token_env, password_env)  # fmt: skip
    return not loopback


def serve(cfg: DictConfig | Mapping[str, Any]) -> None:
    """Run the server until SIGTERM or Ctrl-C."""
    cfg = checked(cfg)
    sock = bind(cfg.host, cfg.port)  # a port in use fails before seconds of imports and the model load
    # Before Gradio is imported: no telemetry, no version check, its files inside the private dir.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    from deepfake.serving.uploads import PrivateDir

    private = PrivateDir()
    try:
        _run(cfg, private, sock)
    finally:
        sock.close()
        private.close()


def _run(cfg: DictConfig, private: Any, sock: socket.socket) -> None:
    import uvicorn

    from deepfake.serving.app import Service, build_app
    from deepfake.serving.model import ServedModel

    root: Path = private.root
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    tempfile.tempdir = str(root)  # multipart spooling of large uploads lands in the private dir too
    model = ServedModel(cfg, root)
    try:
        service = Service(cfg, model, private)
        app = build_app(service)
        if cfg.serve.page:
            from deepfake.serving.page import mount_page

            app = mount_page(app, service, root / "gradio" / "downloads")
        warn_if_exposed(cfg.host, cfg.serve.token_env, cfg.serve.password_env)
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=cfg.serve.shutdown_timeout_s)  # fmt: skip
        server = uvicorn.Server(config)
        shown = f"[{host}]" if ":" in host else host
        log.info("serving %s at http://%s:%d/ (API: /api/predict, docs: /docs%s); uploads in %s; "
                 "SIGTERM or Ctrl-C stops it", ", ".join(str(d.path) for d in model.loaded), shown, port,
                 "" if cfg.serve.page else "; no page", root)  # fmt: skip
        if service.token is None:
            log.info("no API token: set %s to require one", cfg.serve.token_env)
        # uvicorn re-raises the signal that stopped it once it is done; a no-op handler makes that exit 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        server.run(sockets=[sock])
        log.info("stopped")
    finally:
        model.close()
