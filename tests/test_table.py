"""The channel table alone: plain data, no sockets (the captures' rules, one by one)."""

from collections.abc import Iterator
from typing import Any

import pytest

from channelsd.channel import GREGORIAN_OFFSET
from channelsd.ended import EndedCalls
from channelsd.table import ChannelTable, Identity

A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"
CREATED_US = 1795847542705117


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ev(name: str, uuid: str = A, **headers: str) -> dict[str, str]:
    base = {
        "Event-Name": name,
        "Unique-ID": uuid,
        "Channel-Name": f"sofia/internal/{uuid[:4]}",
        "Call-Direction": "inbound",
        "Caller-Channel-Created-Time": str(CREATED_US),
    }
    base.update({k.replace("__", "-"): v for k, v in headers.items()})
    return base


def with_vars(name: str, uuid: str = A, **variables: str) -> dict[str, str]:
    e = ev(name, uuid)
    e["variable_uuid"] = uuid
    e.update({f"variable_{k}": v for k, v in variables.items()})
    return e


def test_first_event_creates_the_row_even_before_channel_create() -> None:
    t = ChannelTable()
    t.apply("fs1", ev("CHANNEL_STATE", **{"Channel-State": "CS_INIT"}))
    ch = t.get(A)
    assert ch is not None and ch.state == "CS_INIT"
    assert ch.timestamp == CREATED_US // 1_000_000 + GREGORIAN_OFFSET


def test_destroy_leaves_a_tombstone_so_the_trailing_cs_destroy_cannot_resurrect() -> None:
    clock = Clock()
    t = ChannelTable(tombstone_ttl=60, clock=clock)
    t.apply("fs1", with_vars("CHANNEL_CREATE", account_id="acc1"))
    t.apply("fs1", with_vars("CHANNEL_DESTROY", account_id="acc1"))
    assert t.get(A) is None
    t.apply("fs1", ev("CHANNEL_STATE", **{"Channel-State": "CS_DESTROY"}))
    t.apply("fs1", ev("CHANNEL_HANGUP_COMPLETE"))  # late, reordered
    assert t.get(A) is None and len(t) == 0 and t.by_account("acc1") == []
    assert t.hydrate("fs1", with_vars("CHANNEL_DATA")) is None  # a ghost listing row too
    clock.now += 61
    t.apply("fs1", ev("CHANNEL_STATE", **{"Channel-State": "CS_INIT"}))
    assert t.get(A) is not None  # the tombstone expired; a reused uuid is a new channel


def test_cs_destroy_alone_removes_the_channel() -> None:
    t = ChannelTable()
    t.apply("fs1", ev("CHANNEL_CREATE"))
    t.apply("fs1", ev("CHANNEL_STATE", **{"Channel-State": "CS_DESTROY"}))
    assert t.get(A) is None


def test_channel_uuid_renames_and_keeps_what_was_known() -> None:
    t = ChannelTable()
    t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1"))
    t.apply("fs1", ev("CHANNEL_UUID", uuid=A, **{"Old-Unique-ID": B}))
    assert t.get(B) is None
    ch = t.get(A)
    assert ch is not None and ch.account_id == "acc1"
    assert [c.uuid for c in t.by_account("acc1")] == [A]
    assert t.node_uuids("fs1") == {A}


def test_state_events_without_variables_do_not_erase_identity() -> None:
    t = ChannelTable()
    t.apply("fs1", with_vars("CHANNEL_CREATE", account_id="acc1", owner_id="u1", ecallmgr_Foo="x"))
    t.apply("fs1", ev("CHANNEL_STATE", **{"Channel-State": "CS_EXECUTE"}))
    t.apply("fs1", ev("CHANNEL_CALLSTATE", **{"Channel-Call-State": "ACTIVE"}))
    ch = t.get(A)
    assert ch is not None
    assert (ch.account_id, ch.owner_id, ch.ccvs) == ("acc1", "u1", {"Foo": "x"})
    assert (ch.state, ch.call_state) == ("CS_EXECUTE", "ACTIVE")


def test_kazoo_variables_win_over_plain_ones() -> None:
    t = ChannelTable()
    t.apply(
        "fs1",
        with_vars(
            "CHANNEL_CREATE",
            **{"ecallmgr_Account-ID": "kazoo-acc", "account_id": "plain-acc"},
        ),
    )
    ch = t.get(A)
    assert ch is not None and ch.account_id == "kazoo-acc"
    assert ch.ccvs == {"Account-ID": "kazoo-acc"}


def test_bridge_sets_both_legs_and_unbridge_clears_both() -> None:
    t = ChannelTable()
    t.apply("fs1", ev("CHANNEL_CREATE", uuid=A))
    t.apply("fs1", ev("CHANNEL_CREATE", uuid=B))
    bridge = {"Bridge-A-Unique-ID": A, "Bridge-B-Unique-ID": B, "Other-Leg-Unique-ID": B}
    t.apply("fs1", {**ev("CHANNEL_BRIDGE", uuid=A), **bridge})
    assert (t.get(A).other_leg, t.get(B).other_leg) == (B, A)
    t.apply("fs1", {**ev("CHANNEL_UNBRIDGE", uuid=A), **bridge})
    assert (t.get(A).other_leg, t.get(B).other_leg) == (None, None)
    # Later events of the A leg still name B in Other-Leg-*: that must not re-bridge it.
    t.apply("fs1", {**ev("CHANNEL_HANGUP", uuid=A), "Other-Leg-Unique-ID": B})
    assert t.get(A).other_leg is None


def test_answer_hold_and_unhold() -> None:
    t = ChannelTable()
    t.apply("fs1", ev("CHANNEL_CREATE", **{"Answer-State": "ringing"}))
    assert not t.get(A).answered
    t.apply("fs1", ev("CHANNEL_ANSWER"))
    t.apply("fs1", ev("CHANNEL_HANGUP", **{"Answer-State": "hangup"}))
    assert t.get(A).answered  # hanging up does not un-answer a call
    t.apply("fs1", ev("CHANNEL_HOLD"))
    assert t.get(A).is_onhold
    t.apply("fs1", ev("CHANNEL_UNHOLD"))
    assert not t.get(A).is_onhold


def test_indices_follow_identity_changes() -> None:
    t = ChannelTable(Identity(device_owners={"dev9": "user9"}))
    t.apply("fs1", with_vars("CHANNEL_CREATE", account_id="acc1", owner_id="u1"))
    t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1", authorizing_id="dev9"))
    assert [c.uuid for c in t.by_user("acc1", "u1")] == [A]
    assert [c.uuid for c in t.by_user("acc1", "user9")] == [B]
    assert [c.uuid for c in t.by_device("acc1", "dev9")] == [B]
    # The dialplan moves A to another account: the next event with variables says so.
    t.apply("fs1", with_vars("CHANNEL_PARK", account_id="acc2", owner_id="u1"))
    assert [c.uuid for c in t.by_account("acc1")] == [B]
    assert [c.uuid for c in t.by_account("acc2")] == [A]
    assert t.by_user("acc1", "u1") == []


def test_uuid_setvar_api_event_updates_identity() -> None:
    t = ChannelTable()
    t.apply("fs1", with_vars("CHANNEL_CREATE", account_id="acc1"))
    t.apply(
        "fs1",
        {
            "Event-Name": "API",
            "API-Command": "uuid_setvar",
            "API-Command-Argument": f"{A} owner_id user7",
        },
    )
    assert [c.uuid for c in t.by_user("acc1", "user7")] == [A]
    t.apply(
        "fs1",
        {
            "Event-Name": "API",
            "API-Command": "uuid_setvar_multi",
            "API-Command-Argument": f"{A} account_id=acc3;ecallmgr_Tag=blue",
        },
    )
    ch = t.get(A)
    assert ch.account_id == "acc3" and ch.ccvs == {"Tag": "blue"}
    assert [c.uuid for c in t.by_account("acc3")] == [A]


def test_caller_id_chain_and_loopback_detection() -> None:
    t = ChannelTable()
    e = with_vars("CHANNEL_CREATE", effective_caller_id_name="Eff", loopback_leg="A")
    e["Caller-Caller-ID-Name"] = "Profile"
    e["Caller-Caller-ID-Number"] = "1001"
    e["Other-Leg-Caller-ID-Number"] = "2002"
    t.apply("fs1", e)
    now = CREATED_US / 1e6 + 7.9  # created at .705 s: 7.9 s later is 8 whole seconds later
    item = t.get(A).to_item(now=now, stale=False)
    assert item["caller_id_name"] == "Eff"
    assert item["caller_id_number"] == "1001"
    assert item["callee_id_number"] == "2002"
    assert item["is_loopback"] is True
    assert item["elapsed_s"] == 8  # Kazoo's: now's whole seconds minus the timestamp's
    assert item["timestamp"] + item["elapsed_s"] == int(now) + GREGORIAN_OFFSET
    assert item["bridge_id"] == A


def test_lists_are_sorted_by_timestamp_then_uuid() -> None:
    t = ChannelTable()
    t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1"))
    later = with_vars("CHANNEL_CREATE", uuid="0" * 8, account_id="acc1")
    later["Caller-Channel-Created-Time"] = str(CREATED_US + 5_000_000)
    t.apply("fs1", later)
    t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=A, account_id="acc1"))
    assert [c.uuid for c in t.by_account("acc1")] == [A, B, "0" * 8]


def test_stale_marks_only_channels_not_heard_of_since_the_drop() -> None:
    clock = Clock()
    t = ChannelTable(clock=clock)
    t.apply("fs1", ev("CHANNEL_CREATE", uuid=A))
    clock.now += 1
    t.mark_stale("fs1")
    clock.now += 1
    t.apply("fs1", ev("CHANNEL_CREATE", uuid=B))
    assert t.is_stale(t.get(A)) and not t.is_stale(t.get(B))
    assert t.drop_stale("fs1") == 1
    assert t.get(A) is None and t.get(B) is not None


def test_nodes_are_kept_apart() -> None:
    t = ChannelTable()
    t.apply("fs1", ev("CHANNEL_CREATE", uuid=A))
    t.apply("fs2", ev("CHANNEL_CREATE", uuid=B))
    assert t.purge_node("fs1") == 1
    assert t.get(A) is None and t.get(B) is not None and t.node_uuids("fs2") == {B}


def test_a_lists_generation_moves_with_every_change_to_its_answer() -> None:
    clock = Clock()
    t = ChannelTable(clock=clock)
    t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=A, account_id="acc1"))
    t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=B, account_id="acc2"))
    acc1, acc2, everyone = t.account_scope("acc1"), t.account_scope("acc2"), t.all_scope()
    seen = (acc1.gen, acc2.gen, everyone.gen)

    t.apply("fs1", ev("CHANNEL_ANSWER", A))  # a member changes
    assert acc1.gen > seen[0] and everyone.gen > seen[2] and acc2.gen == seen[1]
    seen = (acc1.gen, acc2.gen, everyone.gen)

    t.apply("fs1", with_vars("CHANNEL_DATA", uuid=B, account_id="acc1"))  # B moves over
    assert t.account_scope("acc1") is acc1 and acc1.gen > seen[0]
    assert [c.uuid for c in t.by_account("acc1")] == [A, B] and t.by_account("acc2") == []
    seen = (acc1.gen, everyone.gen)

    t.mark_stale("fs1")  # stale is part of every item
    assert acc1.gen > seen[0] and everyone.gen > seen[1]
    seen = (acc1.gen, everyone.gen)

    t.apply("fs1", ev("CHANNEL_DESTROY", A))  # a member leaves
    assert acc1.gen > seen[0] and everyone.gen > seen[1]
    assert [c.uuid for c in t.by_account("acc1")] == [B]


def test_list_order_follows_a_creation_time_learnt_later() -> None:
    for name in ("CHANNEL_STATE", "CHANNEL_ANSWER"):  # the short path and the full one
        t = ChannelTable()
        t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=A, account_id="acc1"))
        first = with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1")
        first["Caller-Channel-Created-Time"] = "0"  # an early event that does not say yet
        t.apply("fs1", first)
        assert [c.uuid for c in t.by_account("acc1")] == [A, B]  # heard of now: after A
        earlier = ev(name, B)
        earlier["Caller-Channel-Created-Time"] = str(CREATED_US - 5_000_000)
        t.apply("fs1", earlier)
        assert [c.uuid for c in t.by_account("acc1")] == [B, A], name
        assert [c.uuid for c in t.all()] == [B, A], name


def test_a_loopback_leg_on_hold_is_off_hold_once_bridged_again() -> None:
    """FreeSWITCH cannot take a loopback leg off hold; re-bridging the pair brings the audio
    back and sends no CHANNEL_UNHOLD (freeswitch-actions-verified §4.3)."""
    t = ChannelTable()
    for uuid in (A, B):
        e = ev("CHANNEL_CREATE", uuid)
        e["Channel-Name"] = f"loopback/9000-{uuid[:1]}"
        t.apply("fs1", e)
    bridge = {"Bridge-A-Unique-ID": A, "Bridge-B-Unique-ID": B, "Other-Leg-Unique-ID": B}
    t.apply("fs1", {**ev("CHANNEL_BRIDGE", uuid=A), **bridge})
    t.apply("fs1", ev("CHANNEL_HOLD", uuid=A))
    assert t.get(A).is_onhold
    t.apply("fs1", {**ev("CHANNEL_UNBRIDGE", uuid=A), **bridge})
    t.apply("fs1", {**ev("CHANNEL_BRIDGE", uuid=A), **bridge})
    assert not t.get(A).is_onhold
    # A SIP leg's hold is the phone's: a bridge leaves it as it was.
    sip = ev("CHANNEL_CREATE", "33333333-3333-4333-8333-333333333333")
    t.apply("fs1", sip)
    t.apply("fs1", ev("CHANNEL_HOLD", uuid="33333333-3333-4333-8333-333333333333"))
    t.apply(
        "fs1",
        {
            **ev("CHANNEL_BRIDGE", uuid=A),
            "Bridge-A-Unique-ID": A,
            "Bridge-B-Unique-ID": "33333333-3333-4333-8333-333333333333",
        },
    )
    assert t.get("33333333-3333-4333-8333-333333333333").is_onhold


def test_a_field_read_from_a_custom_variable_is_the_string_the_ccvs_hold() -> None:
    """Issue #16: the ccvs dict interns the identity's variables (an owner's 50 calls share
    one owner id), and the fields read from them are the same strings, not a second copy each
    (~210 B per Kazoo channel: owner id, device id, username)."""
    t = ChannelTable()
    names = {
        "account_id": "Account-ID",
        "owner_id": "Owner-ID",
        "authorizing_id": "Authorizing-ID",
        "authorizing_type": "Authorizing-Type",
        "username": "Username",
        "realm": "Realm",
    }
    uuids = [f"{i}{A[1:]}" for i in range(1, 4)]
    for uuid in uuids:
        # each event its own string objects, as every event parsed from the wire has
        t.apply(
            "fs1",
            with_vars(
                "CHANNEL_CREATE",
                uuid,
                **{f"ecallmgr_{h}": "".join(["val-", h, "-x"]) for h in names.values()},
            ),
        )
    for uuid in uuids:
        ch = t.get(uuid)
        assert ch is not None and ch.ccvs is not None
        for attr, name in names.items():
            assert getattr(ch, attr) == ch.ccvs[name] == f"val-{name}-x"
            assert getattr(ch, attr) is ch.ccvs[name], attr


def test_a_listener_is_called_once_however_often_it_listens_and_never_once_it_unlistens() -> None:
    """listen() twice adds a callback once; unlisten() takes it off every list (changes,
    destroys, named events), also from inside a listener while the table calls them."""
    table = ChannelTable()
    calls: list[tuple[str, str]] = []

    def loud(kind: str, ch: Any, info: Any) -> None:
        calls.append(("loud", kind))

    def leaves(kind: str, ch: Any, info: Any) -> None:
        calls.append(("leaves", kind))
        table.unlisten(leaves)

    def named(kind: str, ch: Any, info: Any) -> None:
        calls.append(("named", kind))

    table.listen(loud)
    table.listen(loud)
    table.listen(leaves)
    table.listen(named, destroys_only=True, names=["CHANNEL_HOLD"])
    uuid = "00000000-0000-4000-8000-000000000001"
    table.apply("fs1", {"Event-Name": "CHANNEL_CREATE", "Unique-ID": uuid})
    assert calls == [("loud", "create"), ("leaves", "create")]
    calls.clear()
    table.apply("fs1", {"Event-Name": "CHANNEL_HOLD", "Unique-ID": uuid})
    assert calls == [("loud", "update"), ("named", "update")]
    calls.clear()
    table.unlisten(named)
    table.apply("fs1", {"Event-Name": "CHANNEL_HOLD", "Unique-ID": uuid})
    table.apply("fs1", {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uuid})
    assert calls == [("loud", "update"), ("loud", "destroy")]
    assert table._on_named == {}


def test_a_failing_listener_costs_no_other_listener_its_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener that raises is logged and passed over: the table keeps the change and the
    listeners after it are told, for every kind of change (a create, an update on the fast
    path of a state event, a bridge's peer, a named event, a destroy)."""
    table = ChannelTable()
    told: list[tuple[str, str, Any]] = []

    def broken(kind: str, ch: Any, info: Any) -> None:
        raise RuntimeError("a feed's bug")

    def after(kind: str, ch: Any, info: Any) -> None:
        told.append((kind, ch.uuid, info))

    def named(kind: str, ch: Any, info: Any) -> None:
        told.append(("named", ch.uuid, info))

    table.listen(broken, names=["CHANNEL_HOLD"])
    table.listen(after)
    table.listen(named, destroys_only=True, names=["CHANNEL_HOLD"])
    a, b = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
    for uuid in (a, b):
        table.apply("fs1", {"Event-Name": "CHANNEL_CREATE", "Unique-ID": uuid})
    table.apply(
        "fs1",
        {"Event-Name": "CHANNEL_STATE", "Unique-ID": a, "Channel-Call-State": "RINGING"},
    )
    table.apply(
        "fs1",
        {"Event-Name": "CHANNEL_BRIDGE", "Unique-ID": a, "Other-Leg-Unique-ID": b},
    )
    table.apply("fs1", {"Event-Name": "CHANNEL_HOLD", "Unique-ID": a})
    table.apply("fs1", {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": b})
    assert told == [
        ("create", a, "CHANNEL_CREATE"),
        ("create", b, "CHANNEL_CREATE"),
        ("update", a, "CHANNEL_STATE"),
        ("update", a, "CHANNEL_BRIDGE"),
        ("update", b, ("peer", "CHANNEL_BRIDGE")),
        ("update", a, "CHANNEL_HOLD"),
        ("named", a, "CHANNEL_HOLD"),
        ("destroy", b, None),
        ("named", b, None),  # a destroys-only listener hears destroys
    ]
    assert table.row("fs1", a).is_onhold and table.row("fs1", b) is None
    failures = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(failures) == 8 and all(r.exc_info for r in failures)


def test_a_new_channel_under_a_hung_up_uuid_whose_destroy_was_lost_is_a_new_row() -> None:
    """A dialplan's origination_uuid can give a new call the uuid of a call that hung up, and
    that call's DESTROY may have been lost. The new call's events folded into the old row,
    whose `ending` stayed: a reconcile's "gone" about the old call then hid the new one
    (outside attack). The old call's own late events (same creation time) still fold in."""
    t = ChannelTable()
    seen: list[tuple[str, str]] = []
    t.listen(lambda kind, ch, info: seen.append((kind, info)))
    t.apply("fs1", with_vars("CHANNEL_CREATE", account_id="acc1"))
    t.apply("fs1", ev("CHANNEL_HANGUP", **{"Hangup-Cause": "NORMAL_CLEARING"}))
    t.apply("fs1", ev("CHANNEL_EXECUTE_COMPLETE"))  # the old call's own, after its hang-up
    old = t.get(A)
    assert old is not None and old.ending is not None
    later = str(CREATED_US + 5_000_000)
    seen.clear()
    t.apply(
        "fs1",
        {**with_vars("CHANNEL_CREATE", account_id="acc2"), "Caller-Channel-Created-Time": later},
    )
    new = t.get(A)
    assert new is not None and new is not old
    assert new.ending is None and new.account_id == "acc2" and new.created_us == int(later)
    assert [kind for kind, _ in seen] == ["destroy", "create"]
    assert t.by_account("acc1") == [] and t.problems() == []
    # the new call's later events (and a hang-up of its own) are its own
    t.apply("fs1", {**ev("CHANNEL_ANSWER"), "Caller-Channel-Created-Time": later})
    assert t.get(A) is new and new.answered


def test_a_reconciles_dump_of_a_new_channel_under_a_hung_up_uuid_is_a_new_row() -> None:
    """A new channel is recognised by what a channel starts with: its CHANNEL_CREATE, which
    FreeSWITCH fires first for every session, or a reconcile's dump (after events were lost,
    the CREATE among them). Not by every event of a hung-up row: reading each one's creation
    time cost ~3 % of the ingest's instructions."""
    t = ChannelTable()
    t.apply("fs1", with_vars("CHANNEL_CREATE", account_id="acc1"))
    t.apply("fs1", ev("CHANNEL_HANGUP_COMPLETE", variable_billsec="3"))
    t.apply("fs1", ev("CHANNEL_STATE", **{"Channel-State": "CS_REPORTING"}))  # its own
    assert t.get(A).ending is not None and t.get(A).state == "CS_REPORTING"
    later = str(CREATED_US + 1)
    dump = {**with_vars("CHANNEL_DATA", account_id="acc2"), "Caller-Channel-Created-Time": later}
    new = t.hydrate("fs1", dump)
    assert new is not None and new.ending is None and new.created_us == int(later)
    assert new.account_id == "acc2" and t.by_account("acc1") == [] and t.problems() == []


# -- a uuid reused: the old call's late events against the new call (outside attack) -----------

OLD, NEW = CREATED_US, CREATED_US + 5_000_000  # the old call, and the one reusing its uuid


def of(created: int, name: str, **variables: str) -> dict[str, str]:
    e = with_vars(name, account_id="acc1", **variables)
    e["Caller-Channel-Created-Time"] = str(created)
    return e


def state(created: int, value: str) -> dict[str, str]:
    e = of(created, "CHANNEL_STATE")
    e["Channel-State"] = value
    return e


@pytest.fixture
def reuse_table() -> Iterator[tuple[ChannelTable, EndedCalls, list[Any]]]:
    clock = Clock()
    t = ChannelTable(tombstone_ttl=60, clock=clock)
    ended = EndedCalls(clock=clock)
    notes: list[Any] = []
    t.listen(lambda kind, ch, info: notes.append((kind, ch.created_us)))
    t.listen(ended.on_change, destroys_only=True)
    yield t, ended, notes
    assert t.problems() == []


def hung_up_old_call(t: ChannelTable, complete: bool = True) -> None:
    t.apply("fs1", of(OLD, "CHANNEL_CREATE"))
    t.apply("fs1", of(OLD, "CHANNEL_HANGUP", hangup_cause="NORMAL_CLEARING"))
    if complete:
        t.apply("fs1", of(OLD, "CHANNEL_HANGUP_COMPLETE", billsec="3"))


@pytest.mark.parametrize(
    "late",
    [of(OLD, "CHANNEL_DESTROY"), state(OLD, "CS_DESTROY")],
    ids=["CHANNEL_DESTROY", "CS_DESTROY"],
)
def test_the_old_calls_destroy_after_the_new_calls_events_keeps_the_new_call(
    reuse_table: Any, late: dict[str, str]
) -> None:
    """FreeSWITCH takes a session out of its uuid table before it fires its CHANNEL_DESTROY
    (switch_core_session_perform_destroy), and CS_DESTROY's state event follows it: a new call
    under the same uuid (origination_uuid) can be heard of first, without anything being
    lost. The new call's second event drops the old call's tombstone (a newer channel), and
    the old call's destroy then removes the live new call and tombstones it with the new
    call's own creation time: every later event of it, and the reconcile's uuid_dump of it,
    are refused until the tombstone expires, and the live call is recorded as ended."""
    t, ended, _ = reuse_table
    hung_up_old_call(t)
    t.apply("fs1", of(NEW, "CHANNEL_CREATE"))
    t.apply("fs1", of(NEW, "CHANNEL_ORIGINATE"))
    t.apply("fs1", late)  # the old call's, late
    ch = t.get(A)
    assert ch is not None and ch.created_us == NEW and ch.ending is None
    t.apply("fs1", of(NEW, "CHANNEL_ANSWER"))
    assert t.get(A) is not None and t.get(A).answered
    assert len(ended) == 1  # the old call only
    assert t.hydrate("fs1", of(NEW, "CHANNEL_DATA")) is not None


def test_the_old_calls_late_hangup_complete_does_not_end_the_new_call(reuse_table: Any) -> None:
    """The old call's HANGUP_COMPLETE, reordered after the new call's events (its CREATE,
    then one more: the old tombstone is gone), folds into the new live call: its ending is
    set (the old call's cause and billing seconds), which actions and a reconcile read as a
    call that hung up."""
    t, _, _ = reuse_table
    hung_up_old_call(t, complete=False)
    t.apply("fs1", of(NEW, "CHANNEL_CREATE"))
    t.apply("fs1", of(NEW, "CHANNEL_ORIGINATE"))
    t.apply("fs1", of(OLD, "CHANNEL_HANGUP_COMPLETE", billsec="3"))
    ch = t.get(A)
    assert ch is not None and ch.created_us == NEW
    assert ch.ending is None


# -- renames onto a tombstoned or hung-up uuid (outside attack, round 3) -----------------------


def _table(**kw: Any) -> tuple[ChannelTable, Clock, list[tuple[str, str]]]:
    clock = Clock()
    t = ChannelTable(tombstone_ttl=60, clock=clock, **kw)
    notices: list[tuple[str, str]] = []
    t.listen(lambda kind, ch, _info: notices.append((kind, ch.uuid)))
    return t, clock, notices


def _at(e: dict[str, str], created: int) -> dict[str, str]:
    e["Caller-Channel-Created-Time"] = str(created)
    return e


def _creates_minus_destroys(notices: list[tuple[str, str]], uuid: str) -> int:
    n = 0
    for kind, u in notices:
        if u == uuid:
            n += kind == "create"
            n -= kind == "destroy"
            assert 0 <= n <= 1, notices
    return n


def test_a_live_channel_renamed_onto_a_tombstoned_uuid_is_heard_under_it() -> None:
    # A (created later) was destroyed; B, an older live call, is renamed to A (CHANNEL_UUID).
    # The rename is done before the tombstone is asked, then the event is dropped: no "create"
    # for A, and every later event of B (created before the tombstone's channel) is dropped,
    # its DESTROY included -- the row stays until a reconcile, whose removal is a destroy
    # without a create.
    t, _clock, notices = _table()
    t.apply("fs1", _at(with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1"), OLD))
    t.apply("fs1", _at(with_vars("CHANNEL_CREATE", uuid=A, account_id="acc1"), NEW))
    t.apply("fs1", _at(with_vars("CHANNEL_DESTROY", uuid=A, account_id="acc1"), NEW))
    t.apply("fs1", _at(ev("CHANNEL_UUID", uuid=A, **{"Old-Unique-ID": B}), OLD))
    assert t.get(A) is not None and t.get(B) is None
    assert _creates_minus_destroys(notices, A) == 1  # streams were told of A
    t.apply("fs1", _at(ev("CHANNEL_ANSWER", uuid=A, **{"Answer-State": "answered"}), OLD))
    assert t.get(A).answered  # the live call's events are folded in
    # and a reconcile's dump of it refreshes it (is_tombstoned is the one rule for both)
    assert t.hydrate("fs1", _at(with_vars("CHANNEL_DATA", uuid=A, account_id="acc1"), OLD))
    t.apply("fs1", _at(ev("CHANNEL_HANGUP", uuid=A, **{"Hangup-Cause": "NORMAL_CLEARING"}), OLD))
    t.apply("fs1", _at(ev("CHANNEL_DESTROY", uuid=A), OLD))
    assert t.get(A) is None  # its DESTROY removed it
    assert _creates_minus_destroys(notices, A) == 0
    assert t.problems() == []


def test_a_rename_onto_a_hung_up_rows_uuid_is_not_ended_by_that_rows_late_destroy() -> None:
    # A1 heard its HANGUP; FreeSWITCH freed its uuid and B (a live call) was renamed to it
    # before A1's DESTROY was fired. The rename replaced A1's row without a tombstone (as "the
    # same leg heard of before the rename"), so A1's DESTROY, which nothing now drops, removes
    # the live call -- and tombstones the uuid under B's creation time: B's own later events
    # and a reconcile's hydrate of it are refused until the tombstone expires.
    t, _clock, notices = _table()
    t.apply("fs1", _at(with_vars("CHANNEL_CREATE", account_id="acc1"), OLD))
    t.apply("fs1", _at(ev("CHANNEL_HANGUP", **{"Hangup-Cause": "NORMAL_CLEARING"}), OLD))
    t.apply("fs1", _at(with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1"), NEW))
    t.apply("fs1", _at(ev("CHANNEL_UUID", uuid=A, **{"Old-Unique-ID": B}), NEW))
    t.apply("fs1", _at(ev("CHANNEL_DESTROY"), OLD))  # A1's, late
    live = t.get(A)
    assert live is not None and live.ending is None and live.created_us == NEW
    assert t.problems() == []
