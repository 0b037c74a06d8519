"""JSON for what the store writes: orjson, because the intake hot path encodes several small
documents per alert and the standard library's encoder costs about ten times as much.

``dumps`` returns ``str`` (SQLite must store TEXT, not BLOB, for its JSON functions to read it).
Values JSON cannot represent are written as ``str(value)``; datetimes as RFC 3339.
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
_CANONICAL = orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=_OPTIONS).decode()


def dumps_canonical(value: Any) -> str:
    """Sorted keys, no whitespace: the form the audit chain hashes."""
    return orjson.dumps(value, default=str, option=_CANONICAL).decode()


loads = orjson.loads
