"""`model.pretrained=true`: are timm's weights for a backbone on this machine, or can they be fetched?

Asked before a run starts: without the check, a machine with no network waited ~25 s through Hugging Face's
retries and left a run folder holding only a log. The weights are found where timm would load them from: the
Hugging Face cache for a `hf_hub_id`, torch's hub cache for a plain URL. When they are not there, the hub (or the
URL's host) is asked once, with a short timeout; an answer of any kind means the download can go ahead.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from deepfake.errors import ConfigError

#: Seconds to wait for the hub before calling it unreachable; `HF_HUB_ETAG_TIMEOUT`, when set, wins.
HUB_TIMEOUT_S = 2.0
#: timm's `load_state_dict_from_hf` looks for a safetensors twin of a `.bin` file first (`_get_safe_alternatives`).
_SAFE_TWINS = {
    "pytorch_model.bin": "model.safetensors",
    "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
}


@dataclass(frozen=True)
class WeightSource:
    """Where timm fetches a backbone's pretrained weights: a Hugging Face repo's files, or one URL."""

    repo: str | None  # Hugging Face repo id (`timm/efficientnet_b4.ra2_in1k`)
    revision: str | None
    files: tuple[str, ...]  # candidate files in the repo, in timm's order
    url: str | None  # a plain download (legacy weights), cached under torch's hub dir

    def describe(self) -> str:
        return f"Hugging Face {self.repo}" if self.repo else f"{self.url}"

    def cached_file(self) -> str | None:
        """The local copy timm would load, or None."""
        if self.repo is not None:
            from huggingface_hub import try_to_load_from_cache

            for name in self.files:
                found = try_to_load_from_cache(self.repo, name, revision=self.revision)
                if isinstance(found, str):
                    return found
            return None
        assert self.url is not None
        import torch.hub

        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(self.url).path)
        return str(local) if local.is_file() else None

    def cache_dir(self) -> str:
        if self.repo is not None:
            from huggingface_hub import constants

            return str(constants.HF_HUB_CACHE)
        import torch.hub

        return str(Path(torch.hub.get_dir()) / "checkpoints")


def weight_source(name: str) -> WeightSource | None:
    """timm's pretrained source for `name` (a timm model name, tag optional); None when it has no weights."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        return WeightSource(
            repo, revision or None, hub_files(cfg.hf_hub_filename or "pytorch_model.bin"), None
        )
    if cfg.url:
        return WeightSource(None, None, (), cfg.url)
    return None


def hub_files(filename: str) -> tuple[str, ...]:
    """The files timm tries for a repo's `filename`, in its order."""
    twin = _SAFE_TWINS.get(filename) or (
        filename.removesuffix(".bin") + ".safetensors" if filename.endswith(".bin") else None
    )
    return (twin, filename) if twin else (filename,)


def unreachable_reason(source: WeightSource, timeout: float) -> str | None:
    """Why the weights cannot be downloaded now, or None when the server answered (with anything at all)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 is set"
    try:
        if source.repo is not None:
            from huggingface_hub import get_hf_file_metadata, hf_hub_url
            from huggingface_hub.errors import HfHubHTTPError

            url = hf_hub_url(source.repo, source.files[0], revision=source.revision)
            try:
                get_hf_file_metadata(url, timeout=timeout)
            except HfHubHTTPError:
                return None  # a status code (not found, gated): the hub is there; timm's load will say more
        else:
            assert source.url is not None
            url = source.url
            try:
                urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            except urllib.error.HTTPError:
                return None
    except Exception as e:  # DNS, refused, timeout, proxy, TLS: every transport failure means "not now"
        return f"{urlparse(url).netloc} cannot be reached ({type(e).__name__}: {e}; timeout {timeout:g} s)"
    return None


def hub_timeout() -> float:
    value = os.environ.get("HF_HUB_ETAG_TIMEOUT")
    try:
        return float(value) if value else HUB_TIMEOUT_S
    except ValueError:
        return HUB_TIMEOUT_S


def require_pretrained(name: str, alias: str | None = None) -> None:
    """ConfigError, at once, when timm has no local copy of `name`'s weights and cannot download them.

    `alias` is the name the user typed (`model=xception` builds timm's `legacy_xception`), for the message.
    """
    shown = alias or name
    source = weight_source(name)
    if source is None:
        raise ConfigError(
            f"model.pretrained=true, but timm has no pretrained weights for {name}: pass a weights file with "
            f"model.weights=/path/{shown}.safetensors, or train from scratch with model.pretrained=false"
        )
    if source.cached_file() is not None:
        return
    reason = unreachable_reason(source, hub_timeout())
    if reason is None:
        return
    raise ConfigError(
        f"model.pretrained=true needs the weights of {shown} ({source.describe()}), which are not in the local "
        f"cache ({source.cache_dir()}), and they cannot be downloaded: {reason}. Pass the backbone's weights "
        f"file with model.weights=/path/{shown}.safetensors, or train from random weights with "
        "model.pretrained=false (docs/troubleshooting.md, 'Pretrained weights offline')"
    )
