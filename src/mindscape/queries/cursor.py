"""Opaque paging cursors: the last row's sort key plus a fingerprint of the filters.

A cursor is only valid with the filters that produced it; anything else is refused with a
message telling the agent to start again without a cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any, cast

from mindscape.errors import InvalidArgument

_BAD = "cursor is not valid; repeat the call without `cursor` to start from the first page"


def fingerprint(filters: Any) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(key: list[Any], filters: Any) -> str:
    raw = json.dumps({"k": key, "f": fingerprint(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str, filters: Any) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parsed: Any = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(_BAD) from exc
    if not isinstance(parsed, dict):
        raise InvalidArgument(_BAD)
    data = cast(dict[str, Any], parsed)
    key = data.get("k")
    if not isinstance(key, list):
        raise InvalidArgument(_BAD)
    if data.get("f") != fingerprint(filters):
        raise InvalidArgument("cursor belongs to a call with other filters; repeat the call without `cursor`")
    return cast(list[Any], key)


def key_str(key: list[Any], index: int) -> str:
    value = key[index] if len(key) > index else None
    if not isinstance(value, str):
        raise InvalidArgument(_BAD)
    return value


def key_float(key: list[Any], index: int) -> float:
    value = key[index] if len(key) > index else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidArgument(_BAD)
    return float(value)
