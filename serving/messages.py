"""How request errors name what a client sent: the JSON kind of a value, a quoted list (standard library only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_REPORTED", "json_kind", "quote_list"]

MAX_REPORTED = 3
"""Offending positions (rows, features, names) quoted in one message."""

_KINDS = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def json_kind(value: Any) -> str:
    """``an array``, ``a string``, ``null`` ...: what a decoded JSON value is, for a message."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "raw bytes (not decoded as JSON)"
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def quote_list(names: Sequence[Any], limit: int = 8) -> str:
    """``'a', 'b', ... (3 more)``: the first ``limit`` names, quoted."""
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
