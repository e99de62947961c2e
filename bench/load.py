"""Load generators of the suite: closed-loop HTTP clients, paced background ingest, a bare ESL
client, and what the stand-in has queued. Imported by run.py and the scenario modules.

The closed-loop clients run in a process of their own (`http_load_apart`, which runs
`http_load` in bench/http_client.py); `http_load` in the bench process itself only for the
rows comparing with FreeSWITCH's own listing. What the clients' process spends is measured
with every row (`LoadResult.client_cpu`), so that a row whose client was the bottleneck says
so instead of passing the client's limit off as the daemon's.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import resource
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common as bc
import gevent
import orjson

from channelsd.standin.server import StandinSwitch

perf = time.perf_counter

# Above this share of a core the bench process (clients, stand-in) may itself be what limits a
# row: the report marks such rows.
CLIENT_BOUND = 0.85


def load_cpu() -> float:
    """CPU seconds of the bench process (clients, stand-ins, senders) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def backlog(sw: StandinSwitch) -> int:
    """Frames the stand-in has queued but not yet written to its clients' sockets."""
    return sum(conn._queue.qsize() for conn in list(sw.connections))


def drained(sw: StandinSwitch) -> bool:
    return all(conn._queue.empty() for conn in list(sw.connections))


def subscribed(sw: StandinSwitch, n: int = 1) -> bool:
    return sum(1 for conn in list(sw.connections) if conn.wants("CHANNEL_CREATE")) >= n


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    with gevent.Timeout(timeout, TimeoutError(f"no output from {proc.args[1]}")):
        return proc.stdout.readline().strip()


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def spawn_subscribers(
    kind: str, port: int, path: str, n: int, out: Path, *extra: str
) -> subprocess.Popen:
    """Start one subscriber_proc.py holding `n` streams of `kind` on `path`; it writes its
    tally to `out`. `extra`: its further options (--marker, --lifetime...)."""
    return bc.spawn(
        [
            bc.PYTHON,
            str(Path(__file__).resolve().parent / "subscriber_proc.py"),
            kind,
            str(port),
            path,
            str(n),
            str(out),
            "--token",
            bc.SUPER_TOKEN,
            *extra,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def unread_bytes(ports: set[int]) -> int:
    """Bytes written by the stand-ins on `ports` that the daemon has not read yet: what waits
    in the stand-ins' socket send queues and in the daemon's receive queues (/proc/net/tcp,
    so that watching costs the daemon nothing)."""
    total = 0
    # Only the lines naming one of the ports are split (the fan-out's thousand subscribers'
    # sockets are in the same table, and parsing them all every few ms took a core)
    hexes = "|".join(f"{port:04X}" for port in ports)
    wanted = re.compile(rf"^.*:(?:{hexes}) .*$", re.M)
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for found in wanted.finditer(text):
            fields = found.group(0).split()
            local, remote = (
                int(fields[1].rsplit(":", 1)[1], 16),
                int(fields[2].rsplit(":", 1)[1], 16),
            )
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            if local in ports:
                total += tx  # the stand-in's side
            elif remote in ports:
                total += rx  # the daemon's side
    return total


def wait_final_state(
    http: bc.Http,
    expected: set[str],
    timeout: float,
    what: str,
    polls: list[float] | None = None,
    ports: set[int] | None = None,
) -> float:
    """Poll `GET /v2/channels` until it holds exactly `expected`; return when that answer
    arrived (the state held by then: it bounds the end from above). `polls` gets each
    poll's latency. With `ports` (the stand-ins'), the first poll waits until the daemon has
    read every byte they wrote: a 10,000-channel list asked every 10 ms while the daemon
    still catches up costs it CPU that the baseline readers, timed to their last event,
    never pay (up to a third of the catching up when 20 nodes' socket buffers held a second
    of events)."""
    deadline = perf() + timeout
    while ports and unread_bytes(ports):
        if perf() > deadline:
            raise TimeoutError(f"{what} never read everything the stand-ins wrote")
        gevent.sleep(0.01)
    while True:
        t = perf()
        data = http.get_json("/v2/channels")["data"]
        done = perf()
        if polls is not None:
            polls.append(done - t)
        if {item["uuid"] for item in data} == expected:
            return done
        if perf() > deadline:
            raise TimeoutError(f"{what} never reached the final state ({len(data)} ch)")
        gevent.sleep(0.01)


def probe_channels(
    port: int,
    accounts: list[str],
    uuids: list[str],
    seed: int,
    probing: list[bool],
    lat: list[tuple[float, float]],
    statuses: dict[int, int],
) -> None:
    """One reader while the daemon catches up: alternately an account's listing and one
    channel, every 10 ms, until `probing[0]` turns false. Appends (sent at, seconds) to `lat`
    and counts statuses."""
    rnd = random.Random(seed)
    http = bc.Http(port)
    try:
        for k in range(100_000):
            if not probing[0]:
                break
            acc = rnd.choice(accounts)
            if k % 2:
                path = f"/v2/accounts/{acc}/channels"
            else:
                path = f"/v2/accounts/{acc}/channels/{rnd.choice(uuids)}"
            t = perf()
            status, _ = http.request("GET", path)
            lat.append((t, perf() - t))
            statuses[status] = statuses.get(status, 0) + 1
            gevent.sleep(0.01)
    finally:
        http.close()


class RawEsl:
    """A bare ESL client on a raw socket: auth, then `api` round trips (no events)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((bc.LOOPBACK, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self._frame()  # auth/request
        self.sock.sendall(f"auth {bc.PASSWORD}\n\n".encode())
        head, _ = self._frame()
        if b"+OK accepted" not in head:
            raise RuntimeError(f"auth refused: {head!r}")

    def _frame(self) -> tuple[bytes, bytes]:
        while b"\n\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("stand-in closed the connection")
            self.buf += data
        head, self.buf = self.buf.split(b"\n\n", 1)
        m = re.search(rb"Content-Length: (\d+)", head)
        n = int(m.group(1)) if m else 0
        while len(self.buf) < n:
            self.buf += self.sock.recv(65536)
        body, self.buf = self.buf[:n], self.buf[n:]
        return head, body

    def api(self, cmd: str) -> str:
        self.sock.sendall(f"api {cmd}\n\n".encode())
        return self._frame()[1].decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class LoadResult:
    n: int
    seconds: float
    latencies: list[float]
    errors: int
    statuses: dict[int, int]
    client_cpu: float = 0.0  # the bench process's CPU meanwhile, share of one core
    body_bytes: int = 0
    gzipped: int = 0  # answers that came in gzip

    @property
    def rps(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return bc.percentile(self.latencies, 50)

    @property
    def p99(self) -> float:
        return bc.percentile(self.latencies, 99)

    @property
    def client_bound(self) -> bool:
        return self.client_cpu >= CLIENT_BOUND


def http_load(
    port: int,
    clients: int,
    seconds: float,
    path_for: Callable[[random.Random], str],
    ok: tuple[int, ...] = (200,),
    max_per_client: int = 200_000,
    period: float = 0.0,
) -> LoadResult:
    """`clients` keep-alive clients for `seconds` (and at most max_per_client requests each):
    closed loop (the next request the moment an answer ends), or with `period` open loop, each
    client starting a request every `period` seconds (staggered), as a dashboard polls."""
    lat: list[float] = []
    statuses: dict[int, int] = {}
    errors = [0]
    got = [0]
    zipped = [0]
    sample: dict[int, bytes] = {}
    deadline = perf() + seconds

    def worker(k: int) -> None:
        rnd = random.Random(k)
        http = bc.Http(port, gzip=True)  # as a browser asks
        next_at = perf() + (period * k / clients if period else 0.0)
        try:
            for _ in range(max_per_client):
                if period:
                    gevent.sleep(max(0.0, next_at - perf()))
                    next_at += period
                if perf() >= deadline:
                    break
                path = path_for(rnd)
                t = perf()
                status, body = http.request("GET", path)
                lat.append(perf() - t)
                got[0] += len(body)
                statuses[status] = statuses.get(status, 0) + 1
                if status not in ok:
                    errors[0] += 1
                if http.encoding == "gzip":
                    zipped[0] += 1
                    sample[k] = body  # decoded once the clock has stopped
        finally:
            http.close()

    t0, cpu0 = perf(), load_cpu()
    workers = [gevent.spawn(worker, k) for k in range(clients)]
    gevent.joinall(workers, timeout=seconds + 120)
    for w in workers:
        if not w.ready():
            w.kill(block=False)
            errors[0] += 1
        elif w.exception is not None:
            raise w.exception
    wall = perf() - t0
    cpu = (load_cpu() - cpu0) / max(1e-9, wall)
    for body in sample.values():  # each client's last gzip answer is a whole JSON answer
        if not isinstance(orjson.loads(gzip.decompress(body)).get("data"), list | dict):
            raise RuntimeError("a gzip answer did not decode to an answer")
    return LoadResult(len(lat), wall, lat, errors[0], statuses, cpu, got[0], zipped[0])


def http_load_apart(
    port: int,
    clients: int,
    seconds: float,
    paths: list[str],
    max_per_client: int = 200_000,
    period: float = 0.0,
) -> LoadResult:
    """http_load from a process of its own (bench/http_client.py), each request for a random
    one of `paths`; this process's hub (the stand-in) runs meanwhile."""
    job = {
        "port": port,
        "clients": clients,
        "seconds": seconds,
        "paths": paths,
        "period": period,
        "max_per_client": max_per_client,
    }
    child = bc.spawn(
        [bc.PYTHON, str(Path(__file__).with_name("http_client.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(json.dumps(job).encode(), timeout=seconds + 180)
    if child.returncode != 0:
        raise RuntimeError(f"http_client.py failed ({child.returncode})")
    r = json.loads(out)
    statuses = {int(k): v for k, v in r["statuses"].items()}
    return LoadResult(
        r["n"],
        r["seconds"],
        r["latencies"],
        r["errors"],
        statuses,
        r["client_cpu"],
        r["body_bytes"],
        r["gzipped"],
    )


class Churn:
    """Background ingest: frames from `source()` (a list per call), paced to `rate` events/s."""

    def __init__(
        self,
        sw: StandinSwitch,
        replay: bc.CaptureReplay | None,
        rate: float,
        source: Callable[[], list[Any]] | None = None,
    ) -> None:
        self.sw, self.rate = sw, rate
        self.source = source or (replay.repetition if replay is not None else None)
        if self.source is None:
            raise ValueError("Churn needs a replay or a source")
        self.sent = 0
        self.max_backlog = 0
        self._run = False
        self._glet: gevent.Greenlet | None = None
        self.t0 = 0.0

    def start(self) -> None:
        self._run = True
        self.t0 = perf()
        self.sent = 0
        self._glet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        pending: list[Any] = []
        while self._run and perf() - self.t0 < 600:
            due = int(self.rate * (perf() - self.t0)) - self.sent
            while due > 0:
                if not pending:
                    pending = self.source()
                chunk, pending = pending[:due], pending[due:]
                self.sw.send_frames(chunk)
                self.sent += len(chunk)
                due -= len(chunk)
            self.max_backlog = max(self.max_backlog, backlog(self.sw))
            gevent.sleep(0.01)

    def achieved(self) -> float:
        return self.sent / max(1e-9, perf() - self.t0)

    def stop(self) -> None:
        self._run = False
        if self._glet is not None:
            self._glet.join(timeout=2)
            self._glet.kill(block=False)
