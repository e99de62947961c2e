"""channel_events: a Server-Sent Events stream of the table, over real HTTP."""

import json
from typing import Any

import gevent
import pytest
import requests

from conftest import Harness, token, wait_until

ACC1 = {"account_id": "acc1", "owner_id": "user1"}
ACC1_OTHER = {"account_id": "acc1", "owner_id": "user2"}
ACC2 = {"account_id": "acc2"}


class Subscriber:
    """Reads an SSE stream in a greenlet; events land in .events as dicts."""

    def __init__(
        self, h: Harness, path: str, tok: str = "admin1", last_id: str | None = None
    ) -> None:
        headers = {"X-Auth-Token": token(tok), "Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        self.resp = requests.get(h.api.base + path, headers=headers, stream=True, timeout=30)
        self.events: list[dict[str, Any]] = []
        self.greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        event: dict[str, Any] = {}
        for raw in self.resp.iter_lines(decode_unicode=True):
            if raw == "":
                if event:
                    event["data"] = json.loads(event["data"])
                    self.events.append(event)
                event = {}
            elif raw.startswith(":"):
                continue
            else:
                key, _, value = raw.partition(": ")
                event[key] = value

    def wait_for(self, kind: str, pred: Any = lambda data: True) -> dict[str, Any]:
        def found() -> Any:
            return next((e for e in self.events if e["event"] == kind and pred(e["data"])), None)

        return wait_until(found, what=f"{kind} event")

    def wait_for_state(self, uuid: str, **want: Any) -> None:
        """Until the last message about `uuid` (create or update) shows these values."""

        def state() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            for e in self.events:
                d = e["data"]
                if e["event"] == "create" and d["uuid"] == uuid:
                    seen = dict(d)
                elif e["event"] == "update" and d["uuid"] == uuid:
                    seen.update(d["changed"])
            return seen

        wait_until(lambda: all(state().get(k) == v for k, v in want.items()), what=f"{want}")

    def close(self) -> None:
        self.greenlet.kill()
        self.resp.close()


@pytest.fixture
def sub(daemon: Harness) -> Any:
    made: list[Subscriber] = []

    def make(*args: Any, **kw: Any) -> Subscriber:
        s = Subscriber(daemon, *args, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_snapshot_then_create_update_destroy(daemon: Harness, switch: Any, sub: Any) -> None:
    a, b = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: daemon.table.get(b) is not None)
    s = sub("/v2/accounts/acc1/channel_events")
    assert s.resp.status_code == 200
    assert s.resp.headers["Content-Type"] == "text/event-stream"
    snap = s.wait_for("snapshot")
    assert {i["uuid"] for i in snap["data"]} == {a, b}
    c, d = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    created = s.wait_for("create", lambda data: data["uuid"] == c)
    assert created["data"]["account_id"] == "acc1"
    switch.hold(a)
    upd = s.wait_for("update", lambda data: data["uuid"] == a and "is_onhold" in data["changed"])
    assert upd["data"]["changed"]["is_onhold"] is True
    switch.hangup(c)
    s.wait_for("destroy", lambda data: data["uuid"] == c)
    epochs = {e["id"].partition("-")[0] for e in s.events}
    ids = [int(e["id"].partition("-")[2]) for e in s.events]
    assert ids == sorted(ids) and len(epochs) == 1  # one run's ids, in order


def test_scope_roles_and_filters(daemon: Harness, switch: Any, sub: Any) -> None:
    everyone = sub("/v2/accounts/acc1/channel_events")
    mine = sub("/v2/accounts/acc1/channel_events", tok="user1")
    answered_only = sub("/v2/accounts/acc1/channel_events?filter_owner_id=user2")
    for s in (everyone, mine, answered_only):
        s.wait_for("snapshot")
    x, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
    u1, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    u2, _ = switch.bridged_call(variables_a=ACC1_OTHER, variables_b=ACC1_OTHER)
    everyone.wait_for("create", lambda d: d["uuid"] == u2)
    mine.wait_for("create", lambda d: d["uuid"] == u1)
    answered_only.wait_for("create", lambda d: d["uuid"] == u2)
    gevent.sleep(0.2)
    seen = {
        s: {e["data"].get("uuid") for e in s.events if e["event"] == "create"}
        for s in (everyone, mine, answered_only)
    }
    assert x not in seen[everyone]
    assert u2 not in seen[mine] and u1 in seen[mine]
    assert u1 not in seen[answered_only]
    other = requests.get(
        daemon.api.base + "/v2/accounts/acc2/channel_events",
        headers={"X-Auth-Token": token("admin1")},
        timeout=5,
    )
    assert other.status_code == 403 and other.headers["Content-Type"] == "application/json"
    system = requests.get(
        daemon.api.base + "/v2/channel_events", headers={"X-Auth-Token": token("admin1")}, timeout=5
    )
    assert system.status_code == 403


def test_token_in_the_query_string_works_for_eventsource(daemon: Harness) -> None:
    resp = requests.get(
        daemon.api.base + "/v2/channel_events",
        params={"auth_token": token("super")},
        stream=True,
        timeout=5,
    )
    try:
        assert resp.status_code == 200
        first = next(resp.iter_lines(decode_unicode=True))
        assert first.startswith("id: ")
    finally:
        resp.close()


def test_resume_with_last_event_id_gets_what_was_missed(
    daemon: Harness, switch: Any, sub: Any
) -> None:
    s = sub("/v2/accounts/acc1/channel_events")
    s.wait_for("snapshot")
    a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    last = s.wait_for("create", lambda d: d["uuid"] == a)["id"]
    s.close()
    b, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)  # while disconnected
    switch.hangup(a)
    again = sub("/v2/accounts/acc1/channel_events", last_id=last)
    again.wait_for("create", lambda d: d["uuid"] == b)
    again.wait_for("destroy", lambda d: d["uuid"] == a)
    assert not [e for e in again.events if e["event"] == "snapshot"]


def test_resume_after_too_much_was_missed_starts_with_a_snapshot(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch], api={"event_buffer": 100})
    a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: h.table.get(a) is not None)
    first = Subscriber(h, "/v2/accounts/acc1/channel_events")
    last = first.wait_for("snapshot")["id"]
    first.close()
    broker = h.daemon.ctx.broker
    seen = int(last.rsplit("-", 1)[1])
    made = [switch.bridged_call(variables_a=ACC1, variables_b=ACC1)[0] for _ in range(30)]
    # Published: 60 creates (waited for, not slept on: a busy machine took longer than 0.3 s;
    # the broker merges what one channel did between two publishings into one message).
    wait_until(lambda: broker.seq >= seen + 60, what="the creates published")
    for x in made:
        switch.hangup(x)
    # and 60 destroys: more than the 100 the ring keeps
    wait_until(lambda: broker.since(seen) is None, what="the destroys published")
    again = Subscriber(h, "/v2/accounts/acc1/channel_events", last_id=last)
    try:
        snap = again.wait_for("snapshot")
        assert a in {i["uuid"] for i in snap["data"]}
    finally:
        again.close()


def test_many_subscribers_all_get_every_change(daemon: Harness, switch: Any, sub: Any) -> None:
    subs = [sub("/v2/channel_events", tok="super") for _ in range(20)]
    for s in subs:
        s.wait_for("snapshot")
    made = [switch.bridged_call(variables_a=ACC1, variables_b=ACC2)[0] for _ in range(5)]
    for s in subs:
        for uuid in made:
            s.wait_for("create", lambda d, u=uuid: d["uuid"] == u)


def test_a_node_going_stale_and_back_is_streamed(daemon: Harness, switch: Any, sub: Any) -> None:
    a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: daemon.table.get(a) is not None)
    s = sub("/v2/accounts/acc1/channel_events")
    s.wait_for("snapshot")
    switch.pause_accept(True)
    switch.drop_connections()
    # Changes within one publish interval go out as one message: the channel may still be
    # new to the stream (a create carrying stale) or an update of it.
    s.wait_for_state(a, stale=True)
    switch.pause_accept(False)
    s.wait_for_state(a, stale=False)


def test_stopping_the_daemon_ends_open_streams(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    s = Subscriber(h, "/v2/channel_events", tok="super")
    s.wait_for("snapshot")
    h.daemon.stop()
    wait_until(lambda: s.greenlet.dead, what="stream ended")
    s.close()


def test_the_access_log_masks_a_token_in_the_url(caplog: Any) -> None:
    import logging

    from channelsd.daemon import _AccessLog

    caplog.set_level(logging.DEBUG, logger="channelsd")
    _AccessLog().write(
        '127.0.0.1 - - "GET /v2/channel_events?auth_token=s3cret&x=1 HTTP/1.1" 200\n'
    )
    assert "s3cret" not in caplog.text and "auth_token=********&x=1" in caplog.text


class RawSubscriber(Subscriber):
    """A Subscriber for a token given as its text (not one of conftest's TOKENS)."""

    def __init__(self, base: str, path: str, text: str) -> None:
        headers = {"X-Auth-Token": text, "Accept": "text/event-stream"}
        self.resp = requests.get(base + path, headers=headers, stream=True, timeout=30)
        self.events: list[dict[str, Any]] = []
        self.greenlet = gevent.spawn(self._read)


def test_a_reload_closes_the_streams_of_removed_and_changed_tokens(
    switch: Any, tmp_path: Any, figure: Any
) -> None:
    from channelsd.config import load
    from channelsd.daemon import Daemon
    from channelsd.tokens import digest

    names = ("removed", "demoted", "moved", "renamed", "kept")

    def write(tokens: dict[str, str]) -> None:
        blocks = "".join(
            f'[[tokens]]\nname = "{label}"\nsha256 = "{digest(name)}"\n{grants}'
            for name, (label, grants) in tokens.items()
        )
        conf.write_text(
            f'[http]\nport = 0\n[[nodes]]\nname = "fs1"\nhost = "127.0.0.1"\n'
            f'port = {switch.port}\npassword = "ClueCon"\n{blocks}'
        )

    admin = 'account_id = "acc1"\nrole = "admin"\n'
    conf = tmp_path / "channelsd.toml"
    write({n: (n, admin) for n in names})
    daemon = Daemon(load(conf))
    daemon.start()
    subs = {}
    try:
        host, port = daemon.http_address
        base = f"http://{host}:{port}"
        wait_until(lambda: daemon.nodes["fs1"].state == "ready", what="ready")
        subs = {n: RawSubscriber(base, "/v2/accounts/acc1/channel_events", n) for n in names}
        for s in subs.values():
            s.wait_for("snapshot")
        assert len(daemon.ctx.subscriptions) == 5
        write(
            {
                "demoted": ("demoted", 'account_id = "acc1"\nrole = "user"\nowner_id = "u1"\n'),
                "moved": ("moved", 'account_id = "acc2"\nrole = "admin"\n'),
                "renamed": ("a new label only", admin),
                "kept": ("kept", admin),
            }
        )
        assert daemon.reload()
        ended = ("removed", "demoted", "moved")
        for n in ended:
            wait_until(lambda n=n: subs[n].greenlet.dead, what=f"the {n} token's stream ended")
        seen = {n: len(subs[n].events) for n in ended}
        a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        for n in ("renamed", "kept"):
            subs[n].wait_for("create", lambda d: d["uuid"] == a)
            assert not subs[n].greenlet.dead
        gevent.sleep(0.3)  # a publish interval and more: nothing reaches the ended streams
        assert {n: len(subs[n].events) for n in ended} == seen
        assert len(daemon.ctx.subscriptions) == 2
        text = requests.get(base + "/metrics", timeout=5).text
        assert "channelsd_streams_revoked_total 3.0" in text
        # The removed token is refused from now on.
        again = requests.get(
            base + "/v2/accounts/acc1/channel_events",
            headers={"X-Auth-Token": "removed"},
            timeout=5,
        )
        assert again.status_code == 401
    finally:
        for s in subs.values():
            s.close()
        daemon.stop()
    figure(
        "revoked streams: a reload removed, demoted and moved tokens",
        cases=5,
        held=5,
        ended=3,
        events_after_reload_on_ended_streams=0,
    )


def test_a_stream_whose_client_left_gives_its_place_back_at_once(daemon: Harness) -> None:
    s = Subscriber(daemon, "/v2/accounts/acc1/channel_events")
    s.wait_for("snapshot")
    assert len(daemon.daemon.ctx.subscriptions) == 1
    s.close()
    # Not at the next keepalive write (15 s): the server watches the socket.
    wait_until(lambda: len(daemon.daemon.ctx.subscriptions) == 0, what="place given back")


# -- found by an outside attack ----------------------------------------------------------------

TWIN = "77777777-7777-4777-8777-777777777777"


def test_the_same_uuid_on_two_nodes_is_two_channels_on_the_stream(
    make_switch: Any, make_daemon: Any
) -> None:
    one, two = make_switch(), make_switch()
    h = make_daemon([one, two])
    one.originate(dest="9003", variables={**ACC1, "origination_uuid": TWIN})
    wait_until(lambda: h.table.row("fs1", TWIN) is not None)
    mine = Subscriber(h, "/v2/accounts/acc1/channel_events")
    try:
        mine.wait_for("snapshot")
        # acc2's call with the same uuid on the other node comes and goes, with acc1's own
        # call changing in the same publish interval.
        two.originate(dest="9003", variables={**ACC2, "origination_uuid": TWIN})
        gevent.sleep(0.03)
        one.hold(TWIN)
        mine.wait_for_state(TWIN, is_onhold=True)
        two.hangup(TWIN, "CALL_REJECTED")
        wait_until(lambda: h.table.row("fs2", TWIN) is None, what="acc2's twin gone")
        gevent.sleep(0.3)  # published
        assert [e for e in mine.events if e["event"] == "destroy"] == []  # acc1's is still up
        assert all(e["data"].get("node", "fs1") == "fs1" for e in mine.events[1:])
    finally:
        mine.close()


@pytest.mark.parametrize("last_id", ["²", "1" * 5000, "9" * 4301, "abc-1", "-1", "0x10"])
def test_any_last_event_id_is_a_fresh_snapshot_never_an_error(
    daemon: Harness, sub: Any, last_id: str
) -> None:
    s = sub("/v2/accounts/acc1/channel_events", last_id=last_id)
    assert s.resp.status_code == 200
    s.wait_for("snapshot")


def test_an_id_from_before_a_restart_of_the_daemon_gets_a_snapshot(
    switch: Any, make_daemon: Any
) -> None:
    first = make_daemon([switch])
    s = Subscriber(first, "/v2/accounts/acc1/channel_events")
    s.wait_for("snapshot")
    a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    last = s.wait_for("create", lambda d: d["uuid"] == a)["id"]
    s.close()
    first.daemon.stop()
    again = make_daemon([switch])  # the daemon restarted; its ids start again
    busy = Subscriber(again, "/v2/accounts/acc1/channel_events")  # keeps its ring filled
    for _ in range(10):
        switch.hold(a)
        gevent.sleep(0.12)
        switch.unhold(a)
        gevent.sleep(0.12)
    resumed = Subscriber(again, "/v2/accounts/acc1/channel_events", last_id=last)
    try:
        snap = resumed.wait_for("snapshot")
        assert a in {i["uuid"] for i in snap["data"]}
    finally:
        busy.close()
        resumed.close()


def test_subscribers_of_one_kind_share_a_feed_and_its_work(
    daemon: Harness, switch: Any, sub: Any, monkeypatch: Any
) -> None:
    """The work of deciding what a message means for a subscriber, and of serialising it, is
    done once per feed (scope, owner narrowing, filters), not once per subscriber: a crowd of
    dashboards on one account costs the publishing of one."""
    import channelsd.feeds as feeds

    decided = []
    real = feeds.frame_for

    def counting(*args: Any) -> Any:
        decided.append(args[1].seq)
        return real(*args)

    monkeypatch.setattr(feeds, "frame_for", counting)
    crowd = [sub("/v2/accounts/acc1/channel_events") for _ in range(12)]
    answered = sub("/v2/accounts/acc1/channel_events?filter_answered=true")
    for s in [*crowd, answered]:
        s.wait_for("snapshot")
    broker = daemon.daemon.ctx.broker
    assert len(broker.feeds) == 2  # the crowd's, and the filtered one's
    a, b = switch.bridged_call(variables_a=ACC1, variables_b=ACC1, answer=False)
    for s in crowd:
        s.wait_for("create", lambda d: d["uuid"] == a)
    switch.answer(b)
    answered.wait_for("create", lambda d: d["uuid"] == a)
    switch.hangup(a)
    for s in [*crowd, answered]:
        s.wait_for("destroy", lambda d: d["uuid"] == a)
    # Each message was decided once per feed: twice, whatever the size of the crowd.
    assert decided and max(decided.count(seq) for seq in set(decided)) <= 2
    # And every member of the crowd was sent the same bytes.
    streams = {
        tuple((e["event"], json.dumps(e["data"], sort_keys=True)) for e in s.events[1:])
        for s in crowd
    }
    assert len(streams) == 1


def test_a_resumed_stream_answers_at_once_on_a_quiet_account(
    daemon: Harness, switch: Any, sub: Any
) -> None:
    """Resuming from the newest id: nothing was missed and nothing happens, yet the status
    line must come now, not with the keepalive 15 s later."""
    s = sub("/v2/accounts/acc1/channel_events")
    s.wait_for("snapshot")
    a, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    last = s.wait_for("create", lambda d: d["uuid"] == a)["id"]
    s.close()
    headers = {"X-Auth-Token": token("admin1"), "Last-Event-ID": last}
    # timeout: the headers within 5 s (the keepalive is 15 s), a bound against the hang
    with requests.get(
        daemon.api.base + "/v2/accounts/acc1/channel_events",
        headers=headers,
        stream=True,
        timeout=5,
    ) as resp:
        assert resp.status_code == 200
        assert next(resp.iter_lines()) == b": resumed"


@pytest.mark.parametrize("calls, slow", [(20, False), (400, True)])
def test_a_large_chunk_of_a_stream_is_framed_exactly(
    daemon: Harness, switch: Any, calls: int, slow: bool
) -> None:
    """A chunk at or above httpserver.COPY_CHUNK_BELOW goes out as its size line, itself and
    its CRLF in one sendmsg (no copy): read off the wire, its framing is exact; also when
    the reader's socket takes far less than the chunk at once (the rest follows)."""
    import socket

    from channelsd import httpserver

    for _ in range(calls):
        switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: len(daemon.table) >= 2 * calls, what=f"{2 * calls} channels")
    host, port = daemon.daemon.http_address
    s = socket.socket()
    if slow:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((host, port))
    with s:
        s.sendall(
            b"GET /v2/accounts/acc1/channel_events HTTP/1.1\r\nHost: x\r\n"
            b"X-Auth-Token: %s\r\n\r\n" % token("admin1").encode()
        )
        if slow:
            gevent.sleep(0.3)  # the daemon meets a full socket and must come back
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        assert b"Transfer-Encoding: chunked" in head
        while b"\r\n" not in rest:
            rest += s.recv(65536)
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += s.recv(65536)
    assert size >= httpserver.COPY_CHUNK_BELOW  # the snapshot of 40 channels
    chunk, trailer = rest[:size], rest[size : size + 2]
    assert trailer == b"\r\n"
    assert chunk.startswith(b"id: ") and chunk.endswith(b"\n\n")
    event = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n"))
    assert event["event"] == "snapshot" and len(json.loads(event["data"])) == 2 * calls
    if slow:
        assert size > 64 * 4096  # far beyond what the socket took at once
