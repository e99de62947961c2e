"""Attacks on the websocket courier (channelsd.sendmany, channelsd_sendmany and the sessions'
side of it in channelsd.blackhole.session), over real sockets and a real daemon. Each test
names what was wrong."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

import pytest
from channelsd_sendmany import send_each as c_send_each
from kazoo_support import WsClient
from test_websocket import ACC1, call_ids, ws_url

from channelsd import sendmany

from conftest import Harness, token, wait_until


def test_a_socket_accepted_at_the_descriptor_limit_is_served_not_dropped(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each websocket now holds two descriptors (its socket and the courier's os.dup of it),
    while the open-file budget (httpserver.connection_budget) counts one per connection. A
    socket accepted near RLIMIT_NOFILE got its 101 and then Session.run's os.dup raised
    EMFILE out of the handler: the client was dropped (1006) with a traceback, where before
    the change it was served. Without a descriptor of its own the session can still be
    served by its writer (the courier never claims a session whose line has no descriptor)."""
    h: Harness = make_daemon([switch])

    def no_more(fd: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    # The courier's duplicates only (sendmany.Line): the daemon's other descriptors are
    # untouched.
    monkeypatch.setattr(sendmany, "_dup", no_more)
    c = WsClient(ws_url(h))
    try:
        assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        a, b = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: {a, b} <= set(call_ids(c)), what="the events")
        assert c.closed is None
    finally:
        c.close()


def test_a_send_that_fails_on_the_hub_leaves_no_session_claimed(
    switch: Any, make_daemon: Any
) -> None:
    """Courier._carry told the owners of a failed send call only on the threaded path: a call
    made on the hub (a publish under thread_bytes, or send_each_python where the C is not
    built) that raised (MemoryError from the C's allocations or PyList_New) left every
    claimed session with _in_flight set for ever: its writer waits for bytes that never
    come back (no reply, ping or close frame is ever written again), and its os.dup is never
    closed, which also keeps the TCP connection open after the session ended."""
    h: Harness = make_daemon([switch])
    service = h.daemon.ctx.websockets
    courier = service.hub._courier
    assert courier.thread_bytes > 4096  # these publishes are small: sent on the hub
    failures = [0]

    def fails_once(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
        if not failures[0]:
            failures[0] += 1
            raise MemoryError
        return c_send_each(fds, datas)

    courier._send = fails_once
    c = WsClient(ws_url(h))
    try:
        assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        (session,) = service.sessions
        switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: failures[0], what="the failed publish")
        # Told (an error: the session is dropped), not left claimed.
        wait_until(lambda: session._line.in_flight is None, timeout=3, what="the owner told")
        wait_until(lambda: c.closed, what="the socket dropped")
        wait_until(lambda: session not in service.sessions, what="the session's end")
        wait_until(lambda: session._line.fd == -1, what="its descriptor closed")
    finally:
        c.close()


class _Nothing:
    """A reload's grants in which no token is left (every subscription is revoked)."""

    def current(self, token: Any) -> None:
        return None


def test_a_revocation_right_after_a_partial_send_keeps_the_cut_frame_whole(
    switch: Any, make_daemon: Any
) -> None:
    """When the courier's send is short, Session.sent queues the rest of the cut frame first
    in _out, for the writer. A token revoked (a reload, exp, Kazoo's grant withdrawn) before
    the writer took it closes with discard=True, which cleared _out: the first part of a
    frame was on the wire and its rest dropped, so the 1008 close frame's bytes were read as
    that frame's payload. The client sees a broken stream (1006, garbage JSON), never the
    close. What is discarded must be whole frames only: the cut frame's rest stays."""
    h: Harness = make_daemon([switch])
    service = h.daemon.ctx.websockets
    hub = service.hub
    courier = hub._courier

    def takes_half(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
        return c_send_each(fds, [d[: len(d) // 2] for d in datas])  # a slow reader's socket

    courier._send = takes_half
    revoked = [0]

    class ThenRevoke:
        def __call__(self, pairs: list[Any]) -> None:
            courier(pairs)
            # A reload's revocation run before the session's writer got its turn.
            if not revoked[0] and any(s._out for s, _ in pairs):
                revoked[0] = service.subscriptions.revoke_changed(_Nothing())

        close = courier.close

    hub._courier = ThenRevoke()
    c = WsClient(ws_url(h))
    try:
        assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: revoked[0], what="the revocation")
        wait_until(lambda: c.closed, what="the close")
        assert c.closed == (1008, "token revoked")  # every frame whole, the close read
    finally:
        c.close()
