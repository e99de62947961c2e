"""Kazoo's websocket: the hub writes a batch itself to a socket whose writer is idle (no wake-up
of the writer greenlet per socket and batch), over real sockets. Whoever writes, each socket
gets its events once and in order, also when its socket takes only part of a batch."""

from pathlib import Path
from typing import Any

import gevent
import pytest
from kazoo_support import KID, WsClient, cluster

from channelsd.blackhole.session import Session

from conftest import Harness, calls_until, token, wait_until

ACC1 = {"account_id": "acc1", "owner_id": "user1", "domain_name": "acc1.example"}


@pytest.fixture
def wsd(switch: Any, make_daemon: Any, tmp_path: Path) -> Harness:
    keys = {KID: str(cluster().write(tmp_path))}
    # A queue large enough that the paused client of the second test is not dropped as too
    # slow: what is tested is that the rest of a batch comes, in order.
    return make_daemon(
        [switch], kazoo={"public_keys": keys}, websocket={"send_queue_bytes": 8 * 1024 * 1024}
    )


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of what each socket's writer greenlet wrote (replies, and batches the socket
    did not take at once)."""
    sizes: list[int] = []
    real = Session._sendall

    def counting(self: Session, data: bytes) -> None:
        sizes.append(len(data))
        real(self, data)

    monkeypatch.setattr(Session, "_sendall", counting)
    return sizes


def ws_url(h: Harness) -> str:
    host, port = h.daemon.http_address
    return f"ws://{host}:{port}/websocket"


def created(c: WsClient) -> list[str]:
    return [e["data"]["call_id"] for e in c.events("CHANNEL_CREATE")]


def test_readers_get_every_batch_without_their_writer(
    switch: Any, wsd: Harness, writes: list[int]
) -> None:
    clients = [WsClient(ws_url(wsd)) for _ in range(10)]
    try:
        for c in clients:
            assert c.subscribe(token("admin1"), "acc1", "call.CHANNEL_CREATE.*")["status"] == (
                "success"
            )
        replies = len(writes)  # the subscribe replies go through each writer
        legs = []
        for _ in range(6):
            legs += switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
            gevent.sleep(0.15)  # a publish each
        for c in clients:
            wait_until(lambda c=c: len(created(c)) == len(legs), what="every create")
        assert len(writes) == replies  # no event batch needed a writer
        for c in clients:
            assert created(c) == created(clients[0])
        assert set(created(clients[0])) == set(legs)
    finally:
        for c in clients:
            c.close()


def test_a_socket_that_takes_part_of_a_batch_gets_the_rest_in_order(
    switch: Any, wsd: Harness, writes: list[int]
) -> None:
    fast, slow = WsClient(ws_url(wsd)), WsClient(ws_url(wsd))
    try:
        for c in (fast, slow):
            assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        replies = len(writes)
        slow.greenlet.kill()  # it stops reading: its socket fills
        # until a batch was left to the writer
        calls_until(wsd, switch, lambda: len(writes) > replies, ACC1)
        slow.greenlet = gevent.spawn(slow._read)  # reads again
        last = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0]
        for c in (fast, slow):
            wait_until(lambda c=c: last in created(c), what="the last call", timeout=30)
        assert slow.closed is None
        key = "call.*.*"
        assert [(e["name"], e["data"]["call_id"]) for e in slow.events(key=key)] == [
            (e["name"], e["data"]["call_id"]) for e in fast.events(key=key)
        ]
    finally:
        fast.close()
        slow.close()
