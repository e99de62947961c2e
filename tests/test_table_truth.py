"""Table truth under races (issue #12): each defect an attack on the table and reconcile found,
reproduced over real sockets with the stand-in where a socket is involved, on the table alone
where it is not. tests/test_model.py covers the same ground with random interleavings."""

from typing import Any

import gevent
import orjson

from channelsd.standin.replay import Frame
from channelsd.table import ChannelTable

from conftest import wait_until
from tableinvariants import assert_indices_agree

ACC = {"account_id": "acc1", "owner_id": "user1", "authorizing_id": "dev1"}
U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"


def listed(h: Any, tok: str = "super") -> set[str]:
    return {i["uuid"] for i in h.api.data("/v2/channels", tok)}


def json_frame(event: dict[str, Any]) -> Frame:
    body = orjson.dumps(event)
    head = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body)
    name = event["Event-Name"]  # which subscription carries it, even when hostile
    return Frame(
        "text/event-json", name if isinstance(name, str) else "CHANNEL_CREATE", None, head + body
    )


def outage(switch: Any, h: Any) -> int:
    """Cut the daemon off its switch (nothing it sends meanwhile arrives); the reconnect count
    to wait past."""
    node = h.node()
    reconnects = node.reconnects
    switch.pause_accept(True)
    switch.drop_connections()
    wait_until(lambda: node.state == "down", what="node down")
    return reconnects


def back(switch: Any, h: Any, reconnects: int) -> None:
    node = h.node()
    switch.pause_accept(False)
    wait_until(lambda: node.reconnects > reconnects and node.state == "ready", what="back")


# -- 1. a missed listing never hides a live call ----------------------------------------------


def test_a_call_the_lagging_listing_omits_after_a_reconnect_stays_listed(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    assert listed(h) == {a, b}
    reconnects = outage(switch, h)
    switch.hide_from_listing = {a, b}  # FreeSWITCH's SQL view lags behind the live calls
    back(switch, h, reconnects)
    assert h.node().last_reconcile.listed == 0  # the listing really left them out
    assert listed(h) == {a, b}
    assert not any(i["stale"] for i in h.api.data("/v2/channels"))
    # Nothing tombstoned them: their events still count, and the next reconciles agree.
    switch.hold(a)
    wait_until(lambda: h.table.get(a).is_onhold, what="a later event applied")
    switch.hide_from_listing = set()
    h.node().reconcile()
    assert listed(h) == {a, b}


def test_a_call_that_ended_while_away_is_gone_even_when_the_listing_still_shows_it(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    c, d = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    reconnects = outage(switch, h)
    switch.hangup(a)
    back(switch, h, reconnects)
    assert listed(h) == {c, d}


# -- 2. reconcile repairs an identity it never heard ------------------------------------------


def test_reconcile_asks_about_a_channel_whose_variables_it_never_heard(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch])
    reconnects = outage(switch, h)
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)  # set up during the outage
    switch.hide_from_listing = {a, b}
    back(switch, h, reconnects)
    assert listed(h) == set()
    # One variable-less event reaches the daemon: a row without an account.
    switch.send_frames(
        [
            json_frame(
                {"Event-Name": "CHANNEL_CALLSTATE", "Unique-ID": a, "Channel-Call-State": "ACTIVE"}
            )
        ]
    )
    wait_until(lambda: h.table.get(a) is not None, what="row from the callstate")
    assert h.table.get(a).account_id is None
    switch.hide_from_listing = set()
    h.node().reconcile()
    assert h.table.get(a).account_id == "acc1"
    assert {i["uuid"] for i in h.api.data("/v2/accounts/acc1/channels", "admin1")} == {a, b}
    assert [i["uuid"] for i in h.api.data("/v2/accounts/acc1/channels", "user1")] != []
    assert h.api.get(f"/v2/accounts/acc1/channels/{a}", "admin1").status_code == 200


# -- 3. a connected node's channels never go for a failed listing -----------------------------


def test_a_failing_listing_on_a_connected_node_drops_nothing_after_the_grace(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch], sync={"stale_grace": 0.3})
    reconnects = outage(switch, h)
    switch.sql_disabled = True  # `show channels` answers -ERR from now on
    back(switch, h, reconnects)
    gevent.sleep(0.6)  # twice the grace
    assert listed(h) == {a, b}
    # Each row was asked about (uuid_dump reads the live session, not SQL): confirmed live.
    assert not any(i["stale"] for i in h.api.data("/v2/channels"))
    assert not h.node().synced  # and the failed listing is reported, not hidden


def test_a_disconnected_node_still_loses_its_channels_after_the_grace(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch], sync={"stale_grace": 0.3})
    outage(switch, h)
    wait_until(lambda: listed(h) == set(), what="dropped after the grace")


# -- 4. a rename onto an existing row ---------------------------------------------------------


def test_a_rename_onto_an_existing_row_leaves_nothing_behind_in_any_list() -> None:
    t = ChannelTable()
    t.apply(
        "fs1",
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": U1,
            "variable_uuid": U1,
            "variable_account_id": "acc2",
        },
    )
    t.apply(
        "fs1",
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": U2,
            "variable_uuid": U2,
            "variable_account_id": "acc1",
        },
    )
    t.apply("fs1", {"Event-Name": "CHANNEL_UUID", "Unique-ID": U1, "Old-Unique-ID": U2})
    assert [c.uuid for c in t.all()] == [U1]
    assert t.get(U1).account_id == "acc1"
    assert t.by_account("acc2") == [] and [c.uuid for c in t.by_account("acc1")] == [U1]
    assert_indices_agree(t)


def test_a_rename_tells_the_streams_that_the_old_uuid_is_gone() -> None:
    t = ChannelTable()
    heard: list[tuple[str, str]] = []
    t.listen(lambda kind, ch, _info: heard.append((kind, ch.uuid)))
    t.apply("fs1", {"Event-Name": "CHANNEL_CREATE", "Unique-ID": U2, "variable_uuid": U2})
    heard.clear()
    t.apply("fs1", {"Event-Name": "CHANNEL_UUID", "Unique-ID": U1, "Old-Unique-ID": U2})
    assert heard == [("destroy", U2), ("create", U1)]  # new to listeners under its new uuid


# -- 5. the same uuid on two nodes ------------------------------------------------------------


def test_the_same_uuid_on_two_nodes_survives_the_destroy_of_one(
    make_switch: Any, make_daemon: Any
) -> None:
    one, two = make_switch(), make_switch()
    vars_ = {"account_id": "acc1"}
    a1, _ = one.originate(dest="9003", variables={**vars_, "origination_uuid": U1})
    a2, _ = two.originate(dest="9003", variables={**vars_, "origination_uuid": U1})
    h = make_daemon([one, two])
    assert len([i for i in h.api.data("/v2/channels") if i["uuid"] == U1]) == 2
    one.hangup(U1)
    wait_until(lambda: h.table.row("fs1", U1) is None, what="fs1's copy destroyed")
    item = h.api.data(f"/v2/accounts/acc1/channels/{U1}", "admin1")
    assert item["node"] == "fs2"
    resp = h.api.request(
        "POST", f"/v2/accounts/acc1/channels/{U1}", "admin1", json={"data": {"action": "hangup"}}
    )
    assert resp.status_code == 200, resp.text
    wait_until(lambda: h.table.get(U1) is None, what="fs2's copy hung up by the action")
    assert_indices_agree(h.table)


# -- 6. malformed but framing-valid values ----------------------------------------------------


def test_an_object_where_an_account_belongs_is_refused_and_counted_not_half_applied() -> None:
    t = ChannelTable()
    bad = {
        "Event-Name": "CHANNEL_CREATE",
        "Unique-ID": U1,
        "variable_uuid": U1,
        "variable_account_id": {"$gt": ""},
        "variable_owner_id": "user1",
    }
    t.apply("fs1", bad)
    t.apply(
        "fs1",
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": U2,
            "variable_uuid": U2,
            "variable_account_id": ["acc1", "ignored"],
            "variable_owner_id": 7,
        },
    )
    assert t.get(U1).account_id is None and t.get(U1).owner_id == "user1"
    assert t.get(U2).account_id == "acc1" and t.get(U2).owner_id is None
    assert t.refused == {"account_id": 1, "owner_id": 1}
    assert_indices_agree(t)
    t.apply("fs1", {**bad, "Event-Name": "CHANNEL_DESTROY"})
    assert t.count("fs1") == len(t) == 1
    assert_indices_agree(t)


def test_hostile_values_over_the_socket_never_become_rows_and_are_counted(
    switch: Any, make_daemon: Any
) -> None:
    victim, _ = switch.originate(dest="9003", variables={"account_id": "acc2"})
    h = make_daemon([switch])
    frames = [
        # a Unique-ID that would append a word to any command line it reached
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": f"{victim} USER_BUSY",
            "variable_account_id": "acc1",
        },
        {"Event-Name": "CHANNEL_CREATE", "Unique-ID": {"x": 1}, "variable_account_id": "acc1"},
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": U1,
            "variable_uuid": U1,
            "variable_account_id": "a" * 5000,
            "Other-Leg-Unique-ID": "x\ny",
        },
        {"Event-Name": ["CHANNEL_CREATE"], "Unique-ID": U2},
    ]
    switch.send_frames([json_frame(f) for f in frames])
    wait_until(lambda: h.table.get(U1) is not None, what="the last sane row")
    assert h.table.get(f"{victim} USER_BUSY") is None and h.table.get(U2) is None
    row = h.table.get(U1)
    assert row.account_id is None and row.other_leg is None
    metrics = h.api.get("/metrics", tok=None).text
    assert 'channelsd_esl_values_refused_total{field="uuid"} 2.0' in metrics
    assert 'channelsd_esl_values_refused_total{field="account_id"} 1.0' in metrics
    assert h.node().reconnects == 0  # framing held: nothing to reconnect for
    assert_indices_agree(h.table)


# -- found by an outside attack on the fixes above ---------------------------------------------


def test_a_dump_answer_older_than_a_setvar_does_not_turn_the_row_back(
    switch: Any, make_daemon: Any
) -> None:
    a, _ = switch.originate(dest="9003", variables=ACC)
    h = make_daemon([switch])
    node = h.node()
    answer = switch.api.execute

    def slow_dump(command: str, arg: str) -> bytes:
        body = answer(command, arg)  # the dump is taken now ...
        if command == "uuid_dump" and arg.startswith(a):
            gevent.sleep(0.3)  # ... and read after what happens meanwhile
        return body

    switch.api.execute = slow_dump
    reconnects = node.reconnects
    before = len(switch.received)
    switch.drop_connections()  # any blip: the reconnect asks about every quiet row
    wait_until(
        lambda: any(c.startswith(f"api uuid_dump {a}") for _, c in switch.received[before:]),
        what="the reconnect's dump in flight",
    )
    switch.set_variable(a, "account_id", "acc2")  # moved to acc2: an API event only
    wait_until(lambda: node.reconnects > reconnects and node.state == "ready", what="back")
    gevent.sleep(0.4)  # the old answer has been read
    assert h.table.row("fs1", a).account_id == "acc2"
    assert h.api.get(f"/v2/accounts/acc1/channels/{a}", "admin1").status_code == 404
    node.reconcile()
    assert h.table.row("fs1", a).account_id == "acc2"


def test_a_node_that_keeps_dropping_in_its_listing_still_resolves_its_stale_rows(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.originate(dest="9003", variables=ACC)
    c, d = switch.originate(dest="9003", variables=ACC)
    h = make_daemon(
        [switch],
        sync={"stale_grace": 2, "command_timeout": 0.3, "backoff_initial": 0.05, "backoff_max": 2},
    )
    reconnects = outage(switch, h)
    switch.hangup(a)  # ends while the daemon is away
    answer = switch.api.execute

    def stuck_listing(command: str, arg: str) -> bytes:
        if command == "show":
            gevent.sleep(1.0)  # FreeSWITCH's SQL view stuck: every listing times out
        return answer(command, arg)

    switch.api.execute = stuck_listing
    switch.pause_accept(False)
    wait_until(lambda: h.node().reconnects > reconnects + 2, what="dropping in its listing")
    # The rows in doubt were asked about before the listing: the ended call is gone and the
    # live one confirmed, though no reconcile ever finished.
    wait_until(lambda: listed(h) == {c, d}, what="the ended call gone, the live one kept")
    # And the live call is not dropped by the grace: each reconnect asks about it again (it is
    # `stale` while the node is down between two attempts, as any channel of a down node).
    gevent.sleep(3)
    assert listed(h) == {c, d}


def test_a_call_reusing_a_destroyed_uuid_is_not_hidden_by_its_tombstone(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch])
    a, _ = switch.originate(dest="9003", variables={**ACC, "origination_uuid": U1})
    wait_until(lambda: U1 in listed(h), what="the first call")
    switch.hangup(U1)
    wait_until(lambda: U1 not in listed(h), what="destroyed")
    gevent.sleep(1.1)  # a retry a moment later (creation times are in microseconds)
    switch.originate(dest="9003", variables={**ACC, "origination_uuid": U1})
    wait_until(lambda: U1 in listed(h), what="the retry, with the same uuid")
    assert h.api.get(f"/v2/accounts/acc1/channels/{U1}", "admin1").status_code == 200


def test_a_late_event_of_a_destroyed_call_stays_out_whatever_its_uuid_reuse() -> None:
    t = ChannelTable()
    first = {
        "Event-Name": "CHANNEL_CREATE",
        "Unique-ID": U1,
        "variable_uuid": U1,
        "Caller-Channel-Created-Time": "1795847542705117",
    }
    t.apply("fs1", first)
    t.apply("fs1", {**first, "Event-Name": "CHANNEL_DESTROY"})
    t.apply("fs1", {**first, "Event-Name": "CHANNEL_STATE", "Channel-State": "CS_EXECUTE"})
    assert t.get(U1) is None  # the first call's own late event
    t.apply("fs1", {**first, "Caller-Channel-Created-Time": "1795847542805117"})
    assert t.get(U1) is not None  # created later: another call with the same uuid


def test_rows_heard_on_the_new_connection_survive_the_purge_of_a_restarted_switch(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch], sync={"reconcile_interval": 3600})
    node = h.node()
    reconnects = node.reconnects
    switch.reply_delay = 0.4  # the core_uuid question takes a moment
    switch.restart(keep_channels=False)
    wait_until(lambda: node.reconnects > reconnects and node.state == "syncing", what="syncing")
    wait_until(
        lambda: any(c == "api global_getvar core_uuid" for _, c in switch.received[-3:]),
        what="the core_uuid question in flight",
    )
    a, b = switch.originate(dest="9003", variables=ACC)  # a call on the new run, heard now
    switch.hide_from_listing = {a, b}  # too new for the SQL view
    wait_until(lambda: node.state == "ready", what="ready")
    switch.reply_delay = 0
    assert {a, b} <= listed(h)
