"""A closed HTTP connection is freed at once, by reference counting (found by an outside attack).

Each connection's handler sat in reference cycles: its environ held bound methods of the
handler, and its reader held the handler. Only the interpreter's full collections freed them
(~14 KB a connection, socket and buffers included), so under a churn of short connections the
process grew between collections, and each collection had all of them to walk. Over real
sockets, with the collector off: nothing of a closed connection may be left.
"""

from __future__ import annotations

import gc
import socket
from typing import Any

import gevent

from channelsd.httpserver import Handler

from conftest import token, wait_until

ACC1 = {"account_id": "acc1"}


def exchange(port: int, request: bytes, read_until: bytes | None = None) -> bytes:
    """One request on a fresh connection, read to the end (or to `read_until`), closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        got = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += data
            if read_until is not None and read_until in got:
                break
    return got


def handlers() -> list[Any]:
    return [o for o in gc.get_objects() if isinstance(o, Handler)]


def test_closed_connections_leave_nothing_for_the_collector(switch: Any, make_daemon: Any) -> None:
    switch.originate(dest="9003", variables=ACC1)
    h = make_daemon([switch])
    port = h.daemon.http_address[1]
    auth = token("admin1").encode()
    plain = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    listed = (
        b"GET /v2/accounts/acc1/channels HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + auth + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    # (Not a 404: Flask keeps the request in its exception's traceback, a cycle through the
    # frames that the next young collection frees.)
    stream = (
        b"GET /v2/accounts/acc1/channel_events HTTP/1.1\r\nHost: x\r\nX-Auth-Token: "
        + auth
        + b"\r\nAccept: text/event-stream\r\n\r\n"
    )
    exchange(port, plain)  # anything created once per process exists before the count
    gc.collect()
    gc.disable()
    try:
        assert b"200 OK" in exchange(port, plain)
        assert b"200 OK" in exchange(port, listed)
        assert b"event: snapshot" in exchange(port, stream, read_until=b"event: snapshot")
        wait_until(lambda: not h.daemon.http.connections, what="every connection closed")
        gevent.sleep(0.1)  # the stream's greenlets see the close
        left = handlers()
    finally:
        gc.enable()
    assert left == [], f"{len(left)} handlers of closed connections kept by reference cycles"
