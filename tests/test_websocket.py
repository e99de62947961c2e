"""Kazoo's websocket (blackhole) for call events (#14), over real sockets.

A websocket client library (websocket-client) talks to a real daemon fed by the stand-in
FreeSWITCH; frames a well-behaved library refuses to send are written by hand onto its socket.
What a monster-ui client needs (reference §3) is checked by the protocol tests here, and by a
small browser client of our own in tests/test_websocket_browser.py.
"""

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests
import websocket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kazoo_support import KID, Cluster, WsClient, cluster, toml_text

from channelsd.blackhole.session import Session
from channelsd.channel import GREGORIAN_OFFSET
from channelsd.config import load

from conftest import Harness, config_dict, start_demo, token, wait_until

ACC1 = {
    "account_id": "acc1",
    "owner_id": "user1",
    "domain_name": "acc1.example",
    "ecallmgr_Authorizing-ID": "dev1",
    "ecallmgr_Authorizing-Type": "device",
}
ACC1_B = {"account_id": "acc1", "owner_id": "user2", "domain_name": "acc1.example"}
ACC2 = {"account_id": "acc2", "domain_name": "acc2.example"}
SUB = {"account_id": "acc1-sub"}
BINDINGS = [
    "call.CHANNEL_CREATE.*",
    "call.CHANNEL_ANSWER.*",
    "call.CHANNEL_DESTROY.*",
    "call.CHANNEL_HOLD.*",
    "call.CHANNEL_UNHOLD.*",
    "call.CHANNEL_BRIDGE.*",
    "call.*.*",
]


def ws_url(h: Harness, path: str = "/websocket") -> str:
    host, port = h.daemon.http_address
    return f"ws://{host}:{port}{path}"


@pytest.fixture
def wsd(switch: Any, make_daemon: Any, tmp_path: Path) -> Harness:
    keys = {KID: str(cluster().write(tmp_path))}
    return make_daemon(
        [switch],
        kazoo={"public_keys": keys},
        identity={"device_owners": {"dev9": "user1"}},
        # The protocol tests' sockets often hold no subscription (the fuzz test shares one
        # over 200 examples): the grace is tested in tests/test_websocket_limits.py.
        websocket={"subscribe_grace": 120},
    )


@pytest.fixture
def connect(wsd: Harness) -> Any:
    made: list[WsClient] = []

    def make(url: str | None = None) -> WsClient:
        c = WsClient(url or ws_url(wsd))
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def call_ids(c: WsClient, name: str | None = None, key: str | None = None) -> list[str]:
    return [e["data"]["call_id"] for e in c.events(name, key)]


def alive(c: WsClient) -> bool:
    return c.request("ping")["data"] == {"response": "pong"}


# -- events -----------------------------------------------------------------------------------


def test_every_binding_gets_its_events_in_kazoos_shape(switch: Any, wsd: Harness, connect):
    c = connect()
    reply = c.subscribe(token("admin1"), "acc1", BINDINGS)
    assert reply["status"] == "success" and reply["data"]["subscribed"] == BINDINGS
    began = time.time()
    a, b = switch.bridged_call(variables_a=ACC1, variables_b=ACC1_B)
    other, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
    wait_until(lambda: len(c.events("CHANNEL_BRIDGE")) == 2, what="the bridge")
    switch.hold(a)
    wait_until(lambda: c.events("CHANNEL_HOLD"), what="the hold")
    switch.unhold(a)
    wait_until(lambda: c.events("CHANNEL_UNHOLD"), what="the unhold")
    switch.hangup(a)
    wait_until(lambda: len(c.events("CHANNEL_DESTROY")) == 4, what="both legs' ends")
    gevent.sleep(0.2)  # a publish interval: nothing more comes
    expected = {
        "call.CHANNEL_CREATE.*": [a, b],
        "call.CHANNEL_ANSWER.*": [b, a],
        "call.CHANNEL_BRIDGE.*": [a],  # once, for the leg FreeSWITCH names
        "call.CHANNEL_HOLD.*": [a],
        "call.CHANNEL_UNHOLD.*": [a],
        "call.CHANNEL_DESTROY.*": [b, a],
    }
    for binding, ids in expected.items():
        assert call_ids(c, key=binding) == ids, binding
    every = c.events(key="call.*.*")
    assert [e["name"] for e in every] == [
        "CHANNEL_CREATE",
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CHANNEL_HOLD",
        "CHANNEL_UNHOLD",
        "CHANNEL_DESTROY",
        "CHANNEL_DESTROY",
    ]
    assert other not in {e["data"]["call_id"] for e in c.events()}  # acc2's call: never
    # Across the socket's bindings, events come in the order they happened.
    order = ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_HOLD"]
    order += ["CHANNEL_UNHOLD", "CHANNEL_DESTROY"]
    names = [e["name"] for e in c.events() if e["data"]["call_id"] == a]
    assert names == sorted(names, key=order.index)
    assert all(opcode == websocket.ABNF.OPCODE_TEXT for opcode, _ in c.raw)
    # Kazoo's shape, snake_case, as an app reads it.
    create = c.events("CHANNEL_CREATE", "call.CHANNEL_CREATE.*")[0]
    assert create["subscription_key"] == "call.acc1.CHANNEL_CREATE.*"
    assert create["routing_key"] == f"call.acc1.CHANNEL_CREATE.{a}"
    data = create["data"]
    assert data["event_name"] == "CHANNEL_CREATE" and data["call_id"] == a
    assert (data["to"], data["from"]) == ("1002@acc1.example", "1001@acc1.example")
    assert (data["caller_id_name"], data["caller_id_number"]) == ("Alice", "1001")
    assert (data["callee_id_name"], data["callee_id_number"]) == ("Bob", "1002")
    assert data["call_direction"] == "inbound"
    assert began + GREGORIAN_OFFSET - 1 <= data["timestamp"] <= time.time() + GREGORIAN_OFFSET + 1
    assert data["custom_channel_vars"] == {
        "account_id": "acc1",
        "owner_id": "user1",
        "authorizing_id": "dev1",
        "authorizing_type": "device",
        "realm": "acc1.example",
    }
    bridge = c.events("CHANNEL_BRIDGE", "call.CHANNEL_BRIDGE.*")[0]["data"]
    assert bridge["other_leg_call_id"] == b
    for end in c.events("CHANNEL_DESTROY", "call.CHANNEL_DESTROY.*"):
        d = end["data"]
        assert d["hangup_cause"] == "NORMAL_CLEARING"
        assert isinstance(d["duration_seconds"], int) and isinstance(d["billing_seconds"], int)


def test_a_call_id_in_place_of_the_last_star(switch: Any, wsd: Harness, connect) -> None:
    watcher = connect()
    a1, b1 = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    a2, b2 = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: len(wsd.table) == 4, what="two calls")
    one = f"call.CHANNEL_DESTROY.{a1}"
    every = f"call.*.{b2}"
    watcher.subscribe(token("admin1"), "acc1", [one, every])
    for uuid in (a2, a1):
        switch.hold(uuid)
        switch.hangup(uuid)
    wait_until(lambda: call_ids(watcher, key=one) == [a1], what="a1's end")
    wait_until(lambda: "CHANNEL_DESTROY" in [e["name"] for e in watcher.events(key=every)])
    gevent.sleep(0.2)
    assert set(call_ids(watcher, key=every)) == {b2}
    assert {e["name"] for e in watcher.events(key=every)} == {"CHANNEL_DESTROY"}
    assert watcher.events(key=every)[0]["subscription_key"] == f"call.acc1.*.{b2}"
    assert len(watcher.events()) == 2


def test_accounts_and_roles_are_kept_apart(switch: Any, wsd: Harness, connect) -> None:
    sockets = {name: connect() for name in ("admin1", "user1", "admin2", "sub", "super")}
    asks = {
        "admin1": ("admin1", "acc1"),
        "user1": ("user1", "acc1"),
        "admin2": ("admin2", "acc2"),
        "sub": ("admin1", "acc1-sub"),  # a listed descendant
        "super": ("super", "*"),
    }
    for name, (tok, account) in asks.items():
        assert sockets[name].subscribe(token(tok), account, "call.CHANNEL_CREATE.*")["status"] == (
            "success"
        ), name
    owned, _ = switch.bridged_call(variables_a=ACC1, variables_b={"account_id": "acc1"})
    theirs, _ = switch.bridged_call(variables_a=ACC1_B, variables_b=ACC1_B)
    device, _ = switch.bridged_call(
        variables_a={"account_id": "acc1", "ecallmgr_Authorizing-ID": "dev9"},
        variables_b={"account_id": "acc1", "owner_id": "user2"},
    )
    elsewhere, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
    below, _ = switch.bridged_call(variables_a=SUB, variables_b=SUB)
    wait_until(lambda: len(call_ids(sockets["super"])) == 10, what="every create")
    gevent.sleep(0.2)
    seen = {name: set(call_ids(s)) for name, s in sockets.items()}
    acc1 = {ch.uuid for ch in wsd.table.by_account("acc1")}
    assert seen["admin1"] == acc1
    assert seen["user1"] == {owned, device}  # its owner's call, and its device's
    assert seen["admin2"] == {ch.uuid for ch in wsd.table.by_account("acc2")}
    assert seen["sub"] == {ch.uuid for ch in wsd.table.by_account("acc1-sub")}
    assert seen["super"] == {ch.uuid for ch in wsd.table.all()}
    assert theirs not in seen["user1"] and elsewhere in seen["admin2"] and below in seen["sub"]
    # Refused in the reply, with Kazoo's words; the socket stays.
    c = sockets["admin1"]
    for tok, account, text in (
        ("admin1", "acc2", "unauthorized account id"),
        ("admin1", "*", "unauthorized wildcard account id"),
        ("user1", "acc2", "unauthorized account id"),
    ):
        reply = c.subscribe(token(tok), account, "call.*.*")
        assert reply["status"] == "error" and reply["data"] == {"errors": [text]}
        assert alive(c)


def test_a_kazoo_token_subscribes_and_a_bad_one_is_told_to_sign_in_again(
    switch: Any, wsd: Harness, connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channelsd")
    c = connect()
    expired = cluster().token("acc1", exp_in=-3600)
    forged = Cluster().token("acc1")  # signed by another key under the same kid
    for bad in (expired, forged, "not-a-token"):
        reply = c.subscribe(bad, "acc1", "call.CHANNEL_CREATE.*")
        errors = reply["data"]["errors"]
        assert reply["status"] == "error" and errors[0].startswith("failed to authenticate token")
        assert bad not in json.dumps(reply)  # Kazoo appends the token; never here
    lines = [r.getMessage() for r in caplog.records if "auth failure" in r.getMessage()]
    assert [line.rsplit("reason=", 1)[1] for line in lines] == [
        "expired",
        "bad_signature",
        "unknown_token",
    ]
    assert all("client=127.0.0.1 " in line and "path=/websocket " in line for line in lines)
    assert not c.closed  # never closed for a bad token: monster-ui would reconnect forever
    # The user signs in again: the same socket, a new token.
    good = cluster().token("acc1", owner_id="user1")
    assert c.subscribe(good, "acc1", "call.CHANNEL_CREATE.*")["status"] == "success"
    assert c.subscribe(good, "acc2", "call.CHANNEL_CREATE.*")["data"]["errors"] == [
        "unauthorized account id"
    ]
    a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
    wait_until(lambda: a in call_ids(c), what="the Kazoo token's event")
    gevent.sleep(0.2)
    assert {e["data"]["custom_channel_vars"]["account_id"] for e in c.events()} == {"acc1"}


# -- the protocol's edges ---------------------------------------------------------------------

T = "tok-admin1-0123456789"


def sub(binding: Any = "call.*.*", account: Any = "acc1", key: str = "binding", tok: Any = T):
    return {"action": "subscribe", "auth_token": tok, "data": {"account_id": account, key: binding}}


CASES: list[tuple[dict[str, Any], str]] = [
    ({"action": "subscribe", "auth_token": T}, "missing required keys in data object"),
    ({"action": "subscribe", "auth_token": T, "data": []}, "missing required keys in data object"),
    (
        {"action": "subscribe", "auth_token": T, "data": {"account_id": "acc1"}},
        "missing required keys : binding",
    ),
    (
        {"action": "subscribe", "auth_token": T, "data": {"binding": "call.*.*"}},
        "missing required keys : account_id",
    ),
    (
        {"action": "subscribe", "data": {"account_id": "acc1", "binding": "call.*.*"}},
        "authentication token required",
    ),
    (sub("x", tok=7), "no available subscriptions to requested binding"),
    (sub(tok=7), "invalid authentication token format"),
    (sub(account=1), "unauthorized account id"),
    (sub("call.PARK_PARKED.*"), "event PARK_PARKED not supported"),
    (sub("call.*"), "invalid format for call subscription : *"),
    (sub("call.*.a.b"), "invalid format for call subscription : *, a, b"),
    (sub("call.*.{x}"), "invalid format for call subscription : *, {x}"),
    (sub("conference.event.*"), "no available subscriptions to requested binding"),
    (sub("call.*.*", key="bindings"), "no available subscriptions to requested binding"),
    (sub(["call.*.*"] * 65, key="bindings"), "too many bindings: at most 64 per socket"),
    ({"action": "dance"}, "unknown action: dance"),
    ({"data": {}}, "unknown action: None"),
]


@pytest.mark.parametrize(("message", "error"), CASES)
def test_every_bad_request_gets_an_error_reply_and_the_socket_stays(
    wsd: Harness, connect, message: dict[str, Any], error: str
) -> None:
    c = connect()
    c.send({**message, "request_id": "the-id"})
    reply = c.reply_to("the-id")
    assert reply == {
        "action": "reply",
        "request_id": "the-id",
        "status": "error",
        "data": {"errors": [error]},
    }
    assert alive(c)
    assert not wsd.daemon.ctx.websockets.hub._index  # nothing half-subscribed


def test_request_ids_are_echoed_as_sent_and_replies_carry_arrays(wsd: Harness, connect) -> None:
    c = connect()
    for rid in ("x", 42, 3.5, "a" * 256):
        c.send({"action": "ping", "request_id": rid})
        assert c.reply_to(rid)["data"] == {"response": "pong"}
    # None: a fresh id, as Kazoo makes one, and the request is done.
    c.send({"action": "ping", "request_id": None})
    wait_until(lambda: len(c.messages) > 4, what="the reply")
    assert c.messages[-1]["status"] == "success" and c.messages[-1]["request_id"]
    # One that cannot be echoed (the client could not match the reply): refused, not done.
    for rid in ({"a": 1}, [1], True, "", "b" * 257):
        before = len(c.messages)
        c.send({**sub(tok=token("admin1")), "request_id": rid})
        wait_until(lambda before=before: len(c.messages) > before, what="the reply")
        reply = c.messages[-1]
        assert isinstance(reply["request_id"], str) and reply["request_id"]
        assert reply["data"] == {
            "errors": ["request_id must be a string or a number of 1 to 256 characters"]
        }
        assert not wsd.daemon.ctx.websockets.hub._index
    tok = token("admin1")
    got = c.subscribe(tok, "acc1", ["call.CHANNEL_CREATE.*", "call.*.*", "call.*.*"])
    assert got["data"] == {"subscribed": ["call.CHANNEL_CREATE.*", "call.*.*"]}
    also = c.subscribe(tok, "acc1-sub", "call.CHANNEL_CREATE.*")
    assert also["data"] == {"subscribed": ["call.CHANNEL_CREATE.*", "call.*.*"]}
    gone = c.request("unsubscribe", tok, account_id="acc1", binding="call.CHANNEL_CREATE.*")
    assert gone["data"] == {
        "unsubscribed": ["call.CHANNEL_CREATE.*"],
        "subscribed": ["call.*.*", "call.CHANNEL_CREATE.*"],
    }
    # Without account_id: that binding on every account of the socket.
    gone = c.request("unsubscribe", tok, bindings=["call.CHANNEL_CREATE.*", "call.*.*"])
    assert gone["data"] == {"unsubscribed": ["call.CHANNEL_CREATE.*", "call.*.*"], "subscribed": []}
    assert not wsd.daemon.ctx.websockets.hub._index
    bad = c.request("unsubscribe", "nope", account_id="acc1", binding="call.*.*")
    assert bad["data"]["errors"] == ["failed to authenticate token"]


NUMBERS = st.from_regex(
    r"-?(0|[1-9][0-9]{0,80})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,2})?", fullmatch=True
)


@given(number=NUMBERS)
@example(number="12345678901234567890123")  # orjson reads it as 1.2345678901234568e+22
@example(number="0.10")
@example(number="-0")
@example(number="1E+02")
@settings(
    max_examples=100, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_a_numeric_request_id_comes_back_as_the_very_digits_sent(wsd: Harness, number: str) -> None:
    c = _shared_client(wsd)
    before = len(c.raw)
    c.send('{"action":"ping","request_id":' + number + ',"data":{"n":[' + number + "]}}")
    wait_until(lambda: len(c.raw) > before, what="the reply")
    opcode, raw = c.raw[-1]
    assert raw.startswith(b'{"action":"reply","request_id":' + number.encode() + b',"status"')
    assert json.loads(raw)["data"] == {"response": "pong"}


def test_a_request_id_too_long_to_echo_is_refused_clearly(wsd: Harness, connect) -> None:
    c = connect()
    for text in ("9" * 257, "0." + "1" * 300, '"' + "x" * 257 + '"'):
        before = len(c.messages)
        c.send('{"action":"ping","request_id":' + text + "}")
        wait_until(lambda before=before: len(c.messages) > before, what="the reply")
        reply = c.messages[-1]
        assert reply["status"] == "error" and reply["request_id"] != text
        assert reply["data"]["errors"] == [
            "request_id must be a string or a number of 1 to 256 characters"
        ]
    c.send('{"action":"ping","request_id":' + "7" * 256 + "}")
    wait_until(lambda: len(c.raw) > 3, what="the reply")
    assert b'"request_id":' + b"7" * 256 + b"," in c.raw[-1][1]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["subscribe", "unsubscribe", "ping", "x"]) | JSON,
        "auth_token": st.sampled_from([T, "tok-user1-0123456789", "bad", ""]) | JSON,
        "data": st.fixed_dictionaries(
            {},
            optional={
                "account_id": st.sampled_from(["acc1", "acc2", "*", ""]) | JSON,
                "binding": st.sampled_from(BINDINGS + ["call.*.x", "call..", ""]) | JSON,
                "bindings": st.lists(st.sampled_from(BINDINGS) | JSON, max_size=3) | JSON,
            },
        )
        | JSON,
    },
)


@given(message=FIELDS)
@settings(
    max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_any_json_gets_exactly_one_reply_with_its_request_id(
    wsd: Harness, message: dict[str, Any]
) -> None:
    c = _shared_client(wsd)
    rid = f"fuzz-{time.monotonic_ns()}"
    c.send({**message, "request_id": rid})
    reply = c.reply_to(rid)
    assert reply["status"] in ("success", "error")
    if reply["status"] == "error":
        assert isinstance(reply["data"]["errors"], list) and reply["data"]["errors"]
    else:
        assert all(isinstance(v, list) for k, v in reply["data"].items() if k != "response")
    assert sum(1 for m in c.messages if m.get("request_id") == rid) == 1


_CLIENTS: dict[int, WsClient] = {}


def _shared_client(h: Harness) -> WsClient:
    """One socket for every example of a daemon (a fresh socket per example would test the
    handshake 200 times instead)."""
    c = _CLIENTS.get(id(h))
    if c is None or c.closed:
        c = _CLIENTS[id(h)] = WsClient(ws_url(h))
    return c


def raw_frame(opcode: int, payload: bytes, masked: bool = True, fin: bool = True) -> bytes:
    """A frame as a client would write it (or would not: unmasked) — the test's own bytes."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (raw_frame(0x1, b"x" * 70_000), 1009),  # over websocket.max_message_bytes
        (raw_frame(0x1, b"a" * 40_000, fin=False) + raw_frame(0x0, b"b" * 40_000), 1009),
        (raw_frame(0x1, b'{"action":"ping"\xff}'), 1007),  # not UTF-8
        (raw_frame(0x1, b'{"action":"ping"}', masked=False), 1002),  # clients must mask
        (raw_frame(0x3, b"{}"), 1002),  # a reserved opcode
        (raw_frame(0x9, b"p" * 200), 1002),  # a control frame over 125 bytes
        (b"GET / HTTP/1.1\r\n\r\n", 1002),  # not a frame at all
    ],
)
def test_frames_that_cannot_be_trusted_close_the_socket_with_their_code(
    wsd: Harness, connect, frame: bytes, code: int
) -> None:
    c = connect()
    assert alive(c)
    c.ws.sock.sendall(frame)
    wait_until(lambda: c.closed, what="the close")
    assert c.closed[0] == code
    wait_until(lambda: len(wsd.daemon.ctx.websockets) == 0, what="the socket gone")
    # The daemon is fine, and the next socket works.
    assert wsd.api.get("/healthz", None).status_code == 200
    assert alive(connect())


def test_text_that_is_not_a_request_is_answered_not_closed(wsd: Harness, connect) -> None:
    c = connect()
    for text in ("not json", "[1, 2]", '"a string"', "", "{"):
        before = len(c.messages)
        c.send(text)
        wait_until(lambda before=before: len(c.messages) > before, what=f"a reply to {text!r}")
        reply = c.messages[-1]
        assert reply["status"] == "error" and isinstance(reply["data"]["errors"], list)
    before = len(c.messages)
    c.send(b"\x00\x01binary")
    wait_until(lambda: len(c.messages) > before, what="a reply to a binary message")
    assert c.messages[-1]["data"]["errors"] == ["send JSON text messages"]
    # A message in fragments is one message.
    c.ws.sock.sendall(
        raw_frame(0x1, b'{"action":"pi', fin=False) + raw_frame(0x0, b'ng","request_id":"f"}')
    )
    assert c.reply_to("f")["data"] == {"response": "pong"}
    assert alive(c) and not c.closed


# -- keeping sockets honest -------------------------------------------------------------------


def test_idle_sockets_are_pinged_and_dead_ones_dropped(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch], websocket={"ping_interval": 0.5})
    answering = WsClient(ws_url(h))  # websocket-client answers pings as browsers do
    silent = socket.create_connection(h.daemon.http_address)
    try:
        silent.sendall(handshake(h))
        head = read_until(silent, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        silent.settimeout(5)
        ping = silent.recv(64)
        assert ping[:1] == b"\x89" and ping[2:] == b"channelsd"  # a protocol-level ping
        # It never answers: dropped after another interval.
        wait_until(lambda: silent.recv(64) == b"", timeout=5, what="the silent socket dropped")
        gevent.sleep(1.0)
        assert not answering.closed and alive(answering)
        assert len(h.daemon.ctx.websockets) == 1
    finally:
        answering.close()
        silent.close()


def handshake(h: Harness, path: str = "/websocket") -> bytes:
    host, port = h.daemon.http_address
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nOrigin: https://portal.example\r\n\r\n"
    ).encode()


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    sock.settimeout(5)
    while end not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def slow_subscriber(h: Harness) -> tuple[socket.socket, bytes]:
    """A raw websocket with a 4 KiB receive buffer that subscribes to acc1's call events
    (its request sent, not answered yet): the socket, and what came after the handshake's
    head (the start of the first frames, if any)."""
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(h.daemon.http_address)
    slow.sendall(handshake(h))
    head = read_until(slow, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    subscribe = {
        "action": "subscribe",
        "auth_token": token("admin1"),
        "request_id": "slow",
        "data": {"account_id": "acc1", "binding": "call.*.*"},
    }
    slow.sendall(raw_frame(0x1, json.dumps(subscribe).encode()))
    return slow, head.split(b"\r\n\r\n", 1)[1]


def test_reconnect_and_resubscribe(switch: Any, wsd: Harness, connect) -> None:
    service = wsd.daemon.ctx.websockets
    first = connect()
    first.subscribe(token("admin1"), "acc1", "call.CHANNEL_CREATE.*")
    a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: a in call_ids(first), what="the first socket's event")
    # The network drops it: no close frame, the TCP connection just goes.
    first.greenlet.kill()
    first.ws.sock.shutdown(socket.SHUT_RDWR)
    first.ws.sock.close()
    wait_until(lambda: len(service) == 0, what="the server noticed")
    assert not service.hub._index and len(service.subscriptions) == 0
    # monster-ui reconnects and subscribes everything again.
    second = connect()
    assert second.subscribe(token("admin1"), "acc1", "call.CHANNEL_CREATE.*")["status"] == (
        "success"
    )
    b, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: b in call_ids(second), what="the new socket's event")
    assert a not in call_ids(second)


def test_a_subscriber_that_never_reads_is_dropped_with_bounded_memory(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch, figure: Any
) -> None:
    limit = 256 * 1024
    h = make_daemon([switch], websocket={"send_queue_bytes": limit})
    most = [0]
    queue = Session._queue  # where a publish's bytes wait that the socket did not take

    def watched(self: Session, frames: bytes, first: bool = False) -> None:
        queue(self, frames, first)
        most[0] = max(most[0], self._queued)

    monkeypatch.setattr(Session, "_queue", watched)
    reader = WsClient(ws_url(h))
    reader.subscribe(token("admin1"), "acc1", "call.*.*")
    slow, _ = slow_subscriber(h)
    try:
        wait_until(lambda: len(h.daemon.ctx.websockets.subscriptions) == 2, what="subscribed")
        service = h.daemon.ctx.websockets
        calls = []
        while service.dropped_slow == 0 and len(calls) < 400:
            calls.append(switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0])
            switch.hangup(calls[-1])
            gevent.sleep(0.01)  # the reading subscriber (in this process) gets its turn
        assert service.dropped_slow == 1, len(calls)
        assert most[0] <= limit  # what waited for it never passed its bound
        # Ingest and the reading subscriber were unaffected: every call, every event.
        wait_until(lambda: len(h.table) == 0, what="every call applied")
        wait_until(
            lambda: set(call_ids(reader, "CHANNEL_DESTROY")) >= set(calls),
            what="the reader got every call's end",
        )
        assert len(service) == 1
    finally:
        reader.close()
        slow.close()
    figure("websocket: a subscriber that never reads", calls=len(calls), dropped=1, held=1)


def test_a_reload_closes_the_sockets_of_revoked_tokens(switch: Any, tmp_path: Path) -> None:
    conf = tmp_path / "channelsd.toml"
    data = config_dict([switch], kazoo={"public_keys": {KID: str(cluster().write(tmp_path))}})
    conf.write_text(toml_text(data))
    from channelsd.daemon import Daemon

    daemon = Daemon(load(conf))
    daemon.start()
    clients: dict[str, WsClient] = {}
    try:
        h = Harness(daemon)
        h.wait_ready()
        kazoo = cluster().token("acc1")
        for name, tok in (("admin1", token("admin1")), ("admin2", token("admin2")), ("kz", kazoo)):
            clients[name] = WsClient(ws_url(h))
            account = "acc2" if name == "admin2" else "acc1"
            assert clients[name].subscribe(tok, account, "call.*.*")["status"] == "success"
        # admin1 is removed and the Kazoo key replaced (a key reset on Kazoo).
        data["tokens"] = [t for t in data["tokens"] if t["name"] != "admin1"]
        (tmp_path / "new").mkdir()
        data["kazoo"]["public_keys"] = {KID: str(Cluster().write(tmp_path / "new"))}
        conf.write_text(toml_text(data))
        assert daemon.reload()
        for name in ("admin1", "kz"):
            wait_until(lambda name=name: clients[name].closed, what=f"{name}'s socket closed")
            assert clients[name].closed == (1008, "token revoked")
        a, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        wait_until(lambda: a in call_ids(clients["admin2"]), what="the kept token's event")
        assert len(daemon.ctx.websockets) == 1
        metrics = requests.get(h.api.base + "/metrics", timeout=5).text
        assert "channelsd_streams_revoked_total 2.0" in metrics
    finally:
        for c in clients.values():
            c.close()
        daemon.stop()


def test_a_kazoo_tokens_subscriptions_close_at_its_exp(wsd: Harness, connect) -> None:
    c = connect()
    soon = cluster().token("acc1", exp_in=-8)  # exp + 10 s of leeway: 1-2 s from now
    assert c.subscribe(soon, "acc1", "call.*.*")["status"] == "success"
    wait_until(lambda: c.closed, timeout=6, what="the socket closed at exp")
    assert c.closed == (1008, "token expired")


# -- where it is served -----------------------------------------------------------------------


def test_its_own_port_like_kazoos_5555_and_the_listing(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch], websocket={"port": 0, "host": "127.0.0.1"})
    host, port = h.daemon.websocket_address
    assert port != h.daemon.http_address[1]
    for url in (f"ws://{host}:{port}", f"ws://{host}:{port}/any/path", ws_url(h)):
        c = WsClient(url)
        try:
            assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        finally:
            c.close()
    plain = requests.get(f"http://{host}:{port}/", timeout=5)
    assert plain.status_code == 426 and plain.json()["message"] == "upgrade required"
    listing = requests.get(h.api.base + "/v2/websockets", timeout=5)
    assert listing.status_code == 200 and listing.headers["Content-Type"] == "application/json"
    assert listing.json()["data"] == {
        "call": [
            "call.CHANNEL_CREATE.{CALL_ID}",
            "call.CHANNEL_ANSWER.{CALL_ID}",
            "call.CHANNEL_DESTROY.{CALL_ID}",
            "call.CHANNEL_HOLD.{CALL_ID}",
            "call.CHANNEL_UNHOLD.{CALL_ID}",
            "call.CHANNEL_BRIDGE.{CALL_ID}",
        ]
    }


def test_what_is_not_a_websocket_handshake_gets_the_envelope(switch: Any, make_daemon) -> None:
    h = make_daemon([switch], websocket={"max_sockets": 1})
    url = h.api.base + "/websocket"
    key = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    cases = [
        ("GET", {}, 426),
        ("POST", {}, 405),
        ("GET", {**key, "Sec-WebSocket-Key": "short"}, 400),
        ("GET", {**key, "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "a" * 22 + "=="}, 426),
        ("GET", {"Upgrade": "websocket", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, 400),
    ]
    for method, headers, status in cases:
        resp = requests.request(method, url, headers=headers, timeout=5)
        assert resp.status_code == status, (method, headers, resp.text)
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json()["error"] == str(status)
    first = WsClient(ws_url(h))
    try:
        # Subscribed, it keeps its place (an idle one would give it up: see the eviction test).
        assert first.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url(h), timeout=5)
        assert refused.value.status_code == 503
        assert json.loads(refused.value.resp_body)["message"] == "too many websockets"
        assert alive(first)
    finally:
        first.close()


def test_the_demo_prints_a_websocket_url_that_works() -> None:
    import re
    import signal

    proc, text = start_demo(calls=4)
    try:
        url = re.search(r"^\s+(ws://127\.0\.0\.1:\d+/\S*)", text, re.M).group(1)
        api = re.search(r"(http://127\.0\.0\.1:\d+)/v2", text).group(1)
        assert url.split(":")[2].split("/")[0] == api.split(":")[2]  # on the API's port
        super_token = re.search(r"superduper .*:\s+(\S+)", text).group(1)
        c = WsClient(url)
        try:
            assert c.subscribe(super_token, "*", "call.CHANNEL_CREATE.*")["status"] == "success"
            wait_until(lambda: c.events("CHANNEL_CREATE"), timeout=30, what="a demo call")
        finally:
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


# -- the hub, against a model -----------------------------------------------------------------


class Collector:
    """A receiver that decodes what it is delivered as a websocket client would."""

    def __init__(self) -> None:
        from wsproto.connection import Connection, ConnectionType

        self.conn = Connection(ConnectionType.CLIENT)
        self.got: list[dict[str, Any]] = []

    def deliver(self, frames: bytes) -> None:
        from wsproto.events import TextMessage

        self.conn.receive_data(frames)
        for event in self.conn.events():
            assert isinstance(event, TextMessage) and event.message_finished
            self.got.append(json.loads(event.data))


class AtOnce:
    """The hub's courier for Collectors: each gets its bytes at once, in the publish."""

    def __call__(self, pairs: list[tuple[Collector, bytes]]) -> None:
        for collector, data in pairs:
            collector.deliver(data)

    def close(self) -> None:
        pass


UUIDS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(4)]
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("create"),
            st.integers(0, 3),
            st.sampled_from(["acc1", "acc2", None]),
            st.sampled_from(["u1", "u2", None]),
        ),
        st.tuples(
            st.sampled_from(["CHANNEL_ANSWER", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "CHANNEL_DATA"]),
            st.integers(0, 3),
            st.sampled_from(["acc1", "acc2"]),
            st.just(None),
        ),
        st.tuples(st.just("CHANNEL_DESTROY"), st.integers(0, 3), st.none(), st.none()),
        st.tuples(st.just("publish"), st.none(), st.none(), st.none()),
    ),
    max_size=40,
)
SUBS = st.lists(
    st.tuples(
        st.integers(0, 3),  # which socket
        st.sampled_from(["acc1", "acc2", "*"]),
        st.sampled_from(BINDINGS + [f"call.*.{UUIDS[0]}", f"call.CHANNEL_ANSWER.{UUIDS[1]}"]),
        st.sampled_from([None, "u1"]),  # a user token's owner
    ),
    max_size=8,
    unique_by=lambda s: (s[0], s[1], s[2]),
)


@given(subs=SUBS, ops=OPS)
@example(  # two bindings of one socket, their events interleaved within one publish
    subs=[
        (0, "acc1", "call.CHANNEL_CREATE.*", None),
        (0, "acc1", "call.CHANNEL_ANSWER.*", None),
        (1, "acc1", "call.CHANNEL_ANSWER.*", "u1"),
        (1, "*", "call.CHANNEL_CREATE.*", None),
    ],
    ops=[
        ("create", 0, "acc1", "u1"),
        ("CHANNEL_ANSWER", 0, "acc1", None),
        ("create", 1, "acc1", "u2"),
        ("CHANNEL_ANSWER", 1, "acc1", None),
        ("create", 2, "acc2", None),
    ],
)
@settings(max_examples=150, derandomize=True, deadline=None)
def test_each_socket_gets_exactly_what_its_bindings_match_in_order(subs, ops) -> None:
    from channelsd.blackhole.hub import Hub, Subscription
    from channelsd.table import ChannelTable, Identity

    table = ChannelTable(Identity(device_owners={"dev9": "u1"}))
    # The catch-all is another hub's on the same table: the hub under test has only the
    # generated subscriptions, so it must find itself which changes nobody of its own
    # watches (a wildcard among them or not). One clock for both: the same renderings.
    hub = Hub(table, interval=3600, courier=AtOnce(), clock=lambda: 1_764_000_000.0)
    reference = Hub(table, interval=3600, courier=AtOnce(), clock=lambda: 1_764_000_000.0)
    everything = Collector()
    reference.add(Subscription(everything, "*", "call.*.*", ("*", "*"), None, None))
    sockets = [Collector() for _ in range(4)]
    for i, account, binding, owner in subs:
        _, event, call_id = binding.split(".")
        hub.add(Subscription(sockets[i], account, binding, (event, call_id), owner, None))
    for op, n, account, owner in ops:
        if op == "publish":
            hub.publish()
            reference.publish()
            continue
        uuid = UUIDS[n]
        event: dict[str, Any] = {"Event-Name": op, "Unique-ID": uuid, "variable_uuid": uuid}
        if op == "create":
            event["Event-Name"] = "CHANNEL_CREATE"
            if owner == "u2":
                event["variable_ecallmgr_Authorizing-ID"] = "dev9"  # u1's device
        if account is not None:
            event["variable_ecallmgr_Account-ID"] = account
        if owner is not None:
            event["variable_ecallmgr_Owner-ID"] = owner
        table.apply("fs1", event)
    hub.publish()
    reference.publish()
    hub._cadence.close()
    reference._cadence.close()
    # The model: what the catch-all saw, filtered as each socket's bindings say.
    for i, sock in enumerate(sockets):
        mine = [s for s in subs if s[0] == i]
        expected = []
        for message in everything.got:
            data = message["data"]
            ccvs = data["custom_channel_vars"]
            for _, account, binding, owner in mine:
                _, name, call_id = binding.split(".")
                if (
                    account in ("*", ccvs["account_id"])
                    and name in ("*", message["name"])
                    and call_id in ("*", data["call_id"])
                    and (
                        owner is None
                        or ccvs.get("owner_id") == owner
                        or ccvs.get("authorizing_id") == "dev9"
                    )
                ):
                    expected.append((binding, message["name"], data["call_id"]))
        got = [(m["subscribed_key"], m["name"], m["data"]["call_id"]) for m in sock.got]
        assert sorted(got) == sorted(expected)
        # In the order they happened: each message at or after where the one before it was
        # (at: one event under several bindings; after: two events alike, a hold told twice).
        at = 0
        for g in sock.got:
            at = next((k for k in range(at, len(everything.got)) if same(everything.got[k], g)), -1)
            assert at >= 0, f"{g['name']} of {g['data']['call_id']} out of order"


def test_an_unwatched_hub_leaves_the_ingest_path_and_comes_back() -> None:
    """With no subscription the table does not call the hub at all (each change would cost
    the ingest path a call only to return); the first subscription brings it back, once, and
    the channels' changes from then on reach it, those of the unwatched time do not."""
    from channelsd.blackhole.hub import Hub, Subscription
    from channelsd.table import ChannelTable

    table = ChannelTable()
    hub = Hub(table, interval=3600, courier=AtOnce())

    def listened() -> bool:
        return hub._on_change in table._on_change and hub._on_change in table._on_destroy

    def create(n: int) -> None:
        uuid = UUIDS[n]
        table.apply(
            "fs1",
            {
                "Event-Name": "CHANNEL_CREATE",
                "Unique-ID": uuid,
                "variable_uuid": uuid,
                "variable_ecallmgr_Account-ID": "acc1",
            },
        )

    assert not listened()
    create(0)
    a, b = Collector(), Collector()
    sub_a = Subscription(a, "acc1", "call.*.*", ("*", "*"), None, None)
    sub_b = Subscription(b, "*", "call.*.*", ("*", "*"), None, None)
    hub.add(sub_a)
    hub.add(sub_b)
    assert listened() and table._on_change.count(hub._on_change) == 1
    create(1)
    hub.publish()
    hub.remove(sub_a)
    assert listened()  # b still watches
    hub.remove(sub_b)
    assert not listened()
    create(2)  # nobody watches: not told
    hub.add(sub_a)
    assert listened() and table._on_change.count(hub._on_change) == 1
    create(3)
    hub.publish()
    hub._cadence.close()
    assert [m["data"]["call_id"] for m in a.got] == [UUIDS[1], UUIDS[3]]
    assert [m["data"]["call_id"] for m in b.got] == [UUIDS[1]]


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["name"] == b["name"] and a["data"] == b["data"]


def test_a_key_twice_in_one_message_is_refused(wsd: Harness, connect) -> None:
    """A subscribe whose `action` (or binding) is named twice means one thing to orjson
    (the last) and another to Kazoo (the first): refused, nothing subscribed."""
    c = connect()
    before = len(c.messages)
    c.send(
        '{"action":"ping","action":"subscribe","request_id":"d1",'
        '"data":{"account_id":"acc1","binding":"call.CHANNEL_CREATE.*"}}'
    )
    wait_until(lambda: len(c.messages) > before, what="the reply")
    reply = c.messages[-1]
    assert reply["status"] == "error"
    assert any("appears twice" in e for e in reply["data"]["errors"])
    assert c.request("ping")["status"] == "success"  # the socket goes on
