"""Decoding FreeSWITCH event bodies (text/event-json and text/event-plain) into dicts.

JSON is what channelsd subscribes to: no encoding ambiguity and a fast parser. Plain is read
too, because a recorded plain capture must replay into the same table, and it is parsed the
way libesl does it: split into lines first, then URL-decode each value, so a `%0A` inside a
caller-controlled value can never forge a header (greenswitch decodes first, then splits).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson


class EventParseError(ValueError):
    """An event body that is not a well-formed FreeSWITCH event."""


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # FreeSWITCH copies what callers send (a caller name, a phone's User-Agent) into its
        # JSON as it came, valid UTF-8 or not (Kazoo met a Yealink agent ending in raw 0xff).
        # Dropping such an event would hide the call, and its partner's events (they carry the
        # name as Other-Leg-*), keep it listed after it ends, and fail every listing while it
        # lasts: the bad bytes become U+FFFD instead, as everywhere else they are shown.
        try:
            event = orjson.loads(body.decode("utf-8", "replace"))
        except orjson.JSONDecodeError:
            raise EventParseError(f"event body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise EventParseError("event body is not a JSON object")
    return event


def parse_plain(body: bytes) -> dict[str, Any]:
    text = body.decode("utf-8", "replace")  # as parse_json: a caller's bytes, not an error
    head, sep, rest = text.partition("\n\n")
    event: dict[str, Any] = {}
    for line in head.split("\n"):
        if not line:
            continue
        name, colon, value = line.partition(": ")
        if not colon:
            raise EventParseError(f"malformed header line {line[:60]!r}")
        value = unquote(value)
        if value == "_undef_":
            value = ""
        elif value.startswith("ARRAY::"):
            value = value[7:].split("|:")
        event[name] = value
    if sep and "Content-Length" in event:
        event["_body"] = rest
    return event
