"""JSON from clients (request bodies, websocket messages), read strictly.

orjson, like most parsers, lets the last of two equal keys in one object win; Kazoo reads the
first. A body such as `{"action": "break", "action": "hangup"}` would then mean one thing to
channelsd and another to Kazoo, to an audit log or to a filter in front of it: refused.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class DuplicateKey(ValueError):
    """One object names the same key twice."""


def _unique(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(f'the key "{key[:64]}" appears twice in one object')
            seen.add(key)


def loads(raw: bytes | str) -> Any:
    """The value (orjson's); orjson.JSONDecodeError for what is not JSON, DuplicateKey for an
    object with a key twice. Bounded in nesting by orjson (1,024 levels) before the second,
    checking read, which stops at Python's recursion limit: a ValueError too."""
    value = orjson.loads(raw)
    if isinstance(value, dict | list):
        try:
            json.loads(raw, object_pairs_hook=_unique)
        except RecursionError:
            raise ValueError("nested too deeply") from None
    return value
