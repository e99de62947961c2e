"""The table's loops over an event's headers in C (channelsd_fields) do what the Python ones in
channelsd/fields.py do: on every event of the captures, and on hypothesis events whose values
are anything a hostile switch can put in JSON (issue #16).

Compared are whole tables fed the same events (every field of every row, the refusals, the
tombstones) and the two functions alone on a fresh row (the fields, the count of changes, the
details found, the refusals). A C loop that skipped a header, kept a value the Python one
refuses, interned where it should not or counted a refusal twice fails here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_eventpick import ALL_EVENTS
from test_eventpick import _state as _whole_state

from channelsd import builds, fields
from channelsd.channel import MAX_VALUE_CHARS, Channel
from channelsd.table import _CORE_DETAILS, _RTP_DETAILS, _STATE_CHAINS, ChannelTable, Identity

ROOT = Path(__file__).resolve().parent.parent

C_MERGE, C_DETAILS = fields.loops(compiled=True)
PY_MERGE, PY_DETAILS = fields.loops(compiled=False)


def test_the_build_tested_is_of_this_source() -> None:
    # Optional at install time (setup.py); where the tests run it must be there and current,
    # or every comparison below would hold the Python loops equal to themselves.
    assert fields.built(), "channelsd_fields was not built: `pip install -e .` again"
    assert builds.source_state("channelsd_fields") == "current", (
        "channelsd_fields was not built from channelsd/fields.c as it is now: "
        "`pip install -e .` again"
    )


def test_the_table_uses_the_c_loops_when_built() -> None:
    table = ChannelTable()
    assert table._merge_fields.__qualname__ == "Fields.merge"
    assert ChannelTable(compiled=False)._merge_fields is fields.merge_fields


@pytest.mark.parametrize("identity", ["default", "custom"])
def test_tables_fed_every_capture_event_are_equal(identity: str) -> None:
    def table(compiled: bool) -> ChannelTable:
        chains = {"owner_id": ["variable_sip_from_user", "Caller-Caller-ID-Number"]}
        made = Identity(chains) if identity == "custom" else None
        return ChannelTable(made, clock=lambda: 1.0, compiled=compiled)

    c, py = table(True), table(False)
    most = 0
    for i, (_scenario, event) in enumerate(ALL_EVENTS):
        c.apply("fs1", dict(event))
        py.apply("fs1", dict(event))
        most = max(most, len(c))
        if i % 20 == 0:  # (every event: minutes; a row differs for longer than 20 events)
            assert _state(c) == _state(py), i
    assert _state(c) == _state(py)
    assert most > 10


def _state(table: ChannelTable) -> dict[str, Any]:
    # A row no event has told the creation time of holds the time it was made here, which
    # differs between the two tables by the time between their apply() calls.
    state = _whole_state(table)
    for ch in table.all():
        if not ch.created_known:
            del state["rows"][ch.key]["created_us"]
    return state


# -- hostile events --------------------------------------------------------------------------

TABLE = ChannelTable()
HEADERS = sorted(
    {h for _, chain, _ in TABLE._chains for h in chain} | {h for _, h, _ in _RTP_DETAILS}
)
UUIDS = ["5f3e2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6", "7a1b2c3d-0000-4000-8000-000000000001"]
TEXT = st.one_of(
    st.sampled_from(["", "CS_EXECUTE", "ACTIVE", "8000", "00000", "123456", "PCMU", *UUIDS]),
    st.text(max_size=12),
    st.text(alphabet="0123456789", min_size=1, max_size=7),
    st.sampled_from(["x" * MAX_VALUE_CHARS, "y" * (MAX_VALUE_CHARS + 1), "٣٤", "1_0", " 5"]),
)
VALUES = st.recursive(
    st.one_of(TEXT, st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=4,
)
EVENTS = st.dictionaries(st.sampled_from(HEADERS), VALUES, max_size=12)
NAMES = st.sampled_from(
    ["CHANNEL_CREATE", "CHANNEL_STATE", "CHANNEL_CALLSTATE", "CHANNEL_ANSWER", "CALL_UPDATE"]
)


def _fields_of(ch: Channel) -> dict[str, Any]:
    return {s: getattr(ch, s) for s in Channel.__slots__ if s != "created_us"}


@settings(max_examples=400, deadline=None)
@given(event=EVENTS, held=EVENTS)
def test_merge_equals_the_python_loop_on_any_values(
    event: dict[str, Any], held: dict[str, Any]
) -> None:
    for chains in (TABLE._chains, _STATE_CHAINS):
        rows, counts, refusals = [], [], []
        for merge in (C_MERGE, PY_MERGE):
            ch = Channel("fs1", UUIDS[0])
            PY_MERGE(ch, held, chains, {})  # what the row held before
            refused: dict[str, int] = {}
            counts.append(merge(ch, event, chains, refused))
            rows.append(_fields_of(ch))
            refusals.append(refused)
        assert rows[0] == rows[1] and counts[0] == counts[1] and refusals[0] == refusals[1]


@settings(max_examples=400, deadline=None)
@given(event=EVENTS)
def test_details_equal_the_python_loop_on_any_values(event: dict[str, Any]) -> None:
    for details in (_RTP_DETAILS, _CORE_DETAILS):
        c_refused: dict[str, int] = {"read_codec": 1}
        py_refused: dict[str, int] = {"read_codec": 1}
        c, py = (
            C_DETAILS(None, event, details, c_refused),
            PY_DETAILS(None, event, details, py_refused),
        )
        assert c == py and [type(v) for v in c.values()] == [type(v) for v in py.values()]
        assert c_refused == py_refused


def _helds(found: dict[str, Any]) -> st.SearchStrategy[dict[str, Any] | None]:
    """What a channel may hold beside an event's details: none, them, more, fewer, or one
    changed (a text, another number, a number spelt as text)."""
    keys = sorted(found)
    same = st.just(dict(found))
    more = st.builds(lambda extra: {**found, **extra}, st.dictionaries(st.text(), st.text()))
    fewer = st.sampled_from(keys).map(lambda k: {x: v for x, v in found.items() if x != k})
    changed = st.tuples(st.sampled_from(keys), st.one_of(st.text(), st.integers())).map(
        lambda kv: {**found, kv[0]: kv[1]}
    )
    spelt = st.sampled_from(keys).map(lambda k: {**found, k: str(found[k])})
    made = [same, more]
    if keys:
        made += [fewer, changed, spelt]
    return st.one_of(st.none(), *made)


@settings(max_examples=400, deadline=None)
@given(event=EVENTS, data=st.data())
def test_details_held_already_are_none_as_in_the_python_loop(
    event: dict[str, Any], data: st.DataObject
) -> None:
    """details() with what the row holds: None exactly when each detail found is held with
    an equal value (the table then leaves the row's details as they are), else all found."""
    for details in (_RTP_DETAILS, _CORE_DETAILS):
        found = PY_DETAILS(None, event, details, {})
        assert found is not None
        held = data.draw(_helds(found))
        c, py = C_DETAILS(held, event, details, {}), PY_DETAILS(held, event, details, {})
        assert c == py
        if c is None:
            assert held is not None and {**held, **found} == held
        else:
            assert c == found and (held is None or {**held, **found} != held)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(st.tuples(NAMES, st.sampled_from(UUIDS), EVENTS), max_size=12))
def test_tables_fed_hostile_events_are_equal(events: list[tuple[str, str, dict]]) -> None:
    c = ChannelTable(clock=lambda: 1.0, compiled=True)
    py = ChannelTable(clock=lambda: 1.0, compiled=False)
    for name, uuid, headers in events:
        event = {**headers, "Event-Name": name, "Unique-ID": uuid}
        c.apply("fs1", dict(event))
        py.apply("fs1", dict(event))
    assert _state(c) == _state(py)


def test_a_shared_value_is_interned_and_an_equal_one_keeps_the_held_object() -> None:
    chains = ((("state", ("Channel-State",), fields.SHARED),), (("name", ("N",), None),))
    for merge in (C_MERGE, PY_MERGE):
        ch = Channel("fs1", UUIDS[0])
        value = "".join(["CS_", "EXECUTE"])  # a new str object, not interned
        assert merge(ch, {"Channel-State": value}, chains[0], {}) == 1
        assert ch.state is sys.intern("CS_EXECUTE")
        held = ch.name = "".join(["a", "b"])
        assert merge(ch, {"N": "".join(["a", "b"])}, chains[1], {}) == 0
        assert ch.name is held


def test_a_field_naming_a_channel_passes_the_one_uuid_gate() -> None:
    chains = (("loopback_other_leg", ("A", "B"), fields.A_UUID),)
    for merge in (C_MERGE, PY_MERGE):
        ch = Channel("fs1", UUIDS[0])
        refused: dict[str, int] = {}
        # refused, and the chain stops there: the next header may not stand in for it
        assert merge(ch, {"A": "x y\nuuid_kill", "B": UUIDS[1]}, chains, refused) == 0
        assert ch.loopback_other_leg is None and refused == {"loopback_other_leg": 1}
        assert merge(ch, {"A": UUIDS[1]}, chains, refused) == 1
        assert ch.loopback_other_leg == UUIDS[1]


# -- the object's life: wrong arguments raise, never crash -----------------------------------


def test_wrong_arguments_raise_type_errors_in_a_child() -> None:
    code = textwrap.dedent(
        """
        from channelsd_fields import Fields
        from channelsd.channel import Channel
        f = Fields("s", "u", lambda v: True, 10)
        ch = Channel("n", "u")
        bad = [
            (ch, [], (), {}), (ch, {}, [], {}), (ch, {}, (), []), (ch, {}, ((1, 2, 3),), {}),
            (ch, {}, (("a", "b", None),), {}), (ch, {}, (("a", ("h",)),), {}), (ch,),
        ]
        for args in bad:
            try:
                f.merge(*args)
            except TypeError:
                pass
            else:
                raise SystemExit(f"merge{args!r} did not raise")
        for args in [
            (None, [], (), {}), (None, {}, ((1, 2),), {}), (None, {}, [], {}), (),
            ([], {}, (), {}), ({}, {}, (), {}, None), ({}, (), {}),
        ]:
            try:
                f.details(*args)
            except TypeError:
                pass
            else:
                raise SystemExit(f"details{args!r} did not raise")
        try:  # a field the row has not
            f.merge(ch, {"h": "v"}, (("nope", ("h",), None),), {})
        except AttributeError:
            pass
        else:
            raise SystemExit("an unknown field did not raise")
        try:  # the uuid gate failing is an error, not a refusal
            failing = Fields("s", "u", lambda v: 1 / 0, 10)
            failing.merge(ch, {"h": "v"}, (("name", ("h",), "u"),), {})
        except ZeroDivisionError:
            pass
        else:
            raise SystemExit("a failing gate did not raise")
        never = Fields.__new__(Fields)
        for call in (lambda: never.merge(ch, {}, (), {}), lambda: never.details(None, {}, (), {})):
            try:
                call()
            except RuntimeError:
                pass
            else:
                raise SystemExit("an uninitialised Fields did not raise")
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_check_warns_when_the_c_loops_are_missing_and_the_table_still_works() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["channelsd_fields"] = None  # as where it could not be built
        from channelsd.table import ChannelTable
        from channelsd import fields
        table = ChannelTable()
        assert table._merge_fields is fields.merge_fields
        table.apply("fs1", {{"Event-Name": "CHANNEL_CREATE", "Channel-State": "CS_INIT",
                            "Unique-ID": "5f3e2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6"}})
        assert table.all()[0].state == "CS_INIT"
        from channelsd.cli import main
        sys.exit(main(["check", "-c", {str(ROOT / "conf/channelsd.toml")!r}]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning: channelsd_fields (C) is not installed" in done.stderr
    assert fields.install_warning() is None  # here it is built: nothing to say
