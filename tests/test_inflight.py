"""A state check right after a command channelsd itself sent (the next module of a metaflow, or
the next request) never passes on a table the switch's events have not caught up with
(channelsd.inflight): end to end on the stand-in, with the events held back where the race
must be certain, and the registry itself with a clock of its own.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_conformance import MOH, POLICY, UNPLAYABLE_MOH, Bed, consulting, ok, refused

from channelsd.config import ConfigError, parse
from channelsd.inflight import SWEEP_ABOVE, Inflight
from channelsd.table import ChannelTable

from conftest import wait_until


@pytest.fixture
def bed(switch: Any, make_daemon: Any) -> Bed:
    # a short chain_wait: a metaflow whose events never come refuses soon
    return Bed(make_daemon([switch], actions={**POLICY, "chain_wait": 0.3}), switch)


def chain(*modules: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A metaflow whose `_` children run the modules in order."""
    flow: dict[str, Any] | None = None
    for module, data in reversed(modules):
        node: dict[str, Any] = {"module": module, "data": data}
        if flow is not None:
            node["children"] = {"_": flow}
        flow = node
    return {"action": "metaflow", "data": flow}


def put_chain(bed: Bed, uuid: str, *modules: tuple[str, dict[str, Any]]) -> Any:
    bed.mark = len(bed.sw.received)
    return bed.h.api.request(
        "PUT", f"/v2/accounts/acc1/channels/{uuid}", "admin1", json=chain(*modules)
    )


def kills(bed: Bed) -> list[str]:
    return [c for c in bed.sent() if c.startswith("api uuid_kill")]


ATTENDED_TO_A_RINGING_TARGET = {"target": "9004", "transfer_type": "attended", "moh": MOH}


# -- attended transfer: the transferor while its target rings (§2.5, everybody lost) -----------


def test_a_metaflow_cannot_hang_up_the_transferor_its_transfer_set_ringing(bed: Bed) -> None:
    """The attack: one PUT, transfer then hangup. Before, the hangup's check read the table
    before RING_WAIT arrived: 201, and the target and the transferee were lost."""
    c = bed.std()
    resp = put_chain(bed, c.a2, ("transfer", ATTENDED_TO_A_RINGING_TARGET), ("hangup", {}))
    detail = refused(resp, 409, "call_state")
    assert resp.json()["path"] == "children._"
    assert "rings" in detail["state"]["message"]
    assert kills(bed) == []
    t = consulting(bed, c.a2, "9004")
    assert bed.fates(a2=c.a2, b=c.b, t=t) == dict.fromkeys(("a2", "b", "t"), "up")


def test_the_next_request_before_the_events_arrive_is_refused(bed: Bed) -> None:
    c = bed.std()
    with bed.sw.events_held():  # the switch did it; its events are still on their way
        ok(bed.attended(c.a2, target="9004", moh=MOH))
        assert bed.row(c.a2)["call_state"] == "ACTIVE"  # what the table still says
        detail = refused(bed.post(c.a2, action="hangup"), 409, "call_state")
        assert "just started an attended transfer" in detail["state"]["message"]
        assert kills(bed) == []
    wait_until(lambda: bed.row(c.a2)["call_state"] == "RING_WAIT", what="RING_WAIT")
    refused(bed.post(c.a2, action="hangup"), 409, "call_state")  # the table's own guard now
    t = consulting(bed, c.a2, "9004")
    assert bed.fates(a2=c.a2, b=c.b, t=t) == dict.fromkeys(("a2", "b", "t"), "up")


def test_an_att_xfer_that_starts_late_is_guarded_meanwhile(bed: Bed) -> None:
    """§2.3: with hold music the switch cannot play, att_xfer started seconds late; all that
    time the table shows the transferor ACTIVE, with its partner."""
    bed.sw.model.attxfer_late_start = 1.0
    c = bed.std()
    ok(bed.attended(c.a2, target="9004", moh=UNPLAYABLE_MOH))
    assert bed.legs[c.a2].app != "att_xfer"  # not started yet
    refused(bed.post(c.a2, action="hangup"), 409, "call_state")
    assert kills(bed) == []
    t = consulting(bed, c.a2, "9004")
    wait_until(lambda: bed.row(c.a2)["call_state"] == "RING_WAIT", what="RING_WAIT")
    assert bed.fates(a2=c.a2, b=c.b, t=t) == dict.fromkeys(("a2", "b", "t"), "up")


def test_an_att_xfer_whose_target_fails_at_once_is_over_when_the_target_is_gone(
    bed: Bed,
) -> None:
    """A target with no route never rings: the transferor's call never moves on (no
    RING_WAIT), and att_xfer ends with the target's leg. That ends what channelsd waited for,
    long before settle_timeout (15 s)."""
    c = bed.std()
    ok(bed.attended(c.a2, target="9999", moh=MOH))
    inflight = bed.h.daemon.ctx.actions.inflight
    wait_until(lambda: not inflight.find("fs1", c.a2), what="the failed target noticed")
    assert bed.row(c.a2)["call_state"] == "ACTIVE"  # nothing ever said RING_WAIT
    ok(bed.post(c.a2, action="hangup"))
    assert bed.fate(c.b) == "NORMAL_CLEARING"  # an ordinary hang-up of a bridged call


def test_a_second_attended_transfer_waits_for_the_first(bed: Bed) -> None:
    c = bed.std()
    with bed.sw.events_held():
        ok(bed.attended(c.a2, target="9004", moh=MOH))
        refused(bed.attended(c.a2, target="2000", moh=MOH), 409, "other_leg_call_id")
        # from the other side too: the transferee's partner is the busy transferor
        refused(bed.attended(c.b, target="2000", moh=MOH, leg="bleg"), 409, "other_leg_call_id")
        assert bed.sent() == []


def test_once_the_target_answers_the_transferor_may_hang_up(bed: Bed) -> None:
    c = bed.std()
    resp = put_chain(bed, c.a2, ("transfer", {**ATTENDED_TO_A_RINGING_TARGET, "target": "2000"}))
    ok(resp, 201)
    t = consulting(bed, c.a2)
    wait_until(lambda: bed.row(c.a2).get("other_leg") == t, what="consulting")
    ok(bed.post(c.a2, action="hangup"))  # completes the transfer
    assert (t, c.b) in bed.bridged_pairs()


# -- blind transfers, hang-ups, holds, bridges ------------------------------------------------


def test_a_bleg_transfer_right_after_a_blind_transfer_is_refused(bed: Bed) -> None:
    """§1.5: -bleg on a leg that has no partner any more transfers the named leg itself. The
    first transfer took A' out of its bridge; the table says so only once UNBRIDGE arrives."""
    c = bed.std()
    with bed.sw.events_held():
        ok(bed.post(c.a2, action="transfer", target="9003"))
        refused(
            bed.post(c.a2, action="transfer", target="9005", leg="bleg"), 409, "other_leg_call_id"
        )
        assert bed.sent() == []
    wait_until(lambda: bed.row(c.a2).get("other_leg") is None, what="the unbridge")
    # now the table knows: not bridged (400, as for any unbridged channel)
    refused(bed.post(c.a2, action="transfer", target="9005", leg="bleg"), 400, "other_leg_call_id")
    assert bed.legs[c.a2].variables.get("destination_number", "9003") != "9005"


def test_a_channel_channelsd_just_hung_up_gets_no_command_that_would_lie(bed: Bed) -> None:
    """uuid_hold answers +OK Success for a channel that is gone, and an intercept's job +OK
    (§4.1, §3.3): never sent for one channelsd has just hung up."""
    p, _ = bed.parked()
    with bed.sw.events_held():
        ok(bed.post(p, action="hangup"))
        resp = bed.put(p, "hold_control", action="hold")
        assert resp.status_code == 404 and resp.json()["message"] == "the channel has hung up"
        assert bed.intercept(p).status_code == 404
        assert bed.sent() == []
    assert bed.fate(p) == "NORMAL_CLEARING"


def test_a_metaflow_that_hangs_up_then_holds_sends_no_hold(bed: Bed) -> None:
    p, _ = bed.parked()
    resp = put_chain(bed, p, ("hangup", {}), ("hold_control", {"action": "hold"}))
    assert resp.status_code == 404 and resp.json()["path"] == "children._"
    assert [c.split()[1] for c in bed.sent()] == ["uuid_kill"]


def test_a_loopback_hold_counts_before_its_event_arrives(bed: Bed) -> None:
    """§4.3: a held loopback leg cannot be taken off hold, and toggle holds it again."""
    c = bed.std()
    with bed.sw.events_held():
        ok(bed.put(c.a2, "hold_control", action="hold"), 201)
        assert not bed.row(c.a2)["is_onhold"]  # what the table still says
        refused(bed.put(c.a2, "hold_control", action="toggle"), 409, "action")
        refused(bed.put(c.a2, "hold_control", action="unhold"), 409, "action")
        assert bed.sent() == []
    # and within one metaflow
    d = bed.std()
    resp = put_chain(bed, d.a2, ("hold_control", {"action": "hold"}), ("hold_control", {}))
    refused(resp, 409, "action")
    assert resp.json()["path"] == "children._"
    assert bed.sent() == [f"api uuid_hold {d.a2}"]


def test_a_metaflow_waits_for_its_own_events_between_modules(bed: Bed) -> None:
    """SIP hold then toggle in one metaflow: the toggle is checked once CHANNEL_HOLD is in,
    and takes the leg off hold, as two requests would."""
    s, _ = bed.sip()
    resp = put_chain(bed, s, ("hold_control", {"action": "hold"}), ("hold_control", {}))
    ok(resp, 201)
    assert bed.sent() == [f"api uuid_hold {s}", f"api uuid_hold toggle {s}"]
    wait_until(lambda: bed.row(s)["call_state"] == "ACTIVE", what="off hold again")


def test_a_second_pickup_of_a_call_being_picked_up_is_refused(bed: Bed) -> None:
    """Two operators pick up the same parked call. The first interceptor answered (its job
    said +OK) and is being bridged; until CHANNEL_BRIDGE arrives the table shows the call
    unbridged, and the second intercept (unbridged_only) would get "initiated" while the
    switch only hangs its interceptor up (§3.3 c)."""
    p, _ = bed.parked()
    with bed.sw.events_held(["CHANNEL_BRIDGE"]):
        ok(bed.intercept(p))
        first = bed.sent()
        detail = refused(bed.intercept(p), 409, "other_leg_call_id")
        assert "intercept" in detail["state"]["message"] and bed.sent() == []
    i = bed.interceptor()
    assert first[0].endswith(f"&intercept({p})") and bed.legs[i].bridge_peer == p
    wait_until(lambda: bed.row(p).get("other_leg") == i, what="the pickup reported")
    refused(bed.intercept(p), 400, "other_leg_call_id")  # bridged now: unbridged_only refuses


def test_a_resume_is_pending_until_its_bridge_is_reported(bed: Bed) -> None:
    c = bed.std()
    inflight = bed.h.daemon.ctx.actions.inflight
    with bed.sw.events_held():
        ok(bed.put(c.a2, "resume"), 201)
        assert [p.kind for p in inflight.find("fs1", c.b)] == ["bridge"]
        # who is bridged to whom is being changed by channelsd: checks that read it wait
        refused(bed.put(c.a2, "play", id="/srv/a.wav", leg="peer"), 409, "other_leg_call_id")
    wait_until(lambda: not inflight.find("fs1", c.a2), what="the bridge reported")
    ok(bed.put(c.a2, "play", id="/srv/a.wav", leg="peer"), 201)


def test_nothing_is_kept_once_the_calls_end(bed: Bed) -> None:
    c = bed.std()
    ok(bed.attended(c.a2, target="9004", moh=MOH))
    ok(bed.put(c.b, "hold_control", action="hold"), 201)
    ok(bed.put(c.b, "record_call", action="start"), 201)
    for uuid in (c.a, c.b):
        if bed.up(uuid):
            bed.sw.hangup(uuid)
    bed.synced()
    wait_until(lambda: len(bed.h.daemon.ctx.actions.inflight) == 0, what="nothing pending")


# -- the registry --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def row(table: ChannelTable, uuid: str, **headers: str) -> Any:
    table.apply("fs1", {"Event-Name": "CHANNEL_CREATE", "Unique-ID": uuid, **headers})
    return table.get(uuid)


def test_an_event_it_names_settles_a_pending() -> None:
    table, clock = ChannelTable(), Clock()
    inflight = Inflight(table, clock)
    row(table, "u1")
    p = inflight.add("hold", "fs1", ["u1"], ["CHANNEL_HOLD"], 15, value=True)
    assert inflight.find("fs1", "u1", "hold") == [p]
    table.apply("fs1", {"Event-Name": "CHANNEL_UNPARK", "Unique-ID": "u1"})  # not named
    assert inflight.find("fs1", "u1") == [p]
    table.apply("fs1", {"Event-Name": "CHANNEL_HOLD", "Unique-ID": "u1"})
    assert inflight.find("fs1", "u1") == [] and p.done.is_set() and len(inflight) == 0


def test_a_row_that_shows_the_effect_settles_a_pending() -> None:
    table, clock = ChannelTable(), Clock()
    inflight = Inflight(table, clock)
    ch = row(table, "u1", **{"Channel-Call-State": "ACTIVE"})
    p = inflight.add("att_xfer", "fs1", ["u1"], [], 15, reached=lambda: ch.call_state != "ACTIVE")
    assert inflight.find("fs1", "u1") == [p]
    # CHANNEL_CALLSTATE takes the table's short path, which tells no listener: read the row
    table.apply(
        "fs1",
        {"Event-Name": "CHANNEL_CALLSTATE", "Unique-ID": "u1", "Channel-Call-State": "RING_WAIT"},
    )
    assert inflight.find("fs1", "u1") == [] and len(inflight) == 0


def test_a_pending_expires_and_a_destroy_drops_all() -> None:
    table, clock = ChannelTable(), Clock()
    inflight = Inflight(table, clock)
    row(table, "u1")
    row(table, "u2")
    inflight.add("kill", "fs1", ["u1"], ["CHANNEL_HANGUP"], 15)
    both = inflight.add("transfer", "fs1", ["u1", "u2"], ["CHANNEL_UNBRIDGE"], 15)
    clock.now += 14.9
    assert len(inflight.find("fs1", "u1")) == 2
    clock.now += 0.2
    assert inflight.find("fs1", "u1") == []  # expired: the switch never said
    inflight.add("hold", "fs1", ["u2"], ["CHANNEL_HOLD"], 15)
    table.apply("fs1", {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": "u2"})
    assert both.done.is_set() and inflight.find("fs1", "u2") == []


def test_a_newer_command_replaces_the_pending_of_an_older_one() -> None:
    table, clock = ChannelTable(), Clock()
    inflight = Inflight(table, clock)
    row(table, "u1")
    old = inflight.add("hold", "fs1", ["u1"], ["CHANNEL_HOLD"], 15, value=True)
    new = inflight.add("hold", "fs1", ["u1"], ["CHANNEL_HOLD"], 15, value=False)
    a = inflight.add("record_start", "fs1", ["u1"], ["RECORD_START"], 15, tag="/r/a.wav")
    b = inflight.add("record_start", "fs1", ["u1"], ["RECORD_START"], 15, tag="/r/b.wav")
    assert old.done.is_set() and inflight.find("fs1", "u1") == [new, a, b]


def test_wait_returns_when_settled_or_at_its_bound() -> None:
    table = ChannelTable()
    inflight = Inflight(table)
    ch = row(table, "u1")
    p = inflight.add("hold", "fs1", ["u1"], ["CHANNEL_HOLD"], 15)
    assert not inflight.wait([p], 0.05)  # never settled: False after the bound
    q = inflight.add("att_xfer", "fs1", ["u1"], [], 15, reached=lambda: ch.answered)
    ch.answered = True
    assert inflight.wait([q], 5) and inflight.wait([], 5)


KINDS = ("hold", "kill", "transfer", "record_start")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(("add", "add", "add", "tick", "destroy")),
            st.integers(0, 2 * SWEEP_ABOVE),
            st.sampled_from(KINDS),
            st.integers(0, 3),
        ),
        max_size=400,
    )
)
def test_the_registry_stays_bounded(ops: list[tuple[str, int, str, int]]) -> None:
    """Whatever is added: at most one Pending per channel, kind and tag, none outlives its
    channel, and expired ones do not pile up."""
    table, clock = ChannelTable(), Clock()
    inflight = Inflight(table, clock)
    alive: set[str] = set()
    generation: dict[int, int] = {}  # a destroyed uuid is never created again (tombstones)
    for op, n, kind, tag in ops:
        uuid = f"u{n}-{generation.get(n, 0)}"
        if op == "add":
            if uuid not in alive:
                row(table, uuid)
                alive.add(uuid)
            inflight.add(kind, "fs1", [uuid], ["CHANNEL_HOLD"], 15, tag=tag)
        elif op == "tick":
            clock.now += 20
        elif uuid in alive:
            table.apply("fs1", {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uuid})
            alive.discard(uuid)
            generation[n] = generation.get(n, 0) + 1
        assert len(inflight) <= len(alive) * len(KINDS) * 4
        assert len(inflight._by_key) <= max(SWEEP_ABOVE, len(alive))
    for uuid in alive:
        table.apply("fs1", {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uuid})
    assert len(inflight) == 0


@pytest.mark.parametrize("key", ["job_wait", "settle_timeout", "chain_wait"])
@pytest.mark.parametrize("value", [-1, 601, True, "2"])
def test_the_waits_are_checked_at_start(key: str, value: Any) -> None:
    data = {
        "nodes": [{"name": "fs1", "host": "127.0.0.1", "password": "x"}],
        "actions": {key: value},
    }
    with pytest.raises(ConfigError, match=key):
        parse(data, "test.toml")


def test_a_late_event_of_an_earlier_hold_does_not_settle_the_unhold_after_it(bed: Bed) -> None:
    """hold then unhold at once: the switch's CHANNEL_HOLD of the first arrives after the
    second was sent. It settled the unhold's Pending, and the table then said held while the
    switch had the call off hold."""
    s, _ = bed.sip()
    with bed.sw.events_held():
        ok(bed.put(s, "hold_control", action="hold"), 201)
        ok(bed.put(s, "hold_control", action="unhold"), 201)
        h = bed.h
        h.table.apply("fs1", {"Event-Name": "CHANNEL_HOLD", "Unique-ID": s})  # the late one
        pending = h.daemon.ctx.actions.inflight.find("fs1", s, "hold")
        assert pending and pending[-1].value is False
