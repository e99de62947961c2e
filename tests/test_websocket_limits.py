"""Kazoo's websocket under attack (issue #14's second round), over real sockets.

What an outside attacker did to the websocket, each held here against a real daemon fed by the
stand-in FreeSWITCH: a token's socket kept receiving after its exp while the writer was never
idle; token-less sockets took every place; a subscribe waiting for Kazoo outlived a reload
that revoked its token; a grant Kazoo made was never asked again.
"""

import base64
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
import websocket
from kazoo_support import KID, Cluster, Crossbar, WsClient, cluster, toml_text
from test_websocket import ACC1, ACC2, alive, call_ids, handshake, raw_frame, read_until, ws_url

from channelsd.config import load
from channelsd.daemon import Daemon

from conftest import Harness, config_dict, token, wait_until


@pytest.fixture
def crossbar() -> Any:
    cb = Crossbar()
    yield cb
    cb.stop()


def raw_socket(h: Harness, rcvbuf: int | None = None) -> socket.socket:
    """A websocket opened by hand: it reads only when the test says so."""
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(h.daemon.http_address)
    s.sendall(handshake(h))
    assert read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 101")
    return s


def subscribe_frame(tok: str, account: str = "acc1", rid: str = "r1") -> bytes:
    message = {
        "action": "subscribe",
        "auth_token": tok,
        "request_id": rid,
        "data": {"account_id": account, "binding": "call.*.*"},
    }
    return raw_frame(0x1, json.dumps(message).encode())


def exp_of(tok: str) -> float:
    payload = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


def read_to_end(s: socket.socket, timeout: float = 10.0) -> tuple[bytes, bool]:
    """What the server sends until it ends the socket, and whether it did (within `timeout`
    of silence)."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            return data, False
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


# -- 1. expiry is kept on a clock --------------------------------------------------------------


def test_a_tokens_socket_closes_at_exp_while_its_writer_is_busy(
    switch: Any, make_daemon: Any, tmp_path: Path
) -> None:
    """The writer is kept busy by a client that does not read (the attacker's read about as
    fast as its events came: the writer never found its queue empty). At exp the socket
    closes all the same, and no event of a call made after it is ever sent."""
    h = make_daemon(
        [switch],
        kazoo={"public_keys": {KID: str(cluster().write(tmp_path))}},
        websocket={"send_queue_bytes": 65536},
    )
    service = h.daemon.ctx.websockets
    tok = cluster().token("acc1", exp_in=-4)  # exp + 10 s of leeway: 5-6 s from now
    ends = exp_of(tok) + 10
    s = raw_socket(h, rcvbuf=4096)
    try:
        s.sendall(subscribe_frame(tok))
        wait_until(lambda: len(service.subscriptions) == 1, what="subscribed")
        (session,) = service.sessions
        # Events until the kernel's buffers are full and the writer waits in send(), with
        # some still queued behind it (well under send_queue_bytes: the client is not dropped).
        early = []
        while not session._out and len(early) < 300:
            for _ in range(3):  # about 20 KiB of events
                early.append(switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0])
                switch.hangup(early[-1])
            gevent.sleep(0.1)
        assert session._out and not session.closing, len(early)
        assert time.time() < ends - 0.5, "the buffers took too long to fill"
        gevent.sleep(max(0.0, ends - time.time()) + 1.5)
        late, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        gevent.sleep(0.5)
        # It reads now, but never answers the close frame: the server ends it all the same.
        data, ended = read_to_end(s)
    finally:
        s.close()
    assert early[0].encode() in data  # what was sent before exp arrives
    assert late.encode() not in data  # nothing of a call made after it
    assert ended
    assert service.dropped_slow == 0  # closed for its exp, not for reading slowly
    wait_until(lambda: len(service) == 0, what="the socket gone")


# -- 2. places: grace, per client, per token, eviction ----------------------------------------


def test_a_socket_without_a_subscription_is_closed_after_the_grace(
    switch: Any, make_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channelsd")
    h = make_daemon([switch], websocket={"subscribe_grace": 0.5})
    raw = raw_socket(h)
    subscribed, bare, busy, dropped, refused = (WsClient(ws_url(h)) for _ in range(5))
    try:
        assert subscribed.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        assert dropped.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        gone = dropped.request("unsubscribe", token("admin1"), binding="call.*.*")
        assert gone["data"]["subscribed"] == []
        reply = refused.subscribe("not-a-token", "acc1", "call.*.*")
        assert reply["status"] == "error"

        def chatter() -> None:  # pings (action and protocol) do not keep a socket
            while not busy.closed:
                busy.send({"action": "ping", "request_id": "p"})
                busy.ws.ping(b"x")
                gevent.sleep(0.1)

        pinger = gevent.spawn(chatter)
        for c in (bare, busy, dropped, refused):
            wait_until(lambda c=c: c.closed, timeout=5, what="the idle socket closed")
            assert c.closed == (1008, "no subscription")
        pinger.kill()
        # A client that pings after the server's close frame, then answers it.
        assert b"\x88" in read_until(raw, b"no subscription")
        raw.sendall(raw_frame(0x9, b"late") + raw_frame(0x8, (1000).to_bytes(2, "big")))
        assert _ends(raw)
        assert alive(subscribed) and not subscribed.closed
        a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: a in call_ids(subscribed), what="the subscriber's event")
        wait_until(lambda: len(h.daemon.ctx.websockets) == 1, what="only the subscriber")
    finally:
        raw.close()
        for c in (subscribed, bare, busy, dropped, refused):
            c.close()
    assert "websocket failed" not in caplog.text
    assert "protocol error" not in caplog.text  # the answer to a close is none
    assert caplog.text.count("websocket without subscription closed client=127.0.0.1") == 5


def test_one_client_address_holds_a_bounded_number_of_sockets(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon(
        [switch],
        websocket={"max_sockets_per_client": 2},
        http={"trusted_proxies": ["127.0.0.1"]},
    )
    url = ws_url(h)
    made: list[WsClient] = []
    try:
        made += [WsClient(url), WsClient(url)]
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, timeout=5)
        assert refused.value.status_code == 429
        body = json.loads(refused.value.resp_body)
        assert body["message"] == "too many websockets" and body["error"] == "429"
        # Behind a trusted proxy, each forwarded client counts, not the proxy.
        for client in ("192.0.2.1", "192.0.2.2"):
            forwarded = [f"X-Forwarded-For: {client}"]
            made += [WsClient(url, header=forwarded), WsClient(url, header=forwarded)]
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                websocket.create_connection(url, timeout=5, header=forwarded)
            assert refused.value.status_code == 429
        # A place given back is usable at once.
        made.pop(0).close()
        wait_until(lambda: len(h.daemon.ctx.websockets) == 5, what="the place given back")
        made.append(WsClient(url))
        assert all(alive(c) for c in made)
    finally:
        for c in made:
            c.close()


def test_one_token_subscribes_on_a_bounded_number_of_sockets(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch], websocket={"max_sockets_per_token": 2})
    a, b, c = (WsClient(ws_url(h)) for _ in range(3))
    tok = token("admin1")
    try:
        for s in (a, b):
            assert s.subscribe(tok, "acc1", "call.*.*")["status"] == "success"
            # More bindings on a socket it holds already: no new place.
            assert s.subscribe(tok, "acc1", "call.CHANNEL_CREATE.*")["status"] == "success"
        reply = c.subscribe(tok, "acc1", "call.*.*")
        assert reply["status"] == "error"
        assert reply["data"]["errors"] == ["too many websockets for this token: at most 2"]
        assert c.subscribe(token("admin2"), "acc2", "call.*.*")["status"] == "success"
        # A socket that lets the token go gives its place back.
        b.request("unsubscribe", tok, bindings=["call.*.*", "call.CHANNEL_CREATE.*"])
        assert c.subscribe(tok, "acc1", "call.*.*")["status"] == "success"
        call, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: call in call_ids(c) and call in call_ids(a), what="both get it")
    finally:
        for s in (a, b, c):
            s.close()


def test_idle_sockets_give_their_place_to_one_that_subscribes(
    switch: Any, make_daemon: Any
) -> None:
    """The attacker's: every place taken by sockets that never present a token (and ping to
    look alive). A real client still gets in, and keeps its place once subscribed."""
    h = make_daemon([switch], websocket={"max_sockets": 4})
    service = h.daemon.ctx.websockets
    idle = [raw_socket(h) for _ in range(4)]
    for s in idle:
        s.sendall(raw_frame(0x9, b"alive"))
    wait_until(lambda: len(service) == 4, what="every place taken")
    real: list[WsClient] = []
    try:
        for i in range(4):
            real.append(WsClient(ws_url(h)))
            assert real[-1].subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
            # The idle socket that came first went first.
            assert _ends(idle[i])
            assert all(not _closed(s) for s in idle[i + 1 :])
        assert service.evicted == 4
        # Every place subscribed: now a new socket is refused.
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url(h), timeout=5)
        assert refused.value.status_code == 503
        a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: all(a in call_ids(c) for c in real), what="every real client's event")
    finally:
        for c in real:
            c.close()
        for s in idle:
            s.close()


def _ends(s: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server ends this socket within `timeout` (what it sent before is read)."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def _closed(s: socket.socket) -> bool:
    """Whether the server has ended this socket (reads what is pending to find out)."""
    s.setblocking(False)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


# -- 3. and 4. grants made by Kazoo -------------------------------------------------------------


def reseller_daemon(switch: Any, tmp_path: Path, crossbar: Crossbar, **kazoo: Any) -> Daemon:
    conf = tmp_path / "channelsd.toml"
    section = {
        "public_keys": {KID: str(cluster().write(tmp_path))},
        "crossbar_url": crossbar.url,
        **kazoo,
    }
    conf.write_text(toml_text(config_dict([switch], kazoo=section)))
    daemon = Daemon(load(conf))
    daemon.start()
    Harness(daemon).wait_ready()
    return daemon


def test_a_subscribe_waiting_on_kazoo_during_a_reload_that_revokes_its_token_is_refused(
    switch: Any, tmp_path: Path, crossbar: Crossbar
) -> None:
    daemon = reseller_daemon(switch, tmp_path, crossbar, crossbar_timeout=3)
    clients: list[WsClient] = []
    try:
        h = Harness(daemon)
        tok = cluster().token("acc1")
        crossbar.allowed.add((tok, "acc2"))
        crossbar.delay = 1.0
        c = WsClient(ws_url(h))
        clients.append(c)
        c.send(
            {
                "action": "subscribe",
                "auth_token": tok,
                "request_id": "in-flight",
                "data": {"account_id": "acc2", "binding": "call.*.*"},
            }
        )
        wait_until(lambda: crossbar.in_flight, what="Kazoo asked")
        # Meanwhile a reload replaces the Kazoo key (a key reset on Kazoo).
        data = config_dict(
            [switch],
            kazoo={
                "public_keys": {KID: str(Cluster().write(_fresh_dir(tmp_path)))},
                "crossbar_url": crossbar.url,
                "crossbar_timeout": 3,
            },
        )
        (tmp_path / "channelsd.toml").write_text(toml_text(data))
        assert daemon.reload()
        reply = c.reply_to("in-flight")
        assert reply["status"] == "error"
        assert reply["data"]["errors"] == ["failed to authenticate token"]
        assert len(daemon.ctx.websockets.subscriptions) == 0
        assert not daemon.ctx.websockets.hub._index
        # A channelsd token on the same socket is unaffected.
        assert c.subscribe(token("admin2"), "acc2", "call.*.*")["status"] == "success"
        a, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        wait_until(lambda: a in call_ids(c), what="the kept token's event")
    finally:
        for c in clients:
            c.close()
        daemon.stop()


def _fresh_dir(tmp_path: Path) -> Path:
    d = tmp_path / f"keys-{time.monotonic_ns()}"
    d.mkdir()
    return d


def test_a_grant_made_by_kazoo_is_asked_again_when_its_answer_runs_out(
    switch: Any, tmp_path: Path, crossbar: Crossbar
) -> None:
    daemon = reseller_daemon(
        switch, tmp_path, crossbar, crossbar_timeout=1, descendants_cache_seconds=0.5
    )
    clients: list[WsClient] = []
    try:
        h = Harness(daemon)
        tok = cluster().token("acc1")
        crossbar.allowed.add((tok, "acc2"))
        below, own = WsClient(ws_url(h)), WsClient(ws_url(h))
        clients += [below, own]
        assert below.subscribe(tok, "acc2", "call.*.*")["status"] == "success"
        assert own.subscribe(tok, "acc1", "call.*.*")["status"] == "success"
        # While Kazoo says yes, it is asked again as its answer runs out, and events flow.

        def asked(path: str) -> int:
            return [p for _, p in crossbar.asked].count(path)

        wait_until(lambda: asked("/v2/accounts/acc2") >= 3, timeout=10, what="asked again")
        a, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        wait_until(lambda: a in call_ids(below), what="the descendant's event")
        assert not below.closed
        # Kazoo now says no (the sub-account moved away): the socket closes.
        crossbar.allowed.clear()
        wait_until(lambda: below.closed, timeout=5, what="the withdrawn grant's socket closed")
        assert below.closed == (1008, "access to the account not confirmed")
        b, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        c1, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: c1 in call_ids(own), what="the own account's event")
        assert b not in call_ids(below)
        assert asked("/v2/accounts/acc1") == 0  # its own account: never a question
        # monster-ui reconnects and subscribes again: refused now, in the reply.
        again = WsClient(ws_url(h))
        clients.append(again)
        assert again.subscribe(tok, "acc2", "call.*.*")["data"]["errors"] == [
            "unauthorized account id"
        ]
    finally:
        for c in clients:
            c.close()
        daemon.stop()
