"""Connection floods over real loopback against a real daemon: silent, half-sent and
byte-a-second sockets, crowds beyond the connection limit, clients that never read, and a
process out of descriptors. Timeouts are configured short so that it runs fast; the
measured /healthz latencies go to test-artifacts/reliability.json (RELIABILITY.md).

RELIABILITY_SCALE=5 holds the flood for 20 s instead of 4.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests

from channelsd import turns

from conftest import Harness, count_pauses, metric, token, wait_until

ROOT = Path(__file__).resolve().parent.parent
SCALE = int(os.environ.get("RELIABILITY_SCALE", "1"))
SHORT = {"header_timeout": 1.0, "idle_timeout": 1.0, "body_timeout": 1.0, "send_timeout": 1.0}
HANG = 10.0  # a bound against hangs, never a speed assertion
KINDS = ("idle", "half headers", "half body", "byte a second")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def healthz(base: str) -> tuple[int, float]:
    """A monitoring probe: a fresh connection, GET /healthz; (status, seconds)."""
    began = time.perf_counter()
    resp = requests.get(base + "/healthz", timeout=HANG, headers={"Connection": "close"})
    return resp.status_code, time.perf_counter() - began


class Attacker:
    """Keeps one hostile socket of its kind open: when the server closes it, opens the next
    (after `reopen_after` seconds), as a slow-loris tool does. Records how long each lived."""

    OPENING = {
        "idle": b"",
        "half headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        "half body": (
            b"POST /v2/accounts/acc1/channels/x HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"data": {'
        ),
        "byte a second": b"GET /healthz HTTP/1.1\r\n",
    }

    def __init__(
        self,
        address: tuple[str, int],
        kind: str,
        trickle: float = 0.2,
        reopen_after: float = 0.0,
    ) -> None:
        self.address = address
        self.kind = kind
        self.reopen_after = reopen_after
        self.trickle = trickle  # faster than any per-read timeout would cut
        self.lifetimes: list[float] = []
        self.answers: list[bytes] = []
        self.held = 0  # sockets the server left open past the hang bound
        self.running = True
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while self.running:
            try:
                self._one()
            except OSError:
                gevent.sleep(0.05)  # connect refused or reset at connect: try again
            gevent.sleep(self.reopen_after)

    def _one(self) -> None:
        s = socket.create_connection(self.address, timeout=HANG)
        opened = time.monotonic()
        try:
            if self.OPENING[self.kind]:
                s.sendall(self.OPENING[self.kind])
            received = b""
            while self.running:
                if time.monotonic() - opened > HANG:
                    self.held += 1
                    return
                s.settimeout(self.trickle)
                try:
                    data = s.recv(65536)
                except TimeoutError:
                    if self.kind == "byte a second":
                        s.sendall(b"X")  # one more byte of an endless header
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    self.lifetimes.append(time.monotonic() - opened)
                    if received:
                        self.answers.append(received)
                    return
                received += data
        finally:
            s.close()

    def stop(self) -> None:
        self.running = False
        self.greenlet.join(timeout=HANG)


def test_300_hostile_sockets_are_closed_and_healthz_keeps_answering(
    switch: Any, make_daemon: Any, figure: Any
) -> None:
    h = make_daemon([switch], http=SHORT)
    address = h.daemon.http_address
    attackers = [Attacker(address, KINDS[i % 4]) for i in range(300)]
    duration = 4.0 * SCALE
    samples: list[float] = []
    statuses: list[int] = []
    try:
        wait_until(lambda: len(h.daemon.http.connections) >= 250, what="the flood is up")
        ends = time.monotonic() + duration
        while time.monotonic() < ends:
            status, seconds = healthz(h.api.base)
            statuses.append(status)
            samples.append(seconds)
            gevent.sleep(0.02)
    finally:
        for a in attackers:
            a.running = False
        for a in attackers:
            a.stop()
    assert set(statuses) == {200}
    held = sum(a.held for a in attackers)
    assert held == 0, f"{held} hostile sockets were still open after {HANG} s"
    lifetimes = [t for a in attackers for t in a.lifetimes]
    by_kind = {k: [t for a in attackers if a.kind == k for t in a.lifetimes] for k in KINDS}
    assert all(by_kind.values()), "every kind of hostile socket was closed at least once"
    # Half-sent requests get a 408 in the API's envelope; a silent socket is just closed.
    for answer in [x for a in attackers if a.kind == "half headers" for x in a.answers]:
        assert answer.startswith(b"HTTP/1.1 408 ") and b'"error":"408"' in answer, answer[:200]
    assert metric(h, 'channelsd_http_connections_closed_total{reason="header_timeout"}') > 0
    assert metric(h, 'channelsd_http_connections_closed_total{reason="body_timeout"}') > 0
    figure(
        "connection flood: 300 hostile sockets (idle, half headers, half body, byte a second)",
        cases=len(lifetimes),
        held=len(lifetimes),
        still_open_after_hang_bound=held,
        flood_seconds=duration,
        timeouts_s=SHORT["header_timeout"],
        longest_hostile_socket_s=round(max(lifetimes), 2),
        healthz_requests=len(samples),
        healthz_ok=statuses.count(200),
        healthz_p50_ms=round(statistics.median(samples) * 1000, 1),
        healthz_p99_ms=round(percentile(samples, 99) * 1000, 1),
        healthz_max_ms=round(max(samples) * 1000, 1),
    )


def test_beyond_the_limit_waiting_sockets_make_room_for_real_requests(
    switch: Any, make_daemon: Any, figure: Any
) -> None:
    # Timeouts far away: only the limit's eviction can let /healthz in. The slow-loris tool
    # opens a new socket for each one closed, a second later (slowloris itself: 15 s).
    http = {"max_connections": 50, "max_streams": 10, "header_timeout": 60, "idle_timeout": 60}
    h = make_daemon([switch], http=http)
    address = h.daemon.http_address
    attackers = [Attacker(address, KINDS[i % 4], reopen_after=1.0) for i in range(300)]
    samples = []
    try:
        wait_until(lambda: len(h.daemon.http.connections) >= 50, what="the limit is reached")
        for _ in range(50 * SCALE):
            status, seconds = healthz(h.api.base)
            assert status == 200
            samples.append(seconds)
        assert len(h.daemon.http.connections) <= 50
    finally:
        for a in attackers:
            a.running = False
        for a in attackers:
            a.stop()
    evicted = metric(h, 'channelsd_http_connections_closed_total{reason="evicted"}')
    assert evicted >= 250  # every socket beyond the 50 made room by closing an older one
    figure(
        "connection flood beyond the limit: 300 slow sockets, max_connections 50",
        cases=len(samples),
        held=len(samples),
        evicted=int(evicted),
        healthz_p50_ms=round(statistics.median(samples) * 1000, 1),
        healthz_p99_ms=round(percentile(samples, 99) * 1000, 1),
    )


def open_stream(h: Harness, tok: str = "admin1") -> requests.Response:
    resp = requests.get(
        h.api.base + "/v2/accounts/acc1/channel_events",
        headers={"X-Auth-Token": token(tok)},
        stream=True,
        timeout=HANG,
    )
    return resp


def test_busy_connections_at_the_limit_get_a_503_in_the_envelope(
    switch: Any, make_daemon: Any, figure: Any
) -> None:
    h = make_daemon([switch], http={"max_connections": 3, "max_streams": 3})
    streams = [open_stream(h) for _ in range(3)]  # three busy connections: none evictable
    try:
        assert [s.status_code for s in streams] == [200, 200, 200]
        resp = h.api.get("/healthz", tok=None)
        assert resp.status_code == 503
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        body = resp.json()
        assert (body["status"], body["error"], body["message"]) == (
            "error",
            "503",
            "too many connections",
        )
        assert "max_connections" in body["data"]["message"]
    finally:
        streams[0].close()
    # A connection freed is a connection available.
    wait_until(lambda: h.api.get("/healthz", tok=None).status_code == 200, what="room again")
    for s in streams[1:]:
        s.close()
    figure("connection limit: busy connections refused with 503", cases=1, held=1)


def test_a_refused_client_that_keeps_sending_lets_the_hub_run(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch, figure: Any
) -> None:
    """A refused connection is read until its client closes (REFUSE_LINGER): a client that
    keeps sending finds data at every recv, which never visits the hub. Its reads take
    turns as a request's reader does, each PACE_READ_BYTES between polls (outside attack,
    round 32: three refused clients flooding from another process held the hub 45-100 ms at
    a time, up to the linger's whole second each)."""
    from test_metaflow_limits import RunLengths

    from channelsd import httpserver

    visits = count_pauses(monkeypatch, httpserver)
    monkeypatch.setattr(httpserver, "REFUSE_LINGER", HANG)  # (it reads the whole flood)
    read = [0]  # what the refused connection's reads took: the bound below is per byte read
    counted = httpserver._ReadPace.read

    def counting(pace: Any, n: int) -> None:
        read[0] += n
        counted(pace, n)

    monkeypatch.setattr(httpserver._ReadPace, "read", counting)
    h = make_daemon([switch], http={"max_connections": 3, "max_streams": 3})
    streams = [open_stream(h) for _ in range(3)]  # three busy connections: none evictable
    flood = b"x" * (8 << 20)

    def refused() -> bytes:
        with socket.create_connection(h.daemon.http_address, timeout=HANG) as s:
            s.sendall(flood)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while data := s.recv(65536):
                out += data
            return out

    try:
        clients: set[Any] = {gevent.getcurrent()}
        with RunLengths(clients) as runs:
            polled = turns.polls()
            job = gevent.spawn(refused)
            clients.add(job)
            answer = job.get(timeout=HANG * 2)
            polled = turns.polls() - polled
    finally:
        for s in streams:
            s.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
    # The hub had its turn at least once every two reads of 64 KiB: by the reader's visits,
    # or by a poll it made while the reader waited for the flood (the flooding client is a
    # greenlet of this process: on a slow machine the reader catches up with it now and
    # then, and bytes read after a poll start a new count; 62 visits and such polls failed
    # the visits alone once, on a loaded CI machine). Unpaced, only the waits would count:
    # a few polls for 8 MiB. Counted against the bytes the server's reads took, not those
    # sent (57 visits and 6 polls failed the bound of the bytes sent once, on a loaded
    # machine; beside a CPU loop, the reads took 3.2 of the 8 MiB within the linger's
    # HANG: the pacing is what is checked here, per byte read, over at least 1 MiB).
    assert read[0] >= 1 << 20, read[0]
    assert len(visits) + polled >= read[0] // (2 * 65536), (len(visits), polled, read[0])
    figure("hub stalls (refused flood)", bytes=len(flood), worst_ms=round(runs.worst * 1e3, 2))
    assert runs.worst < HANG  # against hangs only: the visits are the structural check


def test_streams_have_their_own_limit(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch], http={"max_streams": 2})
    first, second = open_stream(h), open_stream(h)
    try:
        third = open_stream(h)
        assert third.status_code == 503 and third.json()["message"] == "too many streams"
        assert third.headers["Retry-After"] == "5"
        assert h.api.get("/v2/accounts/acc1/channels", "admin1").status_code == 200
        first.close()
        # The closed stream's place is given back once the server notices the client left
        # (its next write: the keepalive at the latest) or at once when it ended cleanly.
        wait_until(lambda: len(h.daemon.ctx.subscriptions) < 2, timeout=30, what="released")
        fourth = open_stream(h)
        assert fourth.status_code == 200
        fourth.close()
    finally:
        first.close()
        second.close()


def test_a_stream_outlives_every_read_timeout(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch], http={**SHORT, "send_timeout": 5})
    resp = open_stream(h)
    lines = resp.iter_lines(decode_unicode=True)
    try:
        assert next(lines).startswith("id: ")
        gevent.sleep(3 * SHORT["idle_timeout"])  # idle, header and body timeouts all passed
        a, _ = switch.bridged_call(variables_a={"account_id": "acc1"})
        for line in lines:
            if line.startswith("data: ") and a in line:
                break
    finally:
        resp.close()


def test_a_client_that_stops_reading_is_closed_after_send_timeout(
    switch: Any, make_daemon: Any
) -> None:
    for _ in range(300):  # a list of 600 channels: far more than a tiny socket buffer
        switch.bridged_call(variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"})
    h = make_daemon([switch], http=SHORT)
    wait_until(lambda: len(h.table) >= 600, what="channels listed")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(h.daemon.http_address)
    # 40 pipelined requests, about 20 MB of answers: more than any socket buffer holds.
    ask = (
        f"GET /v2/accounts/acc1/channels HTTP/1.1\r\nHost: x\r\n"
        f"X-Auth-Token: {token('admin1')}\r\n\r\n"
    )
    s.sendall(ask.encode() * 40)
    try:
        name = 'channelsd_http_connections_closed_total{reason="send_timeout"}'
        wait_until(lambda: metric(h, name) >= 1, timeout=HANG, what="send timeout")
        assert h.api.get("/healthz", tok=None).status_code == 200
    finally:
        s.close()


def raw_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send `data`, then read until the server closes (bounded)."""
    s = socket.create_connection(address, timeout=HANG)
    try:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out
    finally:
        s.close()


def test_a_body_that_does_not_arrive_gets_408_in_the_envelope(
    switch: Any, make_daemon: Any
) -> None:
    a, _ = switch.bridged_call(variables_a={"account_id": "acc1"})
    h = make_daemon([switch], http=SHORT)
    wait_until(lambda: h.table.get(a) is not None)
    h.wait_ready()
    before = len(switch.received)
    answer = raw_exchange(
        h.daemon.http_address,
        f"POST /v2/accounts/acc1/channels/{a} HTTP/1.1\r\nHost: x\r\n"
        f"X-Auth-Token: {token('admin1')}\r\nContent-Type: application/json\r\n"
        'Content-Length: 100\r\n\r\n{"data": {"action"'.encode(),
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"Content-Type: application/json" in head
    assert b'"message":"request timeout"' in body
    assert switch.received[before:] == []  # nothing half-read reached the switch


def test_half_sent_headers_get_408_and_the_connection_closes(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch], http=SHORT)
    answer = raw_exchange(h.daemon.http_address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b'"error":"408"' in answer


def held_before_first_read(
    monkeypatch: pytest.MonkeyPatch, hold: float, phase: str | None = None
) -> list[bool]:
    """The hub held `hold` seconds (a real sleep: nothing else runs) just before the server's
    first read from a client (of a request body, with `phase` "body"), as a busy hub would.
    The list it returns is [True] once that happened; clear() it to hold the next one."""
    from channelsd import httpserver

    real = httpserver._Reader.readinto
    block = gevent.monkey.get_original("time", "sleep")
    held: list[bool] = []

    def readinto(self: Any, buffer: Any) -> int:
        if not held and phase in (None, self.conn.phase):
            held.append(True)
            block(hold)
        return real(self, buffer)

    monkeypatch.setattr(httpserver._Reader, "readinto", readinto)
    return held


def test_a_request_read_after_its_deadline_by_a_busy_hub_is_answered(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole request that came in time, in the socket when the server first looks, is
    answered even when the hub got to it after header_timeout: under load in CI a dozen such
    connections were closed with their request unread. A head still incomplete then is 408."""
    h = make_daemon([switch], http=SHORT)
    stalled = held_before_first_read(monkeypatch, SHORT["header_timeout"] + 0.3)
    answer = raw_exchange(h.daemon.http_address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert stalled and answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    stalled.clear()
    half = raw_exchange(h.daemon.http_address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert stalled and half.startswith(b"HTTP/1.1 408 "), half[:300]


STARVED = """
import os, resource, sys
from gevent import monkey
monkey.patch_all()
from channelsd import logs
from channelsd.config import load
from channelsd.daemon import Daemon

logs.setup("info")
daemon = Daemon(load(sys.argv[1]))
daemon.start()
used = len(os.listdir("/proc/self/fd"))
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 6, hard))
print(daemon.http_address[1], flush=True)
daemon.wait()
"""


def test_out_of_descriptors_logs_one_line_and_keeps_answering(
    switch: Any, tmp_path: Path, figure: Any
) -> None:
    """A real EMFILE: the daemon runs in its own process, whose open-file limit is lowered
    to a few descriptors above what it uses once it listens, and 60 silent sockets come."""
    conf = tmp_path / "channelsd.toml"
    conf.write_text(
        '[http]\nport = 0\nheader_timeout = 60\n[[nodes]]\nname = "fs1"\n'
        f'host = "127.0.0.1"\nport = {switch.port}\npassword = "ClueCon"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", STARVED, str(conf)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    silent = []
    try:
        port = int(proc.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        assert healthz(base)[0] == 200
        # The node connected first: a connect still under way when the descriptors run out
        # fails and is logged too (a slow start on a busy machine raced the flood here).
        wait_until(
            lambda: requests.get(base + "/readyz", timeout=HANG).status_code == 200,
            timeout=HANG,
            what="the node connected",
        )
        for _ in range(60):
            silent.append(socket.create_connection(("127.0.0.1", port), timeout=HANG))
        gevent.sleep(1.0)  # accept runs out of descriptors over and over meanwhile
        status, seconds = healthz(base)  # behind 60 silent sockets in the backlog
        assert status == 200
        gevent.sleep(1.0)
    finally:
        for s in silent:
            s.close()
        proc.terminate()
        proc.wait(timeout=HANG)
    err = proc.stderr.read()
    lines = [line for line in err.splitlines() if "EMFILE" in line or "Too many open" in line]
    assert lines, err[-2000:]  # it did run out
    assert len(lines) <= 2, "\n".join(lines[:20])  # one line per interval, not a flood
    assert "Traceback" not in err, err[-2000:]
    figure(
        "out of descriptors (EMFILE) at accept",
        cases=1,
        held=1,
        log_lines=len(lines),
        healthz_behind_60_silent_sockets_ms=round(seconds * 1000, 1),
    )


def stream_status(resp: requests.Response) -> tuple[int, str]:
    """A stream request's status and, for a refusal, the limit its envelope names."""
    if resp.status_code == 200:
        return 200, ""
    return resp.status_code, resp.json()["data"]["message"]


def test_one_token_or_one_account_cannot_take_every_stream(
    switch: Any, make_daemon: Any, figure: Any
) -> None:
    """The attack of issue #11: one tenant's `user` token opened 256 streams and every other
    account's admin, and the superduper, got 503. Now one token holds at most
    max_streams_per_token and one account's tokens together max_streams_per_account."""
    h = make_daemon(
        [switch],
        http={"max_streams": 20, "max_streams_per_token": 4, "max_streams_per_account": 6},
    )
    held: list[requests.Response] = []

    def open_as(tok: str, path: str = "/v2/accounts/acc1/channel_events") -> tuple[int, str]:
        resp = requests.get(
            h.api.base + path, headers={"X-Auth-Token": token(tok)}, stream=True, timeout=HANG
        )
        held.append(resp)
        return stream_status(resp)

    try:
        hog = [open_as("user1") for _ in range(10)]
        assert [s for s, _ in hog] == [200] * 4 + [503] * 6
        assert "4 event streams are open with this token" in hog[4][1]
        assert "(http.max_streams_per_token)" in hog[4][1]
        # the same account's other token has the account's two places left
        assert [open_as("admin1")[0] for _ in range(2)] == [200, 200]
        status, message = open_as("admin1")
        assert status == 503 and "(http.max_streams_per_account)" in message, message
        assert "with the tokens of account acc1" in message
        # other tenants, and the operator, are not locked out
        assert open_as("admin2", "/v2/accounts/acc2/channel_events")[0] == 200
        assert open_as("super", "/v2/channel_events")[0] == 200
        refused = metric(h, 'channelsd_http_refused_total{reason="stream_token_limit"}')
        assert refused == 6
        assert metric(h, 'channelsd_http_refused_total{reason="stream_account_limit"}') == 1
        # a place given back is a place for the same token again
        held[0].close()
        wait_until(lambda: len(h.daemon.ctx.subscriptions) < 8, timeout=30, what="released")
        assert open_as("user1")[0] == 200
    finally:
        for resp in held:
            resp.close()
    figure("stream limits per token and per account", cases=1, held=1)


# -- a read past its phase's deadline (outside attack on the late-read grace) ----------------
# A connection the server first reads after its deadline (a hub busy elsewhere) has that one
# read: what the socket holds is taken. Every later read past a deadline expires at once: a
# client that keeps its socket full must not stretch a phase, nor its body be acted on late.
# The flooding clients run in another process (the daemon shares this hub with the test,
# whose greenlets could never outpace its reads).

# A client in another process: sends `head`, then floods `chunk` for `seconds`; prints what
# happened: whether the server closed the connection, and when (from the end of the head).
FLOODER = r"""
import json, socket, sys, time
host, port, seconds, head, chunk = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
    sys.argv[4].encode("latin-1"), sys.argv[5].encode("latin-1")
interval = float(sys.argv[6])  # between sends; 0: a flood
if not interval:
    chunk = chunk * max(1, 65536 // max(1, len(chunk)))
s = socket.create_connection((host, port), timeout=5)
s.sendall(head)
began = time.monotonic()
sent = 0
closed = None
s.settimeout(10)
while time.monotonic() - began < seconds:
    try:
        s.sendall(chunk)
    except OSError as e:
        closed = [round(time.monotonic() - began, 2), type(e).__name__]
        break
    sent += len(chunk)
    if interval:
        time.sleep(interval)
answer = b""
s.settimeout(0.5)
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        answer += d
except OSError:
    pass
print(json.dumps({"closed": closed, "sent": sent, "answer": answer[:60].decode("latin-1")}))
"""


def flood(
    address: tuple[str, int], seconds: float, head: bytes, chunk: bytes = b"x", interval: float = 0
) -> Any:
    """Start a flooding client process; .communicate() gives its JSON report."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            FLOODER,
            address[0],
            str(address[1]),
            str(seconds),
            head.decode("latin-1"),
            chunk.decode("latin-1"),
            str(interval),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def report(proc: Any) -> dict[str, Any]:
    out, err = proc.communicate(timeout=HANG * 3)
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out)


HUGE = b"Content-Length: 999999999999999\r\n"
# What each deadline closed (the server's own count): the proof a connection was cut by it.
BODY_TIMEOUT = 'channelsd_http_connections_closed_total{reason="body_timeout"}'
HEADER_TIMEOUT = 'channelsd_http_connections_closed_total{reason="header_timeout"}'


class BusyHub:
    """A daemon under load, when reads come late: a greenlet that holds the hub 10 ms at a
    time (CPU work: a real sleep), then lets it poll. A request's reader then gets a turn
    every ~10 ms, as it would beside ingest or a big list's build."""

    def __init__(self, hold: float = 0.01) -> None:
        self.block = gevent.monkey.get_original("time", "sleep")
        self.hold = hold
        self.running = True
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while self.running:
            self.block(self.hold)
            gevent.sleep(0.001)  # a timer: the hub polls its sockets between

    def __enter__(self) -> "BusyHub":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.running = False
        self.greenlet.join(timeout=HANG)


@pytest.mark.parametrize("loaded", [False, True], ids=["idle_hub", "busy_hub"])
def test_a_flooded_body_is_not_read_past_body_timeout(
    switch: Any, make_daemon: Any, loaded: bool
) -> None:
    """GET /healthz with a body that never ends: the answer is given, then pywsgi discards the
    rest of the body, each read bounded by body_timeout (1 s here). The flooding client is cut
    by that deadline, however full it keeps its socket: granted a read past the deadline
    whenever the socket held bytes (the late-read grace's first form), it was never cut
    under a busy hub; under an idle one the reader caught up sooner or later, so that
    variant is a guard, not a test that failed every run."""
    h = make_daemon([switch], http=SHORT)
    cut = metric(h, BODY_TIMEOUT)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + HUGE + b"\r\n"
    if loaded:
        with BusyHub():
            r = report(flood(h.daemon.http_address, 6.0, head))
    else:
        r = report(flood(h.daemon.http_address, 6.0, head))
    assert r["answer"].startswith("HTTP/1.1 200 "), r
    assert r["closed"] is not None, f"the connection outlived body_timeout=1 s by 5 s: {r}"
    assert metric(h, BODY_TIMEOUT) == cut + 1, r  # cut by its deadline


def test_the_413s_discarded_body_is_bounded_by_body_timeout(switch: Any, make_daemon: Any) -> None:
    """api.too_large: "The rest of the body is read and dropped by the server (bounded by
    body_timeout)". A chunked body flooded after the 413 is read for as long as it comes."""
    h = make_daemon([switch], http=SHORT)
    head = (
        b"POST /v2/accounts/acc1/channels/x HTTP/1.1\r\nHost: x\r\n"
        b"X-Auth-Token: " + token("admin1").encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
    cut = metric(h, BODY_TIMEOUT)
    with BusyHub():
        r = report(flood(h.daemon.http_address, 6.0, head, chunk))
    assert r["answer"].startswith("HTTP/1.1 413 "), r
    assert r["closed"] is not None, f"the connection outlived body_timeout=1 s by 5 s: {r}"
    assert metric(h, BODY_TIMEOUT) == cut + 1, r  # cut by its deadline


def test_flooders_past_body_timeout_cannot_keep_every_connection_busy(
    switch: Any, make_daemon: Any
) -> None:
    """max_connections=3, three clients flooding a /healthz body. They are never waiting
    (each read finds data), so none can be evicted; past body_timeout they must have been
    closed and a probe gets its 200 (under the grace's first form it got 503 for as long as
    the flood lasted)."""
    h = make_daemon([switch], http={**SHORT, "max_connections": 3, "max_streams": 3})
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + HUGE + b"\r\n"
    procs = [flood(h.daemon.http_address, 6.0, head) for _ in range(3)]
    busy = BusyHub()
    try:
        wait_until(lambda: len(h.daemon.http.connections) >= 3, what="the flooders are in")
        gevent.sleep(3 * SHORT["body_timeout"])  # every deadline long past
        probe = raw_exchange(
            h.daemon.http_address, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        held = len(h.daemon.http.connections)
    finally:
        busy.__exit__()
        reports = [report(p) for p in procs]
    assert probe.startswith(b"HTTP/1.1 200 "), (probe[:120], held, reports)


def test_a_body_sent_after_body_timeout_is_not_taken_as_in_time(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub gets to the body's first read 1.3 s late; the client sent its body only at
    1.1 s, after body_timeout (1 s): 408, and nobody hung up. A read past a deadline cannot
    tell bytes that came in time from bytes that came late; only a connection's very first
    read has it (the grace's first form acted on this body)."""
    a, _ = switch.bridged_call(variables_a={"account_id": "acc1"})
    h = make_daemon([switch], http=SHORT)
    wait_until(lambda: h.table.get(a) is not None)
    h.wait_ready()
    before = len(switch.received)
    held = held_before_first_read(monkeypatch, SHORT["body_timeout"] + 0.3, "body")
    block = gevent.monkey.get_original("time", "sleep")
    body = b'{"data": {"action": "hangup"}}'
    s = socket.create_connection(h.daemon.http_address, timeout=HANG)
    try:
        fd = s.fileno()

        def late_body() -> None:  # a real thread: it runs while the hub is held
            block(SHORT["body_timeout"] + 0.1)
            os.write(fd, body)

        s.sendall(
            f"POST /v2/accounts/acc1/channels/{a} HTTP/1.1\r\nHost: x\r\n".encode()
            + b"X-Auth-Token: "
            + token("admin1").encode()
            + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        gevent.monkey.get_original("_thread", "start_new_thread")(late_body, ())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out:
                break
    finally:
        s.close()
    assert held, out[:600]
    gevent.sleep(0.3)
    hangups = [c for _, c in switch.received[before:] if "uuid_kill" in c or "hangup" in c]
    assert out.startswith(b"HTTP/1.1 408 "), (out[:200], hangups)
    assert hangups == []  # a body that came after body_timeout hung up nobody


def test_pipelined_requests_after_a_late_first_read_are_answered_once_in_order(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three requests pipelined in one send, the first read after header_timeout: each is
    answered once, in order, and the half fourth gets its 408."""
    h = make_daemon([switch], http=SHORT)
    stalled = held_before_first_read(monkeypatch, SHORT["header_timeout"] + 0.3)
    req = b"GET /healthz?n=%d HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = raw_exchange(
        h.daemon.http_address,
        req % 1 + req % 2 + req % 3 + b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    )
    assert stalled
    assert answer.count(b"HTTP/1.1 200 ") == 3, answer
    assert answer.count(b"HTTP/1.1 408 ") == 1, answer
    assert answer.rindex(b"HTTP/1.1 200 ") < answer.index(b"HTTP/1.1 408 ")


def test_a_half_body_read_late_still_gets_408(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Head and half a body in time, the body's first read after body_timeout: 408 (not a 400,
    not a hang)."""
    h = make_daemon([switch], http=SHORT)
    held = held_before_first_read(monkeypatch, SHORT["body_timeout"] + 0.3, "body")
    answer = raw_exchange(
        h.daemon.http_address,
        b"POST /v2/accounts/acc1/channels/x HTTP/1.1\r\nHost: x\r\n"
        b"X-Auth-Token: " + token("admin1").encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"data": {' + b" " * 500,
    )
    assert held
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_closed_timeouts_are_counted_once(switch: Any, make_daemon: Any) -> None:
    """A half head: one header_timeout counted, one 408."""
    h = make_daemon([switch], http=SHORT)
    before = metric(h, HEADER_TIMEOUT)
    answer = raw_exchange(h.daemon.http_address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ") and answer.count(b"HTTP/1.1") == 1, answer
    after = metric(h, HEADER_TIMEOUT)
    assert after - before == 1


def test_a_huge_head_flooded_under_load_is_cut_at_header_timeout(
    switch: Any, make_daemon: Any
) -> None:
    """A head of 100 header lines of 60 KB (under http.client's bounds), sent as fast as the
    client can, the hub busy: the head phase must end within about header_timeout (408, or
    the 400 for too many headers), not last as long as the server takes to read ~6 MB a read
    buffer at a time."""
    h = make_daemon([switch], http=SHORT)
    line = b"X-Pad: " + b"a" * 60000 + b"\r\n"
    with BusyHub():
        r = report(
            flood(h.daemon.http_address, 12.0, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", line)
        )
    assert r["closed"] is not None, r  # within the flood's 12 s
    assert r["answer"].startswith(("HTTP/1.1 400 ", "HTTP/1.1 408 ")), r  # a head refused


def test_a_drip_under_load_is_still_cut_at_header_timeout(switch: Any, make_daemon: Any) -> None:
    """A byte every 3 ms of an endless header, the hub busy (a turn every ~10 ms): each late
    read finds a few bytes, the next finds none. Cut at about header_timeout, with a 408."""
    h = make_daemon([switch], http=SHORT)
    cut = metric(h, HEADER_TIMEOUT)
    with BusyHub():
        r = report(
            flood(h.daemon.http_address, 6.0, b"GET /healthz HTTP/1.1\r\nX-A: ", b"a", 0.003)
        )
    assert r["closed"] is not None or r["answer"], r
    assert r["answer"].startswith("HTTP/1.1 408 "), r
    assert metric(h, HEADER_TIMEOUT) == cut + 1, r  # cut by its deadline
