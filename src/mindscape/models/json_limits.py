"""Limits for free-form JSON that agents and operators send (traits, metadata, input, result)."""

from __future__ import annotations

from typing import Any, cast


def json_depth(value: object) -> int:
    """Nesting depth: a scalar is 0, {"a": 1} is 1, {"a": [1]} is 2."""
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in cast(dict[str, Any], value).values()), default=0)
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in cast(list[Any], value)), default=0)
    return 0
