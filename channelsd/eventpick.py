"""Reading only what the table reads out of a json event: the event socket's parser.

A FreeSWITCH json event is ~70 headers (~2.5 KB); the channel table reads ~20 of them. Parsed
whole by orjson, building the other ~50 strings was the larger half of channelsd's cost per
event (BENCHMARKS.md, issue #16). `channelsd_picker` (C, built by `pip install` from
channelsd/picker.c) walks the body once and builds only the headers the table reads.

The picked dict is the table's alone: an event anything else reads (a HEARTBEAT, a
BACKGROUND_JOB) is parsed whole, and so is any body the picker leaves to orjson (anything but
a flat object of printable-ASCII strings). Where the extension could not be built (no C
compiler or Python headers at install time), every event is parsed whole, as before: slower,
never different (tests/test_eventpick.py holds the two equal).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from channelsd import builds
from channelsd.events import parse_json
from channelsd.table import TABLE_EVENT_NAMES, TABLE_EVENT_PREFIX, ChannelTable, table_event

try:
    from channelsd_picker import Picker
except ImportError:  # built optionally: see setup.py
    Picker = None

log = logging.getLogger(__name__)

Parse = Callable[[bytes], dict[str, Any]]
# picks (None: parse that body whole), bodies, hints, the position after the last, whether the
# picks still hold (the table's identity they were picked for is still its identity)
Cut = tuple[list[dict[str, Any] | None], list[bytes], list[bytes | None], int, Callable[[], bool]]


def built() -> bool:
    """Whether the C picker is installed (`channelsd check` and the start-up log say so when
    it is not: install_warning())."""
    return Picker is not None


def install_warning() -> str | None:
    """What `check` and `run` warn of when the picker is missing (`pip install` says nothing
    of an extension it could not build, unless run with -v)."""
    if Picker is not None:
        return None
    return builds.missing(
        "channelsd_picker",
        "every json event is parsed whole (the same table, for more CPU per event)",
    )


def picker_for(table: ChannelTable) -> Any | None:
    """A picker of what `table` reads now, or None when events must be parsed whole: the
    extension is missing, or the identity names a header JSON may write escaped (the picker
    matches names by their bytes)."""
    if Picker is None:
        return None
    try:
        return Picker(sorted(table.headers_read), table.identity.ccv_prefix)
    except ValueError as exc:
        # A header name or prefix with a quote, a backslash, a control or non-ASCII character
        # (the config's schema refuses them; an Identity built in code may hold them):
        # correct, but slower.
        log.warning("json events are parsed whole: the identity's %s", exc)
        return None


class TableReader:
    """The event socket's json parser for a connection that feeds `table`, by the event
    (`parse`) or by the socket read (`cut`). It follows the table's identity (a SIGHUP changes
    which headers are read)."""

    def __init__(self, table: ChannelTable) -> None:
        self._table = table
        self._identity: Any = None  # the identity the picker was made for
        self._picker: Any = None

    def _current(self) -> Any | None:
        if self._identity is not self._table.identity:
            self._identity, self._picker = self._table.identity, picker_for(self._table)
        return self._picker

    def parse(self, body: bytes) -> dict[str, Any]:
        picker = self._current()
        if picker is not None:
            picked = picker.pick(body)
            if picked is not None and table_event(picked.get("Event-Name")):
                return picked
        return parse_json(body)

    def cut(self, buf: bytes, pos: int, budget: int, shift: int, max_body: int) -> Cut | None:
        """The json event frames in a row at buf[pos:], cut and picked in one C call (the
        ingest's hot path: one Python call per socket read, not several per event): their
        picks, bodies and the position after them. A pick is None where the body is to be
        parsed whole (`parse_json`): not an event the table reads, or not the plain case.
        It stops after `budget` frames (each body counts one more per 2**shift bytes), a
        body over `max_body` bytes, or at the first bytes that are not a whole json event
        frame: the caller's own framing takes those. None when there is no picker (every
        event is parsed whole, through `parse`).

        Each pick comes with the `raw` hint ChannelTable.apply() takes: b"" when none of its
        picked headers starts with the custom channel variables' prefix, None when one does
        (apply() reads the pick's own ~20 headers for them). The picker has looked at every
        header already; given the body, apply() would search its ~2.5 KB for the prefix
        again, on half of all events, to learn the same. (A None pick's hint is its body.)

        And whether the picks still hold: the caller applies them one by one and may let the
        hub run between them, where a SIGHUP may give the table a new identity (other headers
        read); from then on each body is to be picked anew (`parse`). (Bound to the identity
        of this cut: a `parse` meanwhile moves the reader on, not these picks.)"""
        picker = self._current()
        if picker is None:
            return None
        picks, bodies, hints, end = picker.cut(
            buf, pos, budget, shift, max_body, TABLE_EVENT_PREFIX, TABLE_EVENT_NAMES
        )
        table, identity = self._table, self._identity
        return picks, bodies, hints, end, lambda: table.identity is identity


def parser_for(table: ChannelTable) -> Parse:
    """The event socket's json parser for a connection that feeds `table` (TableReader)."""
    return TableReader(table).parse
