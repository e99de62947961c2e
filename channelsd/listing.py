"""A list's forms: crossbar-style filters, the JSON array and the CSV form (spec §1)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import gevent

from channelsd.channel import Channel
from channelsd.table import ChannelTable, Scope

# Long lists are built in slices so that event ingest keeps running meanwhile.
YIELD_EVERY = 500

_MISSING = object()


def _lookup(item: Mapping[str, Any], field: str) -> Any:
    """A key, or a dotted path into nested objects (custom_channel_vars.Account-ID)."""
    if field in item:
        return item[field]
    value: Any = item
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


class Filters:
    """The filters a query string asks for; unknown parameters are simply not filters."""

    def __init__(self, args: Iterable[tuple[str, str]]) -> None:
        self.equal: list[tuple[str, str]] = []
        self.not_equal: list[tuple[str, str]] = []
        self.has_key: list[str] = []
        self.key_missing: list[str] = []
        for name, value in args:
            if name.startswith("filter_not_"):
                self.not_equal.append((name[len("filter_not_") :], value))
            elif name.startswith("filter_"):
                self.equal.append((name[len("filter_") :], value))
            elif name == "has_key":
                self.has_key.append(value)
            elif name == "key_missing":
                self.key_missing.append(value)

    def key(self) -> tuple[tuple[Any, ...], ...]:
        """What these filters select, comparable: two subscribers with equal keys see the same."""
        return (
            tuple(sorted(self.equal)),
            tuple(sorted(self.not_equal)),
            tuple(sorted(self.has_key)),
            tuple(sorted(self.key_missing)),
        )

    def __bool__(self) -> bool:
        return bool(self.equal or self.not_equal or self.has_key or self.key_missing)

    def keep(self, item: Mapping[str, Any]) -> bool:
        for field, want in self.equal:
            v = _lookup(item, field)
            if v is _MISSING or _text(v) != want:
                return False
        for field, unwanted in self.not_equal:
            v = _lookup(item, field)
            if v is not _MISSING and _text(v) == unwanted:
                return False
        for field in self.has_key:
            if _lookup(item, field) is _MISSING:
                return False
        return all(_lookup(item, field) is _MISSING for field in self.key_missing)


def in_slices(items: list[Any]) -> Iterator[list[Any]]:
    """A long list in slices, visiting the hub between them."""
    for start in range(0, len(items), YIELD_EVERY):
        if start:
            gevent.sleep(0)
        yield items[start : start + YIELD_EVERY]


def list_json(table: ChannelTable, channels: list[Channel], now: float) -> bytes:
    """The list as a JSON array, spliced from each channel's cached JSON."""
    parts = [item for part in in_slices(channels) for item in table.items_json(part, now)]
    return b"[" + b",".join(parts) + b"]"


class ListCache:
    """Lists' JSON, kept for the rest of the wall-clock second while their scope is unchanged.

    elapsed_s counts whole seconds (as Kazoo does), so within one second an unchanged list
    reads the same; a portal's many clients polling one account then cost one build a
    second. A scope's generation moves with any change to it, so nothing stale is served,
    and only the current second's lists are held."""

    def __init__(self) -> None:
        self._second = -1
        self._memos: dict[int, tuple[Scope, int, bytes]] = {}

    def json(self, table: ChannelTable, scope: Scope | list[Channel], now: float) -> bytes:
        """The list's JSON array; a list of channels (a user's, a filtered one) is not kept."""
        if not isinstance(scope, Scope):
            return list_json(table, scope, now)
        second = int(now)
        if second != self._second:
            self._second, self._memos = second, {}
        memo = self._memos.get(id(scope))
        if memo is not None and memo[0] is scope and memo[1] == scope.gen:
            return memo[2]
        gen = scope.gen
        data = list_json(table, scope.ordered(), now)
        # Built in slices with the hub visited between them: keep it only if nothing moved.
        if scope.gen == gen and self._second == second:
            self._memos[id(scope)] = (scope, gen, data)
        return data


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A number, signed or not (E.164 +15552084410, -3, 12.5): a spreadsheet reads it as a
# number, never as a formula, and scripts must read back what the API said.
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def _cell(value: Any) -> str:
    """Caller names are chosen by callers: a cell a spreadsheet would run as a formula
    (starting with = + - @, a tab or a carriage return) gets a leading ' (OWASP's CSV
    injection guard), unless it is a plain number. README documents the guard."""
    text = _text(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def _flatten(item: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in item.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            flat[key] = _cell(",".join(_text(x) for x in v))
        else:
            flat[key] = _cell(v)
    return flat


def to_csv(items: Iterable[Mapping[str, Any]]) -> str:
    """One row per item, nested objects as dotted columns, columns in first-seen order."""
    rows = [_flatten(i) for i in items]
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
