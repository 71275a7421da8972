"""Nested config containers as flat dotted keys: what trackers log as params and what resume compares."""

from __future__ import annotations

from typing import Any


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}, "c": []}` -> `{"a.b": 1, "c": []}`: an empty mapping is a value, like a list."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}
