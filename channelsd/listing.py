"""A list's forms: crossbar-style filters, the JSON array and the CSV form (spec §1).

A list answer is work proportional to the channels (or ended calls) in its scope times what
the request asks of each: filters, CSV cells, pretty printing. All of it runs on the hub, so
every loop here (and the API's loops over a list) calls pace() between items, which lets the
hub run whenever PACE_BUDGET has passed since it last did: however big the scope and
however costly each item, no list request holds the daemon for much longer than that.
The number of filters a request may give is bounded too (MAX_FILTERS), which bounds the
work per item.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, TypeVar

import gevent
import gevent.event
import orjson

from channelsd import envelope, turns
from channelsd.channel import Channel
from channelsd.gzipped import GZIP_ABOVE, Compressed, accepts_gzip, compress
from channelsd.table import ChannelTable, Scope

T = TypeVar("T")
log = logging.getLogger("channelsd.listing")

# Long lists are built in slices so that event ingest keeps running meanwhile (the event
# stream's snapshot uses these).
YIELD_EVERY = 500
# Work between visits to the hub, in seconds of wall time (at least the CPU time it took).
PACE_BUDGET = 0.002
# Channels whose cached JSON is spliced between two looks at the clock: cheap when cached
# (about 2 us each), about 15 us each where a channel's JSON must be built anew.
JSON_SLICE = 64
# Items serialised in one orjson call (about 1 us each): its per-call cost stays amortised.
DUMP_SLICE = 256
# Items freed at once: a list item of a few dozen objects, freed in about 1.5 us.
FREE_SLICE = 512
# Filter parameters (filter_*, filter_not_*, has_key, key_missing) in one request. Crossbar's
# clients send a handful; each one is work for every item of the scope.
MAX_FILTERS = 32

_clock = time.perf_counter
_last_visit = 0.0


def _pause() -> None:
    """Let the hub run (a function, so that tests can count the visits). A request's work:
    it runs again before the bulk work that pauses with channelsd.turns."""
    gevent.sleep(0)


def pace(budget: float | None = None) -> None:
    """Let the hub run if `budget` (PACE_BUDGET) has passed since a paced loop last let it.
    The mark is shared by every greenlet: one that started later than the mark only yields
    early."""
    global _last_visit
    if _clock() - _last_visit >= (PACE_BUDGET if budget is None else budget):
        _pause()
        _last_visit = _clock()


def paced(items: Iterable[T]) -> Iterator[T]:
    """Each of `items`, pacing after each."""
    for item in items:
        yield item
        pace()


def release(items: list[Any]) -> None:
    """Empty a list of items built for one answer a slice at a time, pacing: freeing a few
    thousand dicts (a hundred thousand objects) at once is a stall of its own."""
    while items:
        del items[-FREE_SLICE:]
        pace()


_MISSING = object()
_KEY_FILTERS = ("has_key", "key_missing")


def _lookup(item: Mapping[str, Any], field: str, path: tuple[str, ...]) -> Any:
    """A key, or a dotted path into nested objects (custom_channel_vars.Account-ID)."""
    if field in item:
        return item[field]
    value: Any = item
    for part in path:
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


def too_many_filters(given: int) -> envelope.ApiError:
    return envelope.validation_error(
        {
            "filters": {
                "maxItems": {
                    "message": f"at most {MAX_FILTERS} filter parameters (filter_*, "
                    f"filter_not_*, has_key, key_missing) per request; {given} were given",
                    "target": MAX_FILTERS,
                }
            }
        }
    )


class Filters:
    """The filters a query string asks for; unknown parameters are simply not filters.
    More than MAX_FILTERS is a 400 in Kazoo's validation shape."""

    def __init__(self, args: Iterable[tuple[str, str]]) -> None:
        args = list(args)  # a query string's worth: bounded by the request line
        given = sum(1 for name, _ in args if name.startswith("filter_") or name in _KEY_FILTERS)
        if given > MAX_FILTERS:
            raise too_many_filters(given)
        # (field, its dotted path split once, value)
        self.equal: list[tuple[str, tuple[str, ...], str]] = []
        self.not_equal: list[tuple[str, tuple[str, ...], str]] = []
        self.has_key: list[tuple[str, tuple[str, ...]]] = []
        self.key_missing: list[tuple[str, tuple[str, ...]]] = []
        for name, value in args:
            if name.startswith("filter_not_"):
                field = name[len("filter_not_") :]
                self.not_equal.append((field, tuple(field.split(".")), value))
            elif name.startswith("filter_"):
                field = name[len("filter_") :]
                self.equal.append((field, tuple(field.split(".")), value))
            elif name == "has_key":
                self.has_key.append((value, tuple(value.split("."))))
            elif name == "key_missing":
                self.key_missing.append((value, tuple(value.split("."))))

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
        for field, path, want in self.equal:
            v = _lookup(item, field, path)
            if v is _MISSING or _text(v) != want:
                return False
        for field, path, unwanted in self.not_equal:
            v = _lookup(item, field, path)
            if v is not _MISSING and _text(v) == unwanted:
                return False
        for field, path in self.has_key:
            if _lookup(item, field, path) is _MISSING:
                return False
        return all(_lookup(item, field, path) is _MISSING for field, path in self.key_missing)


def in_slices(items: list[Any]) -> Iterator[list[Any]]:
    """A long list in slices, visiting the hub between them."""
    for start in range(0, len(items), YIELD_EVERY):
        if start:
            gevent.sleep(0)
        yield items[start : start + YIELD_EVERY]


def list_json(table: ChannelTable, channels: list[Channel], now: float) -> bytes:
    """The list as a JSON array, spliced from each channel's cached JSON."""
    parts: list[bytes] = []
    for start in range(0, len(channels), JSON_SLICE):
        if start:
            pace()
        parts += table.items_json(channels[start : start + JSON_SLICE], now)
    return splice(parts)


def splice(
    parts: list[bytes], opening: bytes = b"[", comma: bytes = b",", closing: bytes = b"]"
) -> bytes:
    """A JSON array of items serialised already, in one copy of the whole (a few MB for
    thousands of channels): the brackets go onto the first and last items, not around the
    joined list. `parts` is changed."""
    if not parts:
        return b"[]"
    parts[0] = opening + parts[0]
    parts[-1] += closing
    return comma.join(parts)


def json_array(items: Iterable[Any], pretty: bool = False, nested: bool = False) -> bytes:
    """orjson.dumps(list(items)) built in paced slices, taking DUMP_SLICE items at a time from
    `items` (a generator builds each slice's items only when they are dumped, and they are
    freed young). Pretty: indented as OPT_INDENT_2 does it at the top level, or, `nested`,
    one level in (as the value of the envelope's "data")."""
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if pretty else 0)
    parts = []
    source = iter(items)
    while chunk := list(islice(source, DUMP_SLICE)):
        if parts:
            pace()
        dumped = orjson.dumps(chunk, option=option)
        del chunk  # before the next slice is built
        if not pretty:
            parts.append(dumped[1:-1])
            continue
        inner = dumped[2:-2]  # "[\n" ... "\n]" around the slice's items
        # JSON strings hold no raw line break: every one is the indentation's
        parts.append(inner.replace(b"\n", b"\n  ") if nested else inner)
    if nested:
        return splice(parts, b"[\n  ", b",\n  ", b"\n  ]")
    if pretty:
        return splice(parts, b"[\n", b",\n", b"\n]")
    return splice(parts)


# _RAW: its compression failed; it goes as it is for the rest of its second.
_BUILT, _AGAIN, _RAW = "built", "again", "raw"
# How long before a second turns the lists that went out in gzip during it are built and
# compressed for the next one: the system list's build (~10 ms) and compression (~11 ms)
# are then done before its first asker, instead of in front of every dashboard at once.
PREPARE_LEAD = 0.3


class ListCache:
    """Lists' JSON, kept for the rest of the wall-clock second while their scope is unchanged.

    elapsed_s counts whole seconds (as Kazoo does), so within one second an unchanged list
    reads the same; a portal's many clients polling one account then cost one build a
    second. A scope's generation moves with any change to it, so nothing stale is served,
    and only the current second's lists are held (and, from PREPARE_LEAD before the next
    one, the next second's of the lists that went out in gzip)."""

    def __init__(self, gzip_above: int = GZIP_ABOVE) -> None:
        self.gzip_above = gzip_above
        self._second = -1
        # id(scope) -> [scope, its generation, the list's JSON, gzip state: _BUILT (answered
        # once), _AGAIN (asked again), an AsyncResult while compressed, or the Compressed]
        self._memos: dict[int, list[Any]] = {}
        self._next: dict[int, list[Any]] = {}
        self._next_second = -1
        self._hot: dict[int, tuple[ChannelTable, bytes]] = {}  # went out in gzip this second
        self._preparer: gevent.Greenlet | None = None
        self._prepared = -1  # the second the preparer last built lists for

    def expire(self, now: float) -> None:
        """Drop the lists of a second that has passed (the daemon's tick calls this): the last
        busy second's answers, the system list's MBs among them, would otherwise be held until
        the next list request, however long that takes."""
        if int(now) != self._second:
            self._turn(int(now))

    def _turn(self, second: int) -> None:
        ready = self._next if self._next_second == second else {}
        self._memos = {k: m for k, m in ready.items() if m[0].gen == m[1]}
        self._second, self._next = second, {}

    def json(self, table: ChannelTable, scope: Scope | list[Channel], now: float) -> bytes:
        """The list's JSON array; a list of channels (a user's, a filtered one) is not kept."""
        if not isinstance(scope, Scope):
            return list_json(table, scope, now)
        second = int(now)
        if second != self._second:
            self._turn(second)
        memo = self._memos.get(id(scope))
        if memo is not None and memo[0] is scope and memo[1] == scope.gen:
            if memo[3] is _BUILT:
                memo[3] = _AGAIN
            return memo[2]
        gen = scope.gen
        data = list_json(table, scope.ordered(), now)
        # Built in slices with the hub visited between them: keep it only if nothing moved.
        if scope.gen == gen and self._second == second:
            self._memos[id(scope)] = [scope, gen, data, _BUILT]
        return data

    def gzip(
        self, table: ChannelTable, scope: Scope | list[Channel], head: bytes, data: bytes
    ) -> Compressed | None:
        """`head` + `data` (the list json() gave) in gzip, or None to answer it raw: a list
        not kept, smaller than `gzip_above`, or answered for the first time (one client: raw
        is cheaper than compressing). Asked while another request compresses it: waits."""
        if len(data) < self.gzip_above or not isinstance(scope, Scope):
            return None
        memo = self._memos.get(id(scope))
        if memo is None or memo[2] is not data:
            return None
        state = memo[3]
        if state is _AGAIN:
            # The others asking meanwhile wait for it too: handed the raw list instead, a
            # dozen dashboards' 12 MB each held the compressing one back (p99 0.6 s).
            memo[3] = gevent.event.AsyncResult()
            # (out of memory, say): the list can always go as it is, to this request and to
            # those waiting, not as a 500 to each of them
            state = _compressed(memo, head, _RAW, pace)
        elif isinstance(state, gevent.event.AsyncResult):
            state = state.get()
        if not isinstance(state, Compressed):
            return None
        self._hot[id(scope)] = (table, head)
        if self._preparer is None:
            self._preparer = gevent.spawn(self._prepare)
        return state

    def _prepare(self) -> None:
        """While lists go out in gzip: each second, PREPARE_LEAD before it ends, build them for
        the next (elapsed_s as of its start, as its first asker would), hand them to it if
        their scope did not move meanwhile, and compress them."""
        try:
            while self._hot:
                # Once a second: the round for `second + 1` done (by this greenlet or one
                # before it), the next is the one after; still in `second`, the asks since
                # would have it built again, and again, until the second ended.
                second = max(int(time.time()), self._prepared)
                gevent.sleep(max(0.0, second + 1 - PREPARE_LEAD - time.time()))
                self._prepared = second + 1
                hot, self._hot = self._hot, {}
                prepared: list[tuple[int, list[Any], bytes]] = []  # (key, memo, head)
                for key, (table, head) in hot.items():
                    memo = self._memos.get(key)
                    if memo is None:
                        continue
                    scope = memo[0]
                    gen = scope.gen
                    data = list_json(table, scope.ordered(), float(second + 1))
                    if scope.gen == gen:
                        prepared.append((key, [scope, gen, data, gevent.event.AsyncResult()], head))
                if int(time.time()) > second:
                    continue  # built after its second began: that second's askers build it
                # Taken by the next second before they are compressed: a compression that
                # outlasts this second (a busy machine: 0.1-0.5 s for the system list) is
                # waited for by that second's askers, not done again beside it.
                self._next = {key: memo for key, memo, _ in prepared}
                self._next_second = second + 1
                _compress_side_by_side([(memo, head) for _, memo, head in prepared])
        finally:
            self._preparer = None

    def close(self) -> None:
        """Stop preparing (the daemon is stopping): a preparation under way would otherwise
        build and compress lists for up to a second after the daemon stopped."""
        self._hot = {}
        if self._preparer is not None:
            self._preparer.kill(block=False)

    def encoded(
        self,
        table: ChannelTable,
        scope: Scope | list[Channel],
        parts: tuple[bytes, bytes, bytes],
        accept: str | None,
    ) -> tuple[tuple[bytes, ...], tuple[tuple[str, str], ...]]:
        """A list answer's body (envelope.success_parts around json()'s list) and its encoding
        headers: in gzip when the client accepts it and gzip() has it."""
        compressed = None
        if accepts_gzip(accept):
            compressed = self.gzip(table, scope, parts[0], parts[1])
        if compressed is None:
            return parts, _VARY
        return compressed.answer(parts[2]), _GZIP


def _compress_side_by_side(prepared: list[tuple[list[Any], bytes]]) -> None:
    """The preparer's (memo, head) lists compressed, each in a greenlet of its own, taking
    turns: one whose askers wait does not wait behind the whole of another. A failure: its
    askers compress it, or go raw (gzip())."""
    pendings = [memo[3] for memo, _ in prepared]
    compressing = [
        gevent.spawn(_compressed, memo, head, _AGAIN, turns.pause) for memo, head in prepared
    ]
    try:
        gevent.joinall(compressing)
    finally:  # killed: so are they, and nobody may wait for a list left undone
        gevent.killall(compressing)
        for (memo, _), pending in zip(prepared, pendings, strict=True):
            if not pending.ready():  # (a greenlet killed before it began)
                pending.set(None)
                if memo[3] is pending:
                    memo[3] = _AGAIN


def _compressed(memo: list[Any], head: bytes, failed: str, pause: Callable[[], None]) -> Any:
    """Compress a kept list (ListCache's memo) whose state is the AsyncResult its askers wait
    on meanwhile, pausing with `pause` (an asker's: pace; the preparer's, bulk work:
    turns.pause) while nobody waits for it. Its state becomes the Compressed, or `failed`
    when compression fails (those waiting go raw). Returns the new state."""
    pending = memo[3]

    def paused() -> None:
        # Requests waiting for it make it a request's work: as bulk work each slice waited
        # behind every node reader's turn, and so did they (a 12 MB list: ~220 turns).
        if pending.linkcount():
            pace()
        else:
            pause()

    try:
        state = compress(head, memo[2], paused)
    except Exception:
        log.warning("compressing a list of %d bytes failed", len(memo[2]), exc_info=True)
        state = failed
    except BaseException:
        memo[3] = _AGAIN  # killed (a request, or the preparer): those waiting go raw
        pending.set(None)
        raise
    memo[3] = state
    pending.set(state)
    return state


_VARY = (("Vary", "Accept-Encoding"),)
_GZIP = (("Content-Encoding", "gzip"), *_VARY)


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
    """One row per item, nested objects as dotted columns, columns in first-seen order;
    built row by row, paced (about 70 us a row). `items` may be a generator: each item is
    then flattened as soon as it is made and freed young; a row holds only text, which the
    garbage collector does not track."""
    rows = [_flatten(i) for i in paced(items)]
    columns: dict[str, None] = {}
    for row in paced(rows):
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for row in paced(rows):
        writer.writerow(row)
    release(rows)
    return out.getvalue()
