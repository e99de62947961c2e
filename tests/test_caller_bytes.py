"""Bytes from a caller that are not UTF-8 (issue #11's outside attack, round 3).

FreeSWITCH copies a caller's name, a phone's User-Agent and SIP headers into its JSON as they
came: valid UTF-8 or not. An event, or a `show channels` answer, that held such bytes was
dropped whole: the call and its partner (whose events carry the name as Other-Leg-*) hidden,
its hang-up lost (listed after it ended), and every reconcile failing while it lasted."""

from typing import Any

import pytest

from channelsd.events import parse_json, parse_plain
from channelsd.standin import server

from conftest import wait_until

MARK = b"ZZBADZZ"
BAD = b"Jos\xe9\xff\xfe!"  # as long as MARK: every Content-Length stays right
assert len(MARK) == len(BAD)


@pytest.fixture
def raw_bytes(monkeypatch: Any) -> None:
    """The stand-in writes MARK's bytes as BAD, on events and replies alike."""
    for name in ("send_event", "send"):
        real = getattr(server.Connection, name)

        def send(self: Any, data: bytes, real: Any = real) -> None:
            real(self, data.replace(MARK, BAD))

        monkeypatch.setattr(server.Connection, name, send)


def test_a_value_that_is_not_utf8_is_read_not_dropped() -> None:
    event = parse_json(b'{"Event-Name":"CHANNEL_CREATE","Caller-Caller-ID-Name":"' + BAD + b'"}')
    assert event["Event-Name"] == "CHANNEL_CREATE"
    assert event["Caller-Caller-ID-Name"] == "Jos\ufffd\ufffd\ufffd!"
    plain = parse_plain(b"Event-Name: CHANNEL_CREATE\nCaller-Caller-ID-Name: " + BAD + b"\n")
    assert plain["Caller-Caller-ID-Name"] == "Jos\ufffd\ufffd\ufffd!"


def test_a_caller_name_that_is_not_utf8_is_listed_ended_and_reconciled(
    raw_bytes: None, switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch])
    acc = {"account_id": "acc1"}
    a, b = switch.bridged_call(variables_a=acc, variables_b=acc, caller=(MARK.decode(), "1001"))
    wait_until(lambda: h.table.get(a) is not None and h.table.get(b) is not None, what="listed")
    got = h.api.data(f"/v2/accounts/acc1/channels/{a}", "admin1")
    assert got["caller_id_name"] == "Jos\ufffd\ufffd\ufffd!"
    # A reconnect while the call is up: the listing holds the bytes too, and must be read.
    node = h.node()
    reconnects, before = node.reconnects, node.last_reconcile
    switch.drop_connections()
    wait_until(
        lambda: node.reconnects > reconnects and node.last_reconcile is not before and node.synced,
        what="a reconcile after the reconnect",
    )
    assert h.table.get(a) is not None and h.table.get(b) is not None
    switch.hangup(a)
    wait_until(lambda: h.table.get(a) is None and h.table.get(b) is None, what="hung up")
    metrics = h.api.get("/metrics", tok=None).text
    assert "channelsd_esl_event_parse_errors_total{" not in metrics  # none dropped
    assert 'channelsd_reconciles_total{node="fs1",result="unknown"}' not in metrics
