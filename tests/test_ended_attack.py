"""Outside attack on the ended record that keeps a channel's fields (ended.KEPT) and makes the
item when a listing reads the call (issue #16, f509d18 and 7928d3a).

The previous design built the item at every hang-up, kept its JSON compressed, and a listing
decompressed it: `Ended.item` was a right-sized bytes (zstd knows the content size). The
attack compares with that design where it can: for a destroyed channel, the old record's
payload was `orjson.dumps(ended_item(ch, at))`, computed on the live channel.

Failed before their fixes (defects, both fixed):
- `Ended.item` was orjson.dumps()'s own result, which holds the whole buffer orjson grew
  (~16 KiB for ~1.2 KB of JSON: channel.kept_json's docstring), and an ended listing holds
  every item it made until it splices them: ~17.7 KB a call at the peak of one answer
  (~180 MB for a full store, times the answers in flight), where it was ~2.7 KB. Now a
  right-sized copy (kept_json).
- the record kept every path `recordings` held at the destroy, where the item shows only
  `is_recording`: a switch that starts recordings and never stops them made each ended call
  of the store as large as it liked, for 15 minutes (the old record kept a boolean). Now the
  record keeps whether it recorded, and a live row keeps at most table.MAX_RECORDINGS.

Passing here (coverage of what held): hostile switch values give the old design's item
through the record, no listing form or token shows another account's or user's calls, a
listing leaves nothing held, and a record that cannot be written is logged without the value.
"""

from __future__ import annotations

import gc
import logging
import os
import tracemalloc
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ended_record import hex_id, kazoo_call
from test_eventpick import ALL_EVENTS
from test_hostile_values import HOSTILE

from channelsd.channel import Channel
from channelsd.config import parse
from channelsd.daemon import Daemon
from channelsd.ended import Ended, EndedCalls, ended_item
from channelsd.events import EventParseError, parse_json
from channelsd.table import ChannelTable

from conftest import config_dict, token

AT = 1795847600.25


def old_payload(ch: Channel, at: float) -> bytes:
    """What the previous design's record held for the call (record_of until f509d18)."""
    return orjson.dumps(ended_item(ch, at))


class OldDesign:
    """A destroy listener after the store's: the previous design's item of each call kept,
    and the store's newest record beside it."""

    def __init__(self, store: EndedCalls) -> None:
        self.store = store
        self.pairs: list[tuple[bytes, bytes]] = []
        self.kept = 0

    def on_change(self, kind: str, ch: Channel, _info: Any) -> None:
        if kind != "destroy" or ch.ending is None:
            return
        self.kept += 1
        self.pairs.append((old_payload(ch, AT), self.store._calls[-1]))


def watched_table() -> tuple[ChannelTable, EndedCalls, OldDesign]:
    table = ChannelTable(tombstone_ttl=0)
    store = EndedCalls(max_calls=100_000, clock=lambda: AT)
    table.listen(store.on_change, destroys_only=True)
    old = OldDesign(store)
    table.listen(old.on_change, destroys_only=True)
    return table, store, old


# -- defects -----------------------------------------------------------------------------------


def test_an_ended_calls_item_json_is_a_right_sized_copy() -> None:
    """(Failed before the fix.) `Ended.item` kept orjson.dumps()'s result, which holds the buffer
    orjson grew while writing (channel.kept_json: "~8 KiB resident for 1 KiB of JSON"; 16
    KiB here for 1.2 KB). The previous design's item was zstd's right-sized output. A
    listing keeps each call's item until it is spliced, so this is per call listed."""
    table, store, _ = watched_table()
    kazoo_call(table, 1, hex_id("acc"), hex_id("owner"), hex_id("device"))
    (record,) = store._calls
    call = Ended(record)
    call.as_dict()  # warm whatever one-off allocation making an item needs
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        item = call.item
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= 2 * len(item) + 256, (held, len(item))


def test_an_ended_listing_peaks_at_a_few_kilobytes_a_call() -> None:
    """(Failed before the fix.) `?ended=true` (the console's snapshot asks it; any admin of an
    account may) held ~17.7 KB per listed call at its peak (each Ended's item is orjson's
    overgrown result, all alive until splice() joins them): ~180 MB for a full store of
    10,000, per answer in flight (ten at once: ~1.8 GB), against ~2.7 KB a call with right-
    sized items. The pretty form, which dumps items in slices, peaks at ~3.7 KB a call."""
    daemon = Daemon(parse(config_dict([SimpleNamespace(port=1)]), "x.toml"))
    calls = 1000
    for n in range(calls):
        kazoo_call(daemon.table, n, "acc1", hex_id(f"o{n % 7}"), hex_id(f"d{n % 20}"))
    client = daemon.app.test_client()
    headers = {"X-Auth-Token": token("admin1")}
    client.get("/v2/accounts/acc1/channels?ended=true", headers=headers)  # warm
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        resp = client.get("/v2/accounts/acc1/channels?ended=true", headers=headers)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert resp.status_code == 200 and len(resp.get_json()["data"]) == calls
    body_per_call = len(resp.data) / calls
    assert peak / calls <= 3 * body_per_call, (peak / calls, body_per_call)


def recorded_call(recordings: int) -> bytes:
    """The record of a call that started `recordings` recordings (distinct 1,000-byte paths,
    as a switch may name them) and never stopped them."""
    table, store, _ = watched_table()
    uid = "5f3e2a10-1b2c-4d5e-8f90-a1b2c3d4e5f6"
    base = {"Unique-ID": uid, "variable_uuid": uid, "variable_ecallmgr_Account-ID": "acc1"}
    table.apply("fs1", {"Event-Name": "CHANNEL_CREATE", **base})
    for _ in range(recordings):
        path = "/recordings/" + os.urandom(494).hex()
        table.apply(
            "fs1", {"Event-Name": "RECORD_START", "Unique-ID": uid, "Record-File-Path": path}
        )
    table.apply("fs1", {"Event-Name": "CHANNEL_HANGUP", **base, "Hangup-Cause": "NORMAL_CLEARING"})
    table.apply("fs1", {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uid})
    (record,) = store._calls
    assert Ended(record).as_dict()["is_recording"] is True
    return record


def test_an_ended_calls_record_keeps_no_recording_path_its_item_never_shows() -> None:
    """(Failed before the fix.) The record kept `recordings` (KEPT) whole, and the item reads only
    whether it is empty (`is_recording`). A switch that starts recordings and sends no
    RECORD_STOP makes each ended call's record as large as it likes (1,000 such paths: ~1 MB
    a record; the store keeps 10,000 records for 15 minutes), none of it in any answer. The
    previous design kept `is_recording: true`: the same size with 1 recording or 200."""
    one, many = recorded_call(1), recorded_call(200)
    assert len(many) - len(one) <= 64, (len(one), len(many))


# -- what held ---------------------------------------------------------------------------------

SCENARIOS = sorted({scenario for scenario, _ in ALL_EVENTS})
# Values a hostile switch may send as text that a field keeps, or that a field's parser reads
# as a number: at the limits of what is kept, numbers that JSON or 64 bits cannot hold,
# non-BMP text, what float() reads as NaN or infinity.
HOSTILE_TEXT = st.sampled_from(
    [
        "x" * 2048,
        "\U0001f600" * 2048,
        "\x00\x1b[2J\u2028\u202e",
        "18446744073709551616",
        "999999999999999999",
        "340282366920938463463374607431768211456",
        "nan",
        "inf",
        "-0",
        "4.999999999999999999",
        "1e308",
        " 5",
        "sofia/\U0001f600/\x00",
        "loopback/x-a",
    ]
)
EXTRA = st.sampled_from(
    [
        "RECORD_START",
        "RECORD_STOP",
        "CHANNEL_HOLD",
        "CHANNEL_HANGUP_COMPLETE",
        "API",
    ]
)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_hostile_switch_values_give_the_old_designs_item_through_the_record(data: Any) -> None:
    """Events of the captures, with hypothesis' choice of headers replaced by any JSON value or
    hostile text, plus recordings, holds and uuid_setvar: every destroyed call that hung up
    is kept (record_of never raised), and its item read through the record is the one the
    previous design built on the live channel, byte for byte."""
    scenario = data.draw(st.sampled_from(SCENARIOS))
    events = [e for s, e in ALL_EVENTS if s == scenario]
    table, store, old = watched_table()
    for event in events:
        event = dict(event)
        names = sorted(set(event) | {"Record-File-Path", "Caller-Channel-Created-Time"})
        for name in data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
            event[name] = data.draw(HOSTILE | HOSTILE_TEXT)
        table.apply("fs1", event)
        uid = event.get("Unique-ID")
        if isinstance(uid, str) and data.draw(st.integers(0, 15)) == 0:
            extra = data.draw(EXTRA)
            value = data.draw(HOSTILE_TEXT)
            if extra == "API":
                arg = f"{uid} ecallmgr_Owner-ID={value[:40]};ecallmgr_X={value[:40]}"
                table.apply(
                    "fs1",
                    {
                        "Event-Name": "API",
                        "API-Command": "uuid_setvar_multi",
                        "API-Command-Argument": arg,
                    },
                )
            else:
                table.apply(
                    "fs1",
                    {
                        "Event-Name": extra,
                        "Unique-ID": uid,
                        "Record-File-Path": value,
                        "variable_rtp_audio_in_mos": value,
                        "variable_duration": value,
                        "variable_billsec": value,
                    },
                )
    assert old.kept == len(store._calls)
    for payload, record in old.pairs:
        call = Ended(record)
        assert call.item == payload
        assert call.as_dict() == orjson.loads(payload)
        item = orjson.loads(payload)
        assert (call.owner_id, call.device_id) == (
            item.get("owner_id"),
            item.get("authorizing_id"),
        )


def test_lone_surrogates_never_reach_a_channel_from_the_wire() -> None:
    """record_of encodes fields the old item never held (the channel's name, its recordings'
    paths): a lone surrogate there would make it raise where the old design kept the call.
    The wire cannot carry one: events are parsed by orjson (the picker hands it every \\u
    escape), which refuses an escaped one, and raw bytes of one become U+FFFD."""
    escaped = b'{"Event-Name":"CHANNEL_CREATE","Channel-Name":"sofia/\\ud800x"}'
    with pytest.raises(EventParseError):
        parse_json(escaped)
    raw = b'{"Event-Name":"CHANNEL_CREATE","Channel-Name":"sofia/\xed\xa0\x80x"}'
    assert parse_json(raw)["Channel-Name"] == "sofia/\ufffd\ufffd\ufffdx"


def test_a_record_that_cannot_be_written_costs_only_its_call_and_logs_no_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A value orjson refuses (a lone surrogate fed as a dict, past the wire) in the channel's
    name: the ended store's failure is logged by the table, naming the listener, not the
    value; the calls before and after are kept and listed."""
    table, store, _ = watched_table()
    secret = "sofia/internal/\ud800secret-caller"
    for n, name in enumerate(("sofia/internal/a", secret, "sofia/internal/b")):
        uid = f"5f3e2a10-1b2c-4d5e-8f90-a1b2c3d4e5f{n}"
        base = {"Unique-ID": uid, "variable_uuid": uid, "variable_ecallmgr_Account-ID": "acc1"}
        with caplog.at_level(logging.ERROR):
            table.apply("fs1", {"Event-Name": "CHANNEL_CREATE", "Channel-Name": name, **base})
            table.apply("fs1", {"Event-Name": "CHANNEL_HANGUP", **base, "Hangup-Cause": "X"})
            table.apply("fs1", {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uid})
    listed = [call.as_dict()["uuid"] for call in store.select("acc1")]
    assert listed[0].endswith("f2") and listed[-1].endswith("f0")
    text = "\n".join(
        r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
    )
    assert "secret" not in text


@pytest.fixture(scope="module")
def listed() -> Any:
    """A daemon (never started) whose store holds ended calls of two accounts, users and
    devices, and the previous design's item of each call."""
    daemon = Daemon(parse(config_dict([SimpleNamespace(port=1)]), "x.toml"))
    store = daemon.ctx.ended
    store._clock = lambda: AT
    old: dict[str, dict[str, Any]] = {}

    def keep_old(kind: str, ch: Channel, _info: Any) -> None:
        if kind == "destroy" and ch.ending is not None:
            old[ch.uuid] = orjson.loads(old_payload(ch, AT))

    daemon.table.listen(keep_old, destroys_only=True)
    daemon.table.identity.devices_of["user1"] = (hex_id("d3"),)
    for n in range(120):
        account = ("acc1", "acc2", "acc1-sub")[n % 3]
        owner = ("user1", hex_id("other"), None)[n % 4 % 3]
        kazoo_call(daemon.table, n, account, owner or "", hex_id(f"d{n % 5}"))
    return SimpleNamespace(daemon=daemon, client=daemon.app.test_client(), old=old)


def expected(old: dict[str, dict[str, Any]], account: str | None, user: bool) -> list[str]:
    found = [
        item
        for item in old.values()
        if (account is None or item.get("account_id") == account)
        and (
            not user
            or item.get("owner_id") == "user1"
            or item.get("authorizing_id") == hex_id("d3")
        )
    ]
    return sorted(i["uuid"] for i in found)


@pytest.mark.parametrize("form", ["", "&pretty_print=true", "&accept=csv", "&filter_answered=true"])
@pytest.mark.parametrize(
    ("tok", "path", "account", "user"),
    [
        ("admin1", "/v2/accounts/acc1/channels", "acc1", False),
        ("user1", "/v2/accounts/acc1/channels", "acc1", True),
        ("user1", "/v2/accounts/acc1/users/user1/channels", "acc1", True),
        ("admin1", "/v2/accounts/acc1-sub/channels", "acc1-sub", False),
        ("admin2", "/v2/accounts/acc2/channels", "acc2", False),
        ("super", "/v2/channels", None, False),
    ],
)
def test_every_form_and_token_lists_its_calls_as_the_old_design_did(
    listed: Any, form: str, tok: str, path: str, account: str | None, user: bool
) -> None:
    """Each token sees its scope's ended calls and no other (a user: its owner's and its
    devices'), in every form, with the previous design's items, newest first."""
    resp = listed.client.get(f"{path}?ended=true{form}", headers={"X-Auth-Token": token(tok)})
    assert resp.status_code == 200, resp.data[:200]
    want = expected(listed.old, account, user)
    assert want
    if form == "&accept=csv":
        lines = resp.data.decode().splitlines()
        column = lines[0].split(",").index("uuid")
        got = sorted(line.split(",")[column] for line in lines[1:])
        assert got == want
        return
    items = resp.get_json()["data"]
    assert sorted(i["uuid"] for i in items) == want
    for item in items:
        assert item == listed.old[item["uuid"]]


@pytest.mark.parametrize(
    ("tok", "path"),
    [
        ("admin2", "/v2/accounts/acc1/channels"),
        ("admin1", "/v2/accounts/acc2/channels"),
        ("user1", "/v2/accounts/acc1/users/other/channels"),
        ("admin1", "/v2/channels"),
    ],
)
def test_no_token_reaches_another_scopes_ended_calls(listed: Any, tok: str, path: str) -> None:
    resp = listed.client.get(f"{path}?ended=true", headers={"X-Auth-Token": token(tok)})
    assert resp.status_code == 403, resp.data[:200]


def test_an_ended_listing_leaves_nothing_held(listed: Any) -> None:
    """Every form, after warm-up: neither objects nor bytes stay after the answers."""
    queries = ["", "&pretty_print=true", "&accept=csv", "&filter_answered=true"]

    def ask() -> None:
        for tok in ("admin1", "user1"):
            for q in queries:
                resp = listed.client.get(
                    f"/v2/accounts/acc1/channels?ended=true{q}",
                    headers={"X-Auth-Token": token(tok)},
                )
                assert resp.status_code == 200
                del resp

    ask()
    ask()
    gc.collect()
    objects = len(gc.get_objects())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            ask()
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(gc.get_objects()) - objects <= 10
    assert kept < 32 * 1024, kept
