"""Liveness of the table (spec §7): reconcile on connect and on a timer, restarts, stale nodes."""

from typing import Any

import gevent

from conftest import wait_until

ACC = {"account_id": "acc1", "owner_id": "user1", "authorizing_id": "dev1"}


def listed(h: Any, tok: str = "super") -> set[str]:
    return {i["uuid"] for i in h.api.data("/v2/channels", tok)}


def _call_listed(switch: Any, make_daemon: Any) -> tuple[Any, str, str]:
    """A bridged call up, and a daemon that lists both its legs."""
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    assert listed(h) == {a, b}
    return h, a, b


def _reconcile_asking(switch: Any, h: Any, about: str | None = None) -> Any:
    """A reconcile started, its answers held back 0.3 s, once its first `uuid_dump` (or the
    one about `about`) was sent. Without `about`, every row is asked about, as after a
    reconnect; with it, what the listing omits."""
    node = h.node()
    if about is None:
        node._unverified = True
        node._subscribed_at = h.table.now() + 1
    switch.reply_delay = 0.3
    asked = len(switch.received)
    reconciling = gevent.spawn(node.reconcile)
    wanted = "api uuid_dump " + (f"{about} json" if about else "")
    wait_until(
        lambda: any(c.startswith(wanted) for _, c in switch.received[asked:]),
        what="the question sent",
    )
    return reconciling


def _dumps_say_gone(switch: Any, uuids: set[str] | None = None) -> None:
    """The switch answers "No such channel" to a uuid_dump of `uuids` (of any, if None), as
    it does for a channel already gone or, here, lies."""
    answer = switch.api.execute

    def gone(command: str, arg: str) -> bytes:
        if command == "uuid_dump" and (uuids is None or arg.split()[0] in uuids):
            return b"-ERR No such channel!\n"
        return answer(command, arg)

    switch.api.execute = gone


def test_calls_up_before_the_daemon_started_are_listed_with_identity(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b={"account_id": "acc1"})
    c, d = switch.originate(dest="9000", variables={"account_id": "acc2"})
    h = make_daemon([switch])
    assert listed(h) == {a, b, c, d}
    item = h.api.data(f"/v2/accounts/acc1/channels/{a}", "admin1")
    # show channels lacks custom variables: these came from uuid_dump
    assert (item["owner_id"], item["authorizing_id"]) == ("user1", "dev1")
    assert item["other_leg"] == b
    assert item["answered"] is True
    assert item["timestamp"] == switch.channels[a].created_us // 1_000_000 + 62167219200
    assert [c_ for c_, cmd in switch.received if cmd.startswith("api uuid_dump")] != []


def test_a_channel_that_died_while_disconnected_is_gone_after_reconnect(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    c, d = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    assert listed(h) == {a, b, c, d}
    node = h.node()
    reconnects = node.reconnects
    switch.pause_accept(True)
    switch.drop_connections()
    wait_until(lambda: node.state == "down", what="node down")
    switch.hangup(a)  # nobody hears these events
    assert all(i["stale"] for i in h.api.data("/v2/channels"))
    switch.pause_accept(False)
    wait_until(lambda: node.state == "ready" and node.reconnects > reconnects, what="reconnected")
    assert listed(h) == {c, d}
    assert not any(i["stale"] for i in h.api.data("/v2/channels"))


def test_stale_channels_go_after_the_grace_period(switch: Any, make_daemon: Any) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch], sync={"stale_grace": 0.3})
    assert listed(h) == {a, b}
    switch.pause_accept(True)
    switch.drop_connections()
    wait_until(lambda: h.node().state == "down")
    wait_until(lambda: listed(h) == set(), what="stale channels dropped")
    switch.pause_accept(False)
    wait_until(lambda: listed(h) == {a, b}, what="back after reconnect")


def test_a_new_core_uuid_purges_the_node_even_when_listing_fails(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    old_core = h.node().core_uuid
    assert listed(h) == {a, b}
    switch.sql_disabled = True
    switch.restart(keep_channels=True)  # FreeSWITCH restarted (and its SQL is off)
    wait_until(lambda: h.node().core_uuid not in (None, old_core), what="new core uuid seen")
    wait_until(lambda: h.node().state == "ready")
    # The channels may well still exist, but they belong to a switch that restarted:
    # nothing known before survives, and the failed listing did not invent anything.
    assert listed(h) == set()
    e, f = switch.bridged_call(variables_a=ACC, variables_b=ACC)  # events still flow
    wait_until(lambda: listed(h) == {e, f})


def test_an_error_reply_to_the_listing_means_unknown_not_empty(
    switch: Any, make_daemon: Any
) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    node = h.node()
    switch.sql_disabled = True
    node.request_reconcile()
    wait_until(lambda: not node.synced, what="reconcile reported unknown")
    assert listed(h) == {a, b}
    switch.sql_disabled = False
    node.request_reconcile()
    wait_until(lambda: node.synced)
    assert listed(h) == {a, b}


def test_periodic_reconcile_reaps_ghosts_of_lost_events(switch: Any, make_daemon: Any) -> None:
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    c, d = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch], sync={"reconcile_interval": 0.2})
    switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}
    switch.drop_event_fraction = 1.0
    switch.hangup(a)
    # The hangup events arrive (so the table knows it is hanging up) but never the destroy.
    wait_until(lambda: listed(h) == {c, d}, timeout=10, what="ghosts reaped")
    assert h.node().last_reconcile is not None and h.node().last_reconcile.removed >= 1


def test_reconcile_keeps_a_channel_heard_of_moments_ago(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    switch.sql_disabled = False
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    wait_until(lambda: listed(h) == {a, b})
    # A listing taken now that (like FreeSWITCH's asynchronous SQL) does not show them yet:
    switch.hide_from_listing = {a, b}
    result = h.node().reconcile()
    assert result.listed == 0  # the listing really left them out
    assert result.removed == 0 and listed(h) == {a, b}


def test_a_silent_switch_is_reconnected_and_a_heartbeating_one_is_not(
    make_switch: Any, make_daemon: Any
) -> None:
    silent = make_switch()
    beating = make_switch(heartbeat_interval=0.1)
    h = make_daemon([silent, beating], sync={"heartbeat_timeout": 0.5})
    wait_until(lambda: h.node("fs1").reconnects >= 2, what="silent node reconnected")
    assert h.node("fs2").reconnects == 0 and h.node("fs2").state == "ready"
    assert "no HEARTBEAT" in h.node("fs1").last_error


def test_a_reply_over_the_frame_limit_is_named_in_the_nodes_error(
    switch: Any, make_daemon: Any, monkeypatch: Any
) -> None:
    """A listing larger than the frame limit resets the connection; the node's down line and
    /readyz said only the node's name ('fs1'), not why (outside attack, round 3)."""
    from channelsd import esl

    h = make_daemon([switch])
    for _ in range(3):
        switch.bridged_call(variables_a=ACC, variables_b=ACC)
    wait_until(lambda: len(listed(h)) == 6)
    monkeypatch.setattr(esl, "MAX_FRAME_BYTES", 2000)  # the listing is longer than this
    node = h.node()
    reconnects = node.reconnects
    node.request_reconcile()
    wait_until(lambda: node.reconnects > reconnects, what="the reset")
    assert "Content-Length" in node.last_error, node.last_error


def test_a_core_uuid_that_is_not_a_uuid_is_not_taken_or_logged(
    make_switch: Any, make_daemon: Any, caplog: Any
) -> None:
    """`global_getvar core_uuid` answers the switch's own text; it went into log lines as it
    came (a line break forged a line) and was taken as the switch's identity."""
    sw = make_switch(core_uuid="abc\nnode=fs9 FORGED")
    h = make_daemon([sw])
    assert h.node().core_uuid is None
    assert not any("FORGED" in r.getMessage() for r in caplog.records)


def test_a_reconcile_lets_the_hub_run_between_the_answers_it_applies(
    switch: Any, make_daemon: Any, monkeypatch: Any
) -> None:
    """A batch's uuid_dump answers usually arrive together: applied without a visit to the hub,
    a node's whole reconcile ran in one go and held API requests (250 ms with 20 nodes)."""
    from channelsd import turns

    from conftest import count_pauses

    for _ in range(40):
        switch.originate(dest="9000", variables={"account_id": "acc1"})
    h = make_daemon([switch])
    monkeypatch.setattr(turns, "pace", lambda: None)  # the listing's visits not counted
    visits = count_pauses(monkeypatch, turns, "pause")
    node = h.node()
    node._unverified = True  # as after a reconnect: every row is asked about again
    node._subscribed_at = h.table.now() + 1
    result = node.reconcile()
    assert result.refreshed == 80
    assert len(visits) >= 80


def test_a_gone_answer_removes_a_row_that_heard_its_hang_up_since_the_question(
    switch: Any, make_daemon: Any
) -> None:
    """An answer older than what the row heard since is dropped, but a hung-up call does not
    come back: its HANGUP_COMPLETE arriving while the reconcile's uuid_dump was on its way,
    and its DESTROY lost, left a ghost until the next reconcile (the model test, under load)."""
    h, a, b = _call_listed(switch, make_daemon)
    switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}
    switch.drop_event_fraction = 1.0
    reconciling = _reconcile_asking(switch, h)
    switch.hangup(a)  # during the answer's delay: the answer will be "No such channel"
    wait_until(
        lambda: all(h.table.row("fs1", u).ending is not None for u in (a, b)),
        what="the hang-ups heard",
    )
    result = reconciling.get(timeout=10)
    assert result.removed == 2
    assert listed(h) == set()


def test_a_gone_answer_older_than_a_live_event_keeps_the_row(switch: Any, make_daemon: Any) -> None:
    """The converse: the row heard something other than its hang-up since the question, so a
    "No such channel" (here a lie) is older than what the row knows and is dropped."""
    h, a, b = _call_listed(switch, make_daemon)
    _dumps_say_gone(switch)
    reconciling = _reconcile_asking(switch, h)
    before = {u: h.table.row("fs1", u).last_seen for u in (a, b)}
    for u in (a, b):
        switch.set_variable(u, "account_id", "acc1")  # (heard: an identity variable)
    wait_until(
        lambda: all(h.table.row("fs1", u).last_seen > before[u] for u in (a, b)),
        what="the setvars heard",
    )
    result = reconciling.get(timeout=10)
    assert result.removed == 0
    assert listed(h) == {a, b}


# Everything a hang-up fires after CHANNEL_HANGUP (the stand-in's teardown).
AFTER_HANGUP = {
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_UNPARK",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "PRESENCE_IN",
    "RECORD_STOP",
}


def _reconcile_while_hanging_up(switch: Any, h: Any, a: str, b: str) -> Any:
    """Ask about a and b (as after a reconnect), hang the call up while the answers are on
    their way, and hold what the hang-up fires after CHANNEL_HANGUP until the reconcile is
    done: FreeSWITCH answers "No such channel" as soon as a channel is down (its read lock
    fails), while its HANGUP_COMPLETE waits for the reporting state and the event thread."""
    reconciling = _reconcile_asking(switch, h)
    with switch.events_held(AFTER_HANGUP):
        switch.hangup(a)
        wait_until(
            lambda: all(h.table.row("fs1", u).ending is not None for u in (a, b)),
            what="the hang-ups heard",
        )
        return reconciling.get(timeout=10)


def test_a_late_hangup_complete_does_not_bring_back_a_call_the_reconcile_removed(
    switch: Any, make_daemon: Any
) -> None:
    """The reconcile removes a hung-up row on "No such channel" without a tombstone, so the
    call's own HANGUP_COMPLETE, still on its way, makes it a row again: the streams hear the
    call destroyed, created anew (a hung-up call!) and destroyed again, and the ended calls
    hold it twice. With its DESTROY lost (the case the change is for) the ghost it meant to
    remove is back."""
    h, a, b = _call_listed(switch, make_daemon)
    notices: list[tuple[str, str]] = []
    h.table.listen(lambda kind, ch, _info: notices.append((kind, ch.uuid)))
    _reconcile_while_hanging_up(switch, h, a, b)
    # the held HANGUP_COMPLETE, DESTROY ... have now been sent
    wait_until(
        lambda: all(h.table.is_tombstoned("fs1", u) for u in (a, b)), what="the DESTROYs heard"
    )
    assert listed(h) == set()
    creates = [u for kind, u in notices if kind == "create"]
    destroys = [u for kind, u in notices if kind == "destroy"]
    assert creates == [], f"a hung-up call created anew: {creates}"
    assert sorted(destroys) == sorted([a, b]), f"destroyed more than once: {destroys}"
    ended = [i["uuid"] for i in h.api.data("/v2/channels?ended=true")]
    assert sorted(ended) == sorted([a, b]), f"ended calls: {ended}"


def test_a_call_tearing_down_is_left_to_its_own_events_and_ends_complete(
    switch: Any, make_daemon: Any
) -> None:
    """FreeSWITCH says "No such channel" once a channel is down, and its HANGUP_COMPLETE
    comes 20 to 80 ms after its HANGUP (the captures). Removed (and tombstoned) on that
    answer, the row's HANGUP_COMPLETE was dropped and the ended call recorded without how
    it ended (outside attack): a row tearing down is left to its own events."""
    h, a, b = _call_listed(switch, make_daemon)
    result = _reconcile_while_hanging_up(switch, h, a, b)
    assert result.removed == 0  # (the teardown's events were held until now)
    wait_until(lambda: listed(h) == set(), what="the call's own events end it")
    ended = {i["uuid"]: i for i in h.api.data("/v2/channels?ended=true")}
    assert set(ended) == {a, b}
    assert all("billing_seconds" in i for i in ended.values()), ended


def test_a_teardown_whose_last_events_were_lost_goes_at_a_later_reconcile(
    switch: Any, make_daemon: Any
) -> None:
    """The same with the DESTROY lost: the row heard its HANGUP_COMPLETE, and the next
    reconcile's "No such channel" removes it."""
    h, a, b = _call_listed(switch, make_daemon)
    switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}
    switch.drop_event_fraction = 1.0
    _reconcile_while_hanging_up(switch, h, a, b)
    wait_until(
        lambda: all(h.table.row("fs1", u).ending.complete for u in (a, b)),
        what="the HANGUP_COMPLETEs heard",
    )
    switch.reply_delay = 0.0
    assert h.node().reconcile().removed == 2
    assert listed(h) == set()


def test_a_hung_up_row_silent_past_its_teardown_goes_on_a_gone_answer(
    switch: Any, make_daemon: Any, monkeypatch: Any
) -> None:
    """Its HANGUP heard, everything after it lost: once longer than a teardown takes has
    passed, "No such channel" removes it (tombstoned: a late event does not bring it back)."""
    from channelsd import node as node_module

    h, a, b = _call_listed(switch, make_daemon)
    switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}  # lost, as said
    switch.drop_event_fraction = 1.0
    with switch.events_held(AFTER_HANGUP):
        switch.hangup(a)
        wait_until(
            lambda: all(h.table.row("fs1", u).ending is not None for u in (a, b)),
            what="the hang-ups heard",
        )
        assert h.node().reconcile().removed == 0  # tearing down
        monkeypatch.setattr(node_module, "TEARDOWN", 0.0)
        assert h.node().reconcile().removed == 2
        assert listed(h) == set()
    # What was held (its DESTROY lost) is sent now, before a later call's events on the same
    # connection: once that call is listed, the held ones were applied, and brought nothing
    # back (without the tombstone, its HANGUP_COMPLETE made the row again, for good).
    switch.drop_event_fraction = 0.0
    c, d = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    wait_until(lambda: {c, d} <= listed(h), what="a later call heard")
    assert listed(h) == {c, d}


def test_a_gone_answer_does_not_hide_a_new_call_that_reuses_a_hung_up_uuid(
    switch: Any, make_daemon: Any
) -> None:
    """A uuid is reused (a dialplan's origination_uuid on a sofia leg: CHANNEL_CREATE under
    that uuid, no CHANNEL_UUID) after its first call hung up and that call's DESTROY was
    lost. The new call's events fold into the old row, whose `ending` stays set: a reconcile
    that asked before the new call existed ("No such channel", true when answered) now
    removes the live call, since the row "heard its hang-up"."""
    h, a, b = _call_listed(switch, make_daemon)
    switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}
    switch.drop_event_fraction = 1.0
    switch.hangup(a)
    wait_until(
        lambda: all(
            (r := h.table.row("fs1", u)) is not None and r.ending is not None and r.ending.complete
            for u in (a, b)
        ),
        what="the hang-ups heard (their DESTROYs lost)",
    )
    switch.drop_event_fraction = 0.0
    # The switch answers what was true when the question reached it: a was gone then.
    gone_then = {a}
    _dumps_say_gone(switch, gone_then)
    reconciling = _reconcile_asking(switch, h, about=a)
    # Now a new call is created under the same uuid (FreeSWITCH lets it: the old session is
    # gone from its hash).
    model = switch.model
    new_channel = model._new_channel
    reused = [a]

    def with_reused_uuid(name: str, direction: str, uid: str | None = None) -> Any:
        return new_channel(name, direction, uid or (reused.pop() if reused else None))

    model._new_channel = with_reused_uuid
    a2, b2 = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    model._new_channel = new_channel
    assert a2 == a
    wait_until(lambda: {a, b2} <= listed(h), what="the new call heard")
    reconciling.get(timeout=10)
    gone_then.clear()
    assert a in switch.channels  # the call is up
    assert {a, b2} <= listed(h), "a live call hidden by the reconcile"
