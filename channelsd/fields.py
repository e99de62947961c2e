"""The channel table's two loops over an event's headers: the fields of a row, its details.

Applying an event reads ~30 headers in the order of the table's chains ("the first of these
headers present"), compares each value with what the row holds and keeps the new ones. As
bytecode this was the largest part of applying an event (BENCHMARKS.md, issue #16), so
`channelsd_fields` (C, built by `pip install` from channelsd/fields.c beside the picker) does
it when installed. The functions here are the definition: the C is held equal to them on
every capture event and on hypothesis events, hostile values included (tests/test_fields.py),
and they run wherever the extension could not be built.
"""

from __future__ import annotations

from collections.abc import Callable
from sys import intern
from typing import Any

from channelsd import builds
from channelsd.channel import MAX_VALUE_CHARS, usable
from channelsd.validate import is_uuid

try:
    from channelsd_fields import Fields
except ImportError:  # built optionally: see setup.py
    Fields = None

SHARED = "shared"  # a field whose new value is interned: many channels hold the same one
A_UUID = "uuid"  # a field naming a channel: a uuid, or refused

Chains = tuple[tuple[str, tuple[str, ...], str | None], ...]
Details = tuple[tuple[str, str, bool], ...]


def _refuse(refused: dict[str, int], field: str) -> None:
    refused[field] = refused.get(field, 0) + 1


def merge_fields(ch: Any, e: dict[str, Any], chains: Chains, refused: dict[str, int]) -> int:
    """Set each field of `ch` to the first usable header of its chain that `e` carries; how
    many fields changed. A value equal to the one held keeps the held object (no churn, and
    it may be shared); a new value of a SHARED field is interned. A value that is not
    usable() is refused (counted in `refused` by field) and the chain goes on, as if it were
    absent; an A_UUID value that is no uuid is refused and the field keeps what it had."""
    get = e.get
    changed = 0
    for attr, chain, mode in chains:
        for header in chain:
            v = get(header)
            if v:
                if v.__class__ is not str or len(v) > MAX_VALUE_CHARS:
                    v = usable(v)
                    if v is None:
                        _refuse(refused, attr)
                        continue
                if v != getattr(ch, attr):
                    if mode is SHARED:
                        v = intern(v)
                    elif mode is A_UUID and not is_uuid(v):
                        _refuse(refused, attr)
                        break
                    setattr(ch, attr, v)
                    changed += 1
                break
    return changed


def pick_details(
    held: dict[str, Any] | None, e: dict[str, Any], details: Details, refused: dict[str, int]
) -> dict[str, Any] | None:
    """The details `e` carries, by key: the first header of a key that is present wins; a
    value that is no short text, or a numeric one that is not 1 to 5 digits, is refused.
    None when `held` (what the channel has) has each of them already: most events with
    variables carry what the one before them did."""
    get = e.get
    found: dict[str, Any] = {}
    for key, header, numeric in details:
        v = get(header)
        if v and key not in found:
            if v.__class__ is not str or len(v) > MAX_VALUE_CHARS:
                _refuse(refused, key)
                continue
            if numeric:
                if not (len(v) <= 5 and v.isascii() and v.isdigit()):
                    _refuse(refused, key)
                    continue
                v = int(v)
            found[key] = v
    if held is not None and all(k in held and held[k] == v for k, v in found.items()):
        return None
    return found


Merge = Callable[[Any, dict[str, Any], Chains, dict[str, int]], int]
PickDetails = Callable[
    [dict[str, Any] | None, dict[str, Any], Details, dict[str, int]], dict[str, Any] | None
]


def loops(compiled: bool = True) -> tuple[Merge, PickDetails]:
    """(merge, details): the C ones when built and `compiled`, else those above."""
    if compiled and Fields is not None:
        c = Fields(SHARED, A_UUID, is_uuid, MAX_VALUE_CHARS)
        return c.merge, c.details
    return merge_fields, pick_details


def built() -> bool:
    """Whether the C loops are installed."""
    return Fields is not None


def install_warning() -> str | None:
    """What `check` and `run` warn of when the C loops are missing."""
    if Fields is not None:
        return None
    return builds.missing(
        "channelsd_fields",
        "the table's loops over each event's headers run as Python (the same table, for more "
        "CPU per event)",
    )
