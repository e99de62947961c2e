"""An ended call kept as one compact record (channelsd.endedrecord, issue #16).

The store keeps up to 10,000 calls: each was a Python object holding its item JSON (~1.4 KB)
and the channel's id strings, and cost ~3.2 KB resident. The record must give back exactly
what was packed (the answers are unchanged), find calls by their keys as the objects did (the
account from the record, the owner and device from the item), and stay small: a bound on what
one Kazoo call's record retains fails if it grows back.
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid as uuidlib

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd import endedrecord
from channelsd.channel import Channel, Ending
from channelsd.ended import KEPT, KEPT_ENDING, Ended, EndedCalls, ended_item, record_of
from channelsd.table import ChannelTable

# Any text a key may hold, lone surrogates included (kept, compared, given back as they came).
KEY_TEXT = st.text(alphabet=st.characters(codec=None), max_size=40)
KEYS = st.one_of(st.none(), KEY_TEXT)
# ... and any text JSON holds (a channel's fields come from JSON: no lone surrogates).
ITEM_KEYS = st.one_of(st.none(), st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    at=st.floats(allow_nan=False),
    account=KEYS,
    item=st.one_of(st.binary(max_size=3000), JSON_VALUES.map(orjson.dumps)),
)
def test_a_record_gives_back_what_was_packed(at: float, account: str | None, item: bytes) -> None:
    record = endedrecord.pack(at, account, item)
    assert endedrecord.at(record) == at
    assert endedrecord.account(record)[0] == account
    assert endedrecord.payload(record) == item
    if account is not None:
        assert endedrecord.of_account(record, endedrecord.encoded(account))
        assert not endedrecord.of_account(record, endedrecord.encoded(account + "x"))


def ended_channel(
    uuid: str = "u", account: str | None = None, owner: str | None = None, device: str | None = None
) -> Channel:
    """A channel that hung up, with these keys."""
    ch = Channel("fs1", uuid)
    ch.account_id, ch.owner_id, ch.authorizing_id = account, owner, device
    ch.ending = Ending()
    ch.ending.cause = "NORMAL_CLEARING"
    return ch


@settings(max_examples=100, deadline=None)
@given(at=st.floats(1e9, 4e9), account=ITEM_KEYS, owner=ITEM_KEYS, device=ITEM_KEYS)
def test_an_ended_call_is_scoped_by_the_keys_its_item_names(
    at: float, account: str | None, owner: str | None, device: str | None
) -> None:
    ch = ended_channel(account=account, owner=owner, device=device)
    call = Ended(record_of(ch, at))
    item = ended_item(ch, at)
    assert (call.account_id, call.owner_id, call.device_id) == (account, owner, device)
    assert call.as_dict() == item
    call.as_dict()["uuid"] = "changed"  # each caller has its own
    assert call.as_dict() == item


TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
# A value for each of a channel's fields (by name; any other field: text or none).
FIELD_VALUES = {
    "key": st.just(("fs1", "u")),
    "created_us": st.integers(0, 2**62),
    "last_seen": st.floats(0, 4e9),
    "answered": st.booleans(),
    "is_onhold": st.booleans(),
    "is_loopback": st.booleans(),
    "vars_seen": st.booleans(),
    "created_known": st.booleans(),
    "recordings": st.lists(TEXT, max_size=3).map(tuple),
    "details": st.none()
    | st.dictionaries(TEXT, TEXT | st.integers(0, 99999) | st.just("srtp"), max_size=5),
    "ccvs": st.none() | st.dictionaries(TEXT, TEXT, max_size=5),
    "cached": st.none() | st.binary(max_size=8),
    "ending": st.just(None),
}
ENDING_VALUES = {
    "cause": st.none() | TEXT,
    "disposition": st.none() | TEXT,
    "duration": st.none() | st.integers(0, 10**6),
    "billsec": st.none() | st.integers(0, 10**6),
    "mos": st.none() | st.floats(0, 5),
    "hangup_us": st.none() | st.integers(0, 2**62),
    "complete": st.booleans(),
}


@st.composite
def any_ended_channel(draw: st.DrawFn) -> Channel:
    ch = Channel("fs1", "u")
    for name in Channel.__slots__:
        setattr(ch, name, draw(FIELD_VALUES.get(name, st.none() | TEXT)))
    ch.ending = Ending()
    for name in Ending.__slots__:
        setattr(ch.ending, name, draw(ENDING_VALUES[name]))
    return ch


@settings(max_examples=300, deadline=None)
@given(ch=any_ended_channel(), at=st.floats(0, 4e9))
def test_an_ended_call_gives_the_item_its_channel_had(ch: Channel, at: float) -> None:
    """A record keeps the channel's fields, and the item is made when it is read: every field
    of the channel set, the item read through the record is the channel's own. A field the
    item comes to read and the record does not keep (ended.KEPT) fails here."""
    item = ended_item(ch, at)
    call = Ended(record_of(ch, at))
    assert call.as_dict() == item
    assert call.item == orjson.dumps(item)
    assert (call.account_id, call.owner_id, call.device_id) == (
        ch.account_id,
        ch.owner_id,
        ch.authorizing_id,
    )


def test_the_compression_dictionary_has_the_records_shape() -> None:
    """ZDICT is a typical record's payload: a layout change that forgets it only compresses
    worse, so the shape is held here."""
    kept, recording, ending = orjson.loads(endedrecord.ZDICT)
    assert len(kept) == len(KEPT) and recording in (True, False)
    assert len(ending) == len(KEPT_ENDING)


def test_an_ended_call_read_for_its_scope_and_its_filters_holds_no_decoded_item() -> None:
    """A listing keeps every call it answers with until the answer is written: a call that
    held its decoded item (a user's token scopes by it, a filter reads it) held two dicts of
    dozens of objects, 10,000 of them freed at once after the answer (~16 ms). Each caller's
    dict is its own, its nested objects too."""
    ch = ended_channel(account="a", owner="o", device="d")
    ch.ccvs = {"Account-ID": "a", "Owner-ID": "o"}
    call = Ended(record_of(ch, 1.0))
    item = ended_item(ch, 1.0)
    assert (call.owner_id, call.device_id) == ("o", "d")
    call.as_dict()["custom_channel_vars"]["Owner-ID"] = "changed"
    assert call.as_dict() == item
    assert not [r for r in gc.get_referents(call) if isinstance(r, dict | list)]


def test_long_keys_and_items_round_trip() -> None:
    """A switch's values are up to 2,048 characters, and an item holds many of them."""
    long = ["\U0001f600" * 2048, "o" * 2048, "\ud800" + "d" * 2047]
    item = orjson.dumps({"account_id": long[0], "owner_id": long[1], "n": list(range(5000))})
    record = endedrecord.pack(1.5, long[2], item)
    assert endedrecord.account(record)[0] == long[2]
    assert endedrecord.payload(record) == item
    assert endedrecord.of_account(record, endedrecord.encoded(long[2]))


def kazoo_call(table: ChannelTable, n: int, account: str, owner: str, device: str) -> None:
    """A Kazoo-style call (identity, ten custom channel variables, codecs) that hangs up."""
    uid = str(uuidlib.UUID(int=n + 1))
    common = {
        "Unique-ID": uid,
        "Channel-Name": f"sofia/sipinterface_1/user{n % 20}@{account[:8]}.sip.example.net",
        "Call-Direction": "inbound",
        "Channel-State": "CS_EXECUTE",
        "Answer-State": "answered",
        "Caller-Caller-ID-Name": f"User {n % 20}",
        "Caller-Caller-ID-Number": f"{1000 + n % 20}",
        "Caller-Destination-Number": f"+1415555{n % 10000:04d}",
        "Caller-Channel-Created-Time": str(1795847542705117 + n),
        "Caller-Channel-Answered-Time": str(1795847542706117 + n),
        "Channel-Read-Codec-Name": "PCMU",
        "Channel-Read-Codec-Rate": "8000",
        "Channel-Write-Codec-Name": "PCMU",
        "Channel-Write-Codec-Rate": "8000",
        "variable_presence_id": f"user{n % 20}@{account[:8]}.sip.example.net",
        "variable_ecallmgr_Account-ID": account,
        "variable_ecallmgr_Realm": f"{account[:8]}.sip.example.net",
        "variable_ecallmgr_Username": f"user{n % 20}",
        "variable_ecallmgr_Owner-ID": owner,
        "variable_ecallmgr_Authorizing-ID": device,
        "variable_ecallmgr_Authorizing-Type": "device",
        "variable_ecallmgr_Channel-Authorized": "true",
        "variable_ecallmgr_Reseller-ID": "c1c7d531aed453ee9eeba46430d825ed",
        "variable_ecallmgr_Application-Name": "callflow",
        "variable_ecallmgr_Call-Interaction-ID": f"63{n:09d}-{uid[:8]}",
    }
    table.apply("fs1", {"Event-Name": "CHANNEL_CREATE", **common})
    table.apply("fs1", {"Event-Name": "CHANNEL_ANSWER", **common})
    table.apply(
        "fs1",
        {
            "Event-Name": "CHANNEL_HANGUP_COMPLETE",
            **common,
            "Hangup-Cause": "NORMAL_CLEARING",
            "variable_sip_hangup_disposition": "recv_bye",
            "variable_duration": "61",
            "variable_billsec": "60",
        },
    )
    table.apply("fs1", {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uid})


def hex_id(label: str) -> str:
    return uuidlib.uuid5(uuidlib.NAMESPACE_DNS, label).hex


# What one Kazoo call kept costs at most, everything the store holds for it counted: the
# record (~370 B, in CPython's small-object arenas) and its place in the deque. As an object
# with its item JSON and the channel's id strings, it held ~1,600 B here.
RETAINED_PER_CALL_MAX = 512


def test_an_ended_kazoo_call_retains_a_few_hundred_bytes() -> None:
    calls = 2000
    table = ChannelTable(tombstone_ttl=0)  # the store's cost alone: no tombstones kept
    ended = EndedCalls(max_calls=calls)
    table.listen(ended.on_change, destroys_only=True)
    accounts = [hex_id(f"account{i}") for i in range(10)]

    def run() -> None:
        for n in range(calls):
            account = accounts[n % len(accounts)]
            kazoo_call(table, n, account, hex_id(f"{account}/u{n % 20}"), hex_id(f"d{n % 20}"))

    # Warm: the table's, the store's and the interpreter's tables (interned values) grow to
    # what these calls need once; the same calls again are measured.
    run()
    ended._calls.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        run()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(ended) == calls
    assert table.tombstone_count() == 0 and not table.all()
    kept = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert kept / calls <= RETAINED_PER_CALL_MAX, kept / calls
    # and each record is a small object: under CPython's 512-byte small-object limit
    assert max(len(r) for r in ended._calls) <= 512


@settings(max_examples=40, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(["acc1", "acc10", "acc", "accé", None]),
            st.sampled_from(["u1", "u11", None]),
            st.sampled_from(["d1", "d10", "d2", None]),
        ),
        max_size=25,
    ),
    account=st.sampled_from(["acc1", "acc10", "acc", "accé", None]),
    owner=st.sampled_from(["u1", "u11", None]),
    device=st.sampled_from(["d1", "d10", None]),
)
def test_select_finds_the_calls_of_a_scope_and_only_them(
    calls: list[tuple[str | None, str | None, str | None]],
    account: str | None,
    owner: str | None,
    device: str | None,
) -> None:
    """Keys compared as records hold them: `acc1` is not `acc10`'s prefix, none is none."""
    store = EndedCalls(max_calls=100, clock=lambda: 1795847600.0)
    for i, (a, o, d) in enumerate(calls):
        ch = ended_channel(str(i), account=a, owner=o, device=d)
        store._calls.append(record_of(ch, 1795847600.0))
    devices = {"d2"}
    got = [
        int(orjson.loads(c.item)["uuid"])
        for c in store.select(account, owner, devices if owner else (), device)
    ]
    want = [
        i
        for i, (a, o, d) in reversed(list(enumerate(calls)))
        if (account is None or a == account)
        and (owner is None or o == owner or d in devices)
        and (device is None or d == device)
    ]
    assert got == want
