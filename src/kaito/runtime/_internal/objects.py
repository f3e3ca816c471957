"""Helpers on JSON-shaped objects shared by the client and the store."""

from __future__ import annotations

from typing import Any


def deep_copy(obj: Any) -> Any:
    """A copy of JSON-shaped data; several times faster than copy.deepcopy for dict trees."""
    if isinstance(obj, dict):
        return {k: deep_copy(v) if isinstance(v, dict | list) else v for k, v in obj.items()}
    if isinstance(obj, list):
        return [deep_copy(v) if isinstance(v, dict | list) else v for v in obj]
    return obj
