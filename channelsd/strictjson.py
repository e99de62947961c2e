"""JSON from clients (request bodies, websocket messages), read strictly.

orjson, like most parsers, lets the last of two equal keys in one object win; Kazoo reads the
first. A body such as `{"action": "break", "action": "hangup"}` would then mean one thing to
channelsd and another to Kazoo, to an audit log or to a filter in front of it: refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# A JSON string, or one of the characters that give a document its structure. Numbers and
# literals are never keys, so they are skipped. Used only on text orjson has parsed already.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:]', re.DOTALL)


class DuplicateKey(ValueError):
    """One object names the same key twice."""


def loads(raw: bytes | str) -> Any:
    """The value (orjson's); orjson.JSONDecodeError for what is not JSON, DuplicateKey for an
    object with a key twice."""
    value = orjson.loads(raw)
    # A key twice needs two keys, each followed by a colon: one colon at most (a plain
    # `{"action": "hangup"}`) needs no walk.
    colons = raw.count(b":" if isinstance(raw, bytes) else ":")
    if colons > 1 and isinstance(value, dict | list):
        check_unique_keys(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    return value


def check_unique_keys(text: str) -> None:
    """Raise DuplicateKey if an object of this (valid) JSON text names a key twice. A walk
    over its tokens with a stack, not recursion: orjson takes 1,024 levels of nesting, more
    than Python's recursion (and so `json`'s hooks) could."""
    stack: list[set[str] | None] = []  # per open container: its keys, None for an array
    tokens = _TOKEN.finditer(text)
    pending: str | None = None  # the last string seen, until we know whether it was a key
    for match in tokens:
        token = match.group()
        first = token[0]
        if first == '"':
            pending = token
            continue
        if first == ":" and pending is not None and stack and stack[-1] is not None:
            key = json.loads(pending) if "\\" in pending else pending[1:-1]
            keys = stack[-1]
            if key in keys:
                raise DuplicateKey(f'the key "{key[:64]}" appears twice in one object')
            keys.add(key)
        elif first == "{":
            stack.append(set())
        elif first == "[":
            stack.append(None)
        elif first in "]}":
            stack.pop()
        pending = None
