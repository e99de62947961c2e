"""Faults survived, counted: restarts, drops at every point, lost events, garbage, slow clients,
a node down. Driven through the stand-in's misbehaviour controls over real sockets.

Seeded and bounded for the normal test run; RELIABILITY_SCALE=10 (or more) makes it a soak.
"""

import os
import random
import socket
import time
from typing import Any

import gevent
import pytest

from channelsd.standin.replay import Frame

from conftest import Harness, token, wait_until

SCALE = int(os.environ.get("RELIABILITY_SCALE", "1"))
SYNC = {"backoff_initial": 0.05, "backoff_max": 0.2, "stale_grace": 30}
CONVERGE = SYNC["backoff_max"] + 1.0 + 2.0  # backoff + 1 s, plus slack for a loaded CI box


def live(switch: Any) -> set[str]:
    return {u for u, ch in switch.channels.items() if not getattr(ch, "destroyed", False)}


def table_uuids(h: Harness, node: str = "fs1") -> set[str]:
    return h.table.node_uuids(node)


def converge(h: Harness, switch: Any, what: str, node: str = "fs1") -> float:
    """Wait until the daemon, connected to this very switch (same Core-UUID), holds exactly
    the switch's channels; seconds taken."""
    began = time.monotonic()
    link = h.node(node)
    try:
        wait_until(
            lambda: (
                link.state == "ready"
                and link.core_uuid == switch.core_uuid
                and table_uuids(h, node) == live(switch)
            ),
            timeout=CONVERGE,
            what=what,
        )
    except AssertionError:
        ghosts = table_uuids(h, node) - live(switch)
        missing = live(switch) - table_uuids(h, node)
        raise AssertionError(f"{what}: {len(ghosts)} ghosts, {len(missing)} missing") from None
    return time.monotonic() - began


def calls(switch: Any, n: int, account: str = "acc1") -> list[str]:
    made = []
    for _ in range(n):
        a, b = switch.bridged_call(
            variables_a={"account_id": account}, variables_b={"account_id": account}
        )
        made += [a, b]
    return made


def frame(name: str, raw: bytes) -> Frame:
    return Frame("text/event-json", name, None, raw)


def json_frame(body: bytes, name: str = "CHANNEL_CREATE") -> Frame:
    head = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body)
    return frame(name, head + body)


def test_freeswitch_restarts_while_calls_come_and_go(
    switch: Any, make_daemon: Any, figure: Any
) -> None:
    rng = random.Random(1)
    h = make_daemon([switch], sync=SYNC)
    restarts = 50 * SCALE
    worst = 0.0
    for i in range(restarts):
        calls(switch, rng.randint(0, 3))
        for uuid in rng.sample(sorted(live(switch)), k=min(len(live(switch)), rng.randint(0, 2))):
            if uuid in switch.channels:
                switch.hangup(uuid)
        switch.restart(keep_channels=rng.random() < 0.3)
        calls(switch, rng.randint(0, 2))  # a new life, new calls, before channelsd is back
        worst = max(worst, converge(h, switch, f"restart {i}"))
    figure(
        "freeswitch restarts",
        cases=restarts,
        held=restarts,
        ghosts=0,
        missing=0,
        worst_convergence_s=round(worst, 3),
    )


@pytest.mark.parametrize("where", ["mid-frame", "between header and body", "during reconcile"])
def test_socket_dropped_at_any_point(
    where: str, switch: Any, make_daemon: Any, figure: Any
) -> None:
    rng = random.Random(where)
    h = make_daemon([switch], sync=SYNC)
    cases = 10 * SCALE
    for i in range(cases):
        calls(switch, rng.randint(1, 3))
        converge(h, switch, f"{where} {i}: before")
        reconnects = h.node().reconnects
        if where == "during reconcile":
            switch.drop_connections()
            switch.reply_delay = 0.3  # the reconcile's listing is now in flight for a while
            wait_until(
                lambda: any(c == "api show channels as json" for _, c in switch.received[-5:])
            )
            switch.drop_connections()
            switch.reply_delay = 0.0
        else:
            body = b'{"Event-Name":"CHANNEL_CREATE","Unique-ID":"x","variable_account_id":"acc1"}'
            head = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % (len(body) + 500)
            partial = (
                head
                if where == "between header and body"
                else head + body[: rng.randint(1, len(body))]
            )
            switch.send_frames([frame("CHANNEL_CREATE", partial)])
            gevent.sleep(0.05)
            switch.drop_connections()
        for uuid in rng.sample(sorted(live(switch)), k=1):
            switch.hangup(uuid)  # lost while channelsd is away
        wait_until(lambda r=reconnects: h.node().reconnects > r, what="reconnected")
        converge(h, switch, f"{where} {i}: after")
        assert h.table.get("x") is None  # the half frame never became a channel
    figure(f"socket dropped {where}", cases=cases, held=cases, ghosts=0, missing=0)


def test_lost_destroys_are_reaped_by_the_heartbeat_drift_check(
    make_switch: Any, make_daemon: Any, figure: Any
) -> None:
    switch = make_switch(heartbeat_interval=0.2)
    h = make_daemon([switch], sync={**SYNC, "reconcile_interval": 3600})
    made = calls(switch, 10)
    converge(h, switch, "calls up")
    switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}
    switch.drop_event_fraction = 0.5
    for uuid in made[::2]:
        if uuid in live(switch):
            switch.hangup(uuid)
    lost = switch.events_dropped
    assert lost > 0
    # No periodic reconcile for an hour: only the Session-Count drift can find the ghosts.
    wait_until(lambda: table_uuids(h) == live(switch), timeout=15, what="ghosts reaped")
    figure("events lost (DESTROY dropped)", cases=1, held=1, events_dropped=lost, ghosts_left=0)


GARBAGE = {
    "not json": b"this is not json",
    # parsed (a caller's bytes become U+FFFD), then refused: "\ufffd\ufffd" is no uuid
    "invalid utf-8": b'{"Event-Name":"CHANNEL_CREATE","Unique-ID":"\xff\xfe"}',
    "json array": b"[1,2,3]",
    "unknown event": b'{"Event-Name":"NO_SUCH_EVENT","Unique-ID":"nope"}',
}


def test_garbage_that_keeps_framing_is_dropped_and_counted(
    switch: Any, make_daemon: Any, figure: Any
) -> None:
    h = make_daemon([switch], sync=SYNC)
    reconnects = h.node().reconnects
    for name, body in GARBAGE.items():
        switch.send_frames([json_frame(body)])
        calls(switch, 1)  # and the stream goes on
        converge(h, switch, f"after {name}")
    # Duplicate keys (FreeSWITCH repeats Hangup-Cause, codec headers): the last one counts.
    uuid = sorted(live(switch))[0]
    dup = (
        b'{"Event-Name":"CHANNEL_CALLSTATE","Unique-ID":"%s",'
        b'"Channel-Call-State":"ACTIVE","Channel-Call-State":"HELD"}' % uuid.encode()
    )
    switch.send_frames([json_frame(dup, "CHANNEL_CALLSTATE")])
    wait_until(lambda: h.table.get(uuid).call_state == "HELD", what="duplicate key applied")
    assert h.node().reconnects == reconnects  # framing held: no reason to reconnect
    metrics = h.api.get("/metrics", tok=None).text
    assert 'channelsd_esl_event_parse_errors_total{node="fs1"} 2.0' in metrics
    assert h.table.get("nope") is None
    cases = len(GARBAGE) + 1
    figure("garbage with framing intact", cases=cases, held=cases, reconnects=0)


FRAMING_GARBAGE = {
    "huge Content-Length": b"Content-Length: 99999999999\nContent-Type: text/event-json\n\n{}",
    "no Content-Length": b"Content-Type: text/event-json\n\n{}",
    "Content-Length not a number": b"Content-Length: ten\nContent-Type: text/event-json\n\n{}",
    "invalid utf-8 in headers": b"Content-Length: 2\nContent-Type: text/ev\xffent-json\n\n{}",
    "unsolicited reply": b"Content-Type: api/response\nContent-Length: 4\n\n+OK\n",
}


@pytest.mark.parametrize("name", list(FRAMING_GARBAGE))
def test_lost_framing_resets_and_resyncs(
    name: str, switch: Any, make_daemon: Any, figure: Any
) -> None:
    h = make_daemon([switch], sync=SYNC)
    calls(switch, 2)
    converge(h, switch, "before")
    reconnects = h.node().reconnects
    switch.send_frames([frame("CHANNEL_CREATE", FRAMING_GARBAGE[name])])
    wait_until(lambda: h.node().reconnects > reconnects, what="connection reset")
    calls(switch, 1)
    converge(h, switch, "resynced")
    figure("garbage that breaks framing", cases=1, held=1)


def test_out_of_order_and_unknown_uuid_events(switch: Any, make_daemon: Any, figure: Any) -> None:
    h = make_daemon([switch], sync={**SYNC, "reconcile_interval": 0.3})
    dead = b'{"Event-Name":"CHANNEL_DESTROY","Unique-ID":"late-1","variable_account_id":"acc1"}'
    late = b'{"Event-Name":"CHANNEL_CREATE","Unique-ID":"late-1","variable_account_id":"acc1"}'
    switch.send_frames([json_frame(dead, "CHANNEL_DESTROY"), json_frame(late)])
    stray = b'{"Event-Name":"CHANNEL_HANGUP","Unique-ID":"stray-1","variable_account_id":"acc1"}'
    switch.send_frames([json_frame(stray, "CHANNEL_HANGUP")])
    gevent.sleep(0.1)
    assert h.table.get("late-1") is None  # a tombstone: destroyed stays destroyed
    # FreeSWITCH never had stray-1: the periodic reconcile reaps it once it settles.
    wait_until(lambda: h.table.get("stray-1") is None, timeout=10, what="stray reaped")
    figure("out-of-order and unknown-uuid events", cases=2, held=2)


def test_slow_and_stuck_http_clients_do_not_stall_ingest(
    switch: Any, make_daemon: Any, figure: Any
) -> None:
    h = make_daemon([switch], sync=SYNC)
    calls(switch, 1500)  # a 3000-channel list is a large response
    converge(h, switch, "3000 channels")
    host, port = h.daemon.http_address
    stuck = []
    for _ in range(5):  # send a request for the big list, never read the answer
        s = socket.create_connection((host, port))
        ask = f"GET /v2/channels HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token('super')}\r\n\r\n"
        s.sendall(ask.encode())
        stuck.append(s)
    half = socket.create_connection((host, port))
    half.sendall(b"GET /v2/channels HTTP/1.1\r\nHost: x\r\n")  # and one that never finishes asking
    lags = []
    for _ in range(5):
        began = time.monotonic()
        (a, b) = switch.bridged_call(
            variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"}
        )
        wait_until(lambda b=b: h.table.get(b) is not None, what="ingest while clients are stuck")
        lags.append(time.monotonic() - began)
    assert h.api.get("/healthz", tok=None).status_code == 200
    for s in [*stuck, half]:
        s.close()
    figure(
        "slow/stuck HTTP clients during ingest",
        cases=5,
        held=5,
        worst_ingest_lag_s=round(max(lags), 3),
    )


def test_one_node_down_leaves_the_others_alone(
    make_switch: Any, make_daemon: Any, figure: Any
) -> None:
    up, down = make_switch(), make_switch()
    a, _ = up.bridged_call(variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"})
    x, _ = down.bridged_call(variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"})
    h = make_daemon([up, down], sync={**SYNC, "stale_grace": 0.5, "command_timeout": 30})
    wait_until(lambda: h.table.get(a) and h.table.get(x))
    down.pause_accept(True)
    down.drop_connections()
    wait_until(lambda: h.node("fs2").state == "down")
    items = {i["uuid"]: i for i in h.api.data("/v2/accounts/acc1/channels", "admin1")}
    assert items[x]["stale"] is True and items[a]["stale"] is False
    began = time.monotonic()
    resp = h.api.request(
        "POST", f"/v2/accounts/acc1/channels/{x}", "admin1", json={"action": "hangup"}
    )
    assert resp.status_code == 503 and resp.json()["data"] == "fs2"
    # at once: nothing was sent, so nothing waited for the 30 s command timeout
    assert time.monotonic() - began < 10
    ok = h.api.request(
        "POST", f"/v2/accounts/acc1/channels/{a}", "admin1", json={"action": "break"}
    )
    assert ok.status_code == 200
    wait_until(lambda: h.table.get(x) is None, what="stale channels dropped after the grace")
    assert h.table.get(a) is not None and h.node("fs1").state == "ready"
    figure("one of several nodes down", cases=1, held=1)
