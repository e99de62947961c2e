"""Any JSON value in any header of any event: nothing on an event's path raises (issue #16).

A switch's events are set by dialplans, SIP headers and callers, and a broken or hostile one
may send a list, an object or a number where FreeSWITCH sends text. Events take one path in
the daemon: the node's handler, the table, the table's listeners (the ended-calls store, the
streams' brokers, the websocket hub, actions in flight), then the lists that render the rows.
Raised anywhere on it, an exception drops the event with a traceback in the journal, once per
such event. Found by tests/test_fields.py's hostile tables: a `Channel-State` or `Event-Name`
that was a list raised in a set's `in` (the table's final-state check, the node's counts).

Here every event of the real captures is sent again through a real daemon's handler with
hypothesis' choice of its headers replaced by such values; the daemon is never started, so
nothing but the event path runs.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_eventpick import ALL_EVENTS

from channelsd.channel import MAX_VALUE_CHARS
from channelsd.config import parse
from channelsd.daemon import Daemon

from conftest import config_dict
from tableinvariants import assert_indices_agree

HOSTILE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.sampled_from(["", "x" * (MAX_VALUE_CHARS + 1), "CS_DESTROY", "a b\nc"]),
        st.text(max_size=8),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=4,
)
# Events of every kind the captures hold, a few of each (all of them: minutes per example).
SAMPLE = [e for i, (_, e) in enumerate(ALL_EVENTS) if i % 7 == 0]


@pytest.fixture(scope="module")
def daemon() -> Any:
    return Daemon(parse(config_dict([SimpleNamespace(port=1)]), "x.toml"))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_no_value_in_any_header_makes_the_event_path_raise(daemon: Any, data: Any) -> None:
    node = next(iter(daemon.nodes.values()))
    start = data.draw(st.integers(0, len(SAMPLE) - 1))
    for event in SAMPLE[start : start + 40]:
        event = dict(event)
        names = sorted(set(event) | {"Event-Name", "Channel-State", "Unique-ID"})
        for name in data.draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
            event[name] = data.draw(HOSTILE)
        node._on_event(event, None)  # raises: the test fails
    table = daemon.table
    assert_indices_agree(table)
    table.items_json(table.all(), table.now())  # every row still renders


def test_a_final_state_sent_as_a_list_ends_the_leg_as_the_text_would() -> None:
    """The fields take a list's first value (usable()): `["CS_DESTROY"]` sets the state to
    CS_DESTROY, so it must also end the leg, or the row stays listed as live and destroyed."""
    from channelsd.table import ChannelTable

    uuid = "5f3e2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6"
    for name in ("CHANNEL_STATE", "CHANNEL_CALLSTATE", "CHANNEL_EXECUTE"):
        table = ChannelTable()
        table.apply("fs1", {"Event-Name": "CHANNEL_CREATE", "Unique-ID": uuid})
        table.apply("fs1", {"Event-Name": name, "Unique-ID": uuid, "Channel-State": ["CS_DESTROY"]})
        assert table.get(uuid) is None and table.is_tombstoned("fs1", uuid), name
