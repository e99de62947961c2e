"""The uuids of FreeSWITCH's `show channels as json`, read one row at a time.

A reconcile needs only which uuids the switch lists. Parsing the whole answer at once built
every row (~40 strings and a dict each) before the first was looked at: 10,000 channels are
~10 MB of JSON and ~30 MB of objects, alive together. In a long-running daemon that peak is
what stays: new channels and tombstones allocated meanwhile land in the interpreter's arenas
beside the rows, and an arena goes back to the system only when every object in it is gone
(the soak of issue #17 saw +5 MiB of arenas after its first reconnects, and never after). One
row at a time, the peak is a row; the hub is visited between rows (`pace`), so a hostile
switch's endless listing cannot hold it either.

The answer is `{"row_count": N, "rows": [{...}, ...]}`, or `{"row_count": 0}` with no rows.
Rows are decoded with the standard library's `raw_decode`, which reads one value from an
offset; bytes that are not UTF-8 become U+FFFD, as in events (channelsd.events).
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator

from channelsd import turns

_decoder = json.JSONDecoder()
_SPACE = " \t\r\n"
# JSON's whitespace, skipped in C: a listing padded with megabytes of it between rows would
# otherwise be a Python step per byte with no row to pace at (seconds without the hub).
_SPACES = re.compile(r"[ \t\r\n]*")


class ListingError(ValueError):
    """An answer that is not a listing: an error reply, or malformed JSON."""


def listed_uuids(body: bytes) -> set[str]:
    """Every row's `uuid` (rows that are not objects, or without a string uuid, are skipped).
    Raises ListingError when the answer is not a well-formed listing: unknown, not empty."""
    text = body.decode("utf-8", "replace").strip(_SPACE)
    if not text.startswith("{"):
        raise ListingError(f"show channels answered {text[:80]!r}")
    uuids: set[str] = set()
    try:
        for row in _rows(text):
            uuid = row.get("uuid") if isinstance(row, dict) else None
            if isinstance(uuid, str):
                uuids.add(uuid)
            turns.pace()
    except (ValueError, IndexError, RecursionError) as exc:
        raise ListingError(f"show channels answered malformed JSON: {exc}") from None
    return uuids


def _skip(text: str, i: int) -> int:
    found = _SPACES.match(text, i)
    return found.end() if found else i


def _expect(text: str, i: int, char: str) -> int:
    i = _skip(text, i)
    if text[i : i + 1] != char:
        raise ValueError(f"expected {char!r} at {i}")
    return i + 1


def _rows(text: str) -> Generator[object, None, None]:
    """The elements of the top-level object's "rows" array; every other member is read and
    dropped. The whole text must be that one object."""
    i = _skip(text, _expect(text, 0, "{"))
    seen: set[str] = set()
    if text[i : i + 1] == "}":
        i += 1
    else:
        while True:
            key, i = _decoder.raw_decode(text, _skip(text, i))
            if not isinstance(key, str) or key in seen:
                raise ValueError(f"bad or repeated member name {key!r}")
            seen.add(key)
            i = _expect(text, i, ":")
            if key == "rows":
                i = yield from _array(text, _skip(text, i))
            else:
                _, i = _decoder.raw_decode(text, _skip(text, i))
            i = _skip(text, i)
            if text[i : i + 1] == ",":
                i += 1
                continue
            i = _expect(text, i, "}")
            break
    if _skip(text, i) != len(text):
        raise ValueError(f"extra data at {i}")


def _array(text: str, i: int) -> Generator[object, None, int]:
    """The elements of the array at `i`; returns the offset after it."""
    if text[i : i + 1] != "[":
        raise ValueError("rows is not a list")
    i = _skip(text, i + 1)
    if text[i : i + 1] == "]":
        return i + 1
    while True:
        row, i = _decoder.raw_decode(text, i)
        yield row
        i = _skip(text, i)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)
            continue
        return _expect(text, i, "]")
