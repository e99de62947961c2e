"""Shared fixtures: a stand-in FreeSWITCH on loopback, a real daemon, a real HTTP client.

The whole suite runs on one gevent hub (monkey-patched by tests/gevent_patch.py, loaded with
`-p` before any plugin), so the stand-in's ESL server, the daemon's greenlets and `requests`
all talk over real loopback sockets in one process.
"""

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.monkey
import pytest
import requests

from channelsd.config import parse
from channelsd.daemon import Daemon
from channelsd.tokens import digest

FIXTURES = Path(__file__).parent / "fixtures"
CAPTURES = FIXTURES / "captures"

# name -> (token text, account, role, owner, descendants)
TOKENS: dict[str, tuple[str, str, str, str | None, tuple[str, ...]]] = {
    "super": ("tok-super-0123456789", "acc0", "superduper", None, ()),
    "admin1": ("tok-admin1-0123456789", "acc1", "admin", None, ("acc1-sub",)),
    "user1": ("tok-user1-0123456789", "acc1", "user", "user1", ()),
    "admin2": ("tok-admin2-0123456789", "acc2", "admin", None, ()),
}


def values_of(node: Any, key: str) -> Iterator[str]:
    """Every string under `key` anywhere in a JSON document (a schema's patterns, $refs)."""
    if isinstance(node, dict):
        for k, value in node.items():
            if k == key and isinstance(value, str):
                yield value
            else:
                yield from values_of(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from values_of(value, key)


def token(name: str) -> str:
    return TOKENS[name][0]


def config_dict(switches: list[Any], **sections: Any) -> dict[str, Any]:
    """A config as the TOML file would hold it, pointing at the given stand-in switches."""
    data: dict[str, Any] = {
        "http": {"host": "127.0.0.1", "port": 0},
        "nodes": [
            {"name": f"fs{i + 1}", "host": "127.0.0.1", "port": sw.port, "password": "ClueCon"}
            for i, sw in enumerate(switches)
        ],
        "api": {"system_wide_channels_list": True},
        "sync": {
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
            "stale_grace": 30,
            "reconcile_interval": 3600,
            "command_timeout": 2,
            "connect_timeout": 2,
            "heartbeat_timeout": 0,
        },
        "tokens": [
            {
                "name": name,
                "sha256": digest(text),
                "account_id": acc,
                "role": role,
                **({"owner_id": owner} if owner else {}),
                **({"descendants": list(desc)} if desc else {}),
            }
            for name, (text, acc, role, owner, desc) in TOKENS.items()
        ],
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return data


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll until predicate() is truthy. A bound against hangs, never a speed assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        gevent.sleep(0.01)


def preparing(lists: Any) -> bool:
    """Whether the running greenlet works for ListCache's preparer: the preparer itself, or a
    greenlet it spawned to compress one of the next second's lists."""
    current = gevent.getcurrent()
    parent = getattr(current, "spawning_greenlet", None)
    return current is lists._preparer or (parent is not None and parent() is lists._preparer)


def metric_series(h: "Harness", prefix: str) -> dict[str, float]:
    """The daemon's /metrics series whose line starts with `prefix`, by name and labels."""
    text = h.api.get("/metrics", tok=None).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def metric(h: "Harness", prefix: str) -> float:
    """The sum of the series metric_series() finds (0 when there is none)."""
    return sum(metric_series(h, prefix).values())


class TurnClock:
    """channelsd.turns' clock, moved only by the test: a turn 'takes' what the test says,
    whatever the machine's speed, so a test counts turns, not time.

    Its time is kept on a grid of 2**-20 s above a whole second, each move rounded up onto
    it, so that the differences turns takes are exact and a turn of exactly TURN counts as
    one. As plain floats, a clock of 33,847 s (a machine up 9 hours) plus 0.00025 twice came
    out 0.5 ns short of TURN: the tests failed by uptime, not by code."""

    GRID = 2**20

    def __init__(self) -> None:
        self._origin = float(math.floor(time.perf_counter()))
        self._ticks = 0

    @property
    def now(self) -> float:
        return self._origin + self._ticks / self.GRID

    @now.setter
    def now(self, value: float) -> None:
        # (a value on the grid stays on it: float noise of a thousandth of a tick is not a move)
        self._ticks = math.ceil((value - self._origin) * self.GRID - 1e-3)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def picker_built() -> None:
    """The tests of the C picker itself need it built: where it was not, each fails saying
    so (a skip would pass a run that tested nothing of it)."""
    from channelsd import eventpick

    assert eventpick.built(), (
        "channelsd_picker was not built: install a C compiler and Python's headers, "
        "then `pip install -e .` again"
    )


@pytest.fixture
def turn_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[TurnClock]:
    """A TurnClock for channelsd.turns, from an iteration it stamped; the real clock again
    after, from an iteration the real clock stamped."""
    from channelsd import turns

    it = turns._iteration()
    assert not it.line, "a test before left greenlets in line"
    c = TurnClock()
    # (a test's fake clock runs ahead of the real one: one before may have stamped the
    # iteration ahead of this clock's start, and a clock going back makes spent negative)
    c.now = max(c.now, it.started) + 1.0
    monkeypatch.setattr(turns, "_clock", c)
    gevent.sleep(0.001)  # an iteration stamped by this clock
    yield c
    assert not it.line, "greenlets left in line"
    monkeypatch.undo()
    gevent.sleep(0.001)  # an iteration stamped by the real clock again


def bulk_crowd(
    clock: TurnClock, count: int, turns_each: int, log: list[int]
) -> list[gevent.Greenlet]:
    """`count` greenlets of bulk work (readers of as many nodes), each taking `turns_each`
    turns of 1 ms on `clock` and appending its index to `log` at each: started, not joined."""
    from channelsd import turns

    def bulk(i: int) -> None:
        turns.begin()  # as a reader does when its socket wakes it
        for _ in range(turns_each):
            clock.now += 0.001
            log.append(i)
            turns.pause()

    return [gevent.spawn(bulk, i) for i in range(count)]


def count_pauses(monkeypatch: pytest.MonkeyPatch, module: Any, name: str = "_pause") -> list[int]:
    """Wrap `module._pause` (its visit to the hub; channelsd.turns: `pause`) so each visit
    appends to the returned list."""
    visits: list[int] = []
    pause = getattr(module, name)

    def counting() -> None:
        visits.append(1)
        pause()

    monkeypatch.setattr(module, name, counting)
    return visits


def calls_until(
    h: "Harness", switch: Any, done: Callable[[], Any], variables: dict[str, Any]
) -> list[str]:
    """Calls, 40 a publish apart, until `done()`: a socket whose reader stopped fills with
    what the kernel takes (its sender's buffer grows to a few MB), so how many calls that
    takes is not known beforehand. The calls' first legs."""
    calls: list[str] = []
    while not done():
        for _ in range(40):
            calls.append(switch.bridged_call(variables_a=variables, variables_b=variables)[0])
        gevent.sleep(0.15)  # a publish
        assert len(h.table) < 20_000, "the socket never filled"
    return calls


class Api:
    """A real HTTP client for the daemon under test."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def request(self, method: str, path: str, tok: str | None = "super", **kw: Any):
        headers = dict(kw.pop("headers", {}) or {})
        if tok is not None:
            headers.setdefault("X-Auth-Token", token(tok) if tok in TOKENS else tok)
        return self.session.request(method, self.base + path, headers=headers, timeout=10, **kw)

    def get(self, path: str, tok: str | None = "super", **kw: Any):
        return self.request("GET", path, tok, **kw)

    def data(self, path: str, tok: str | None = "super", **kw: Any) -> Any:
        resp = self.get(path, tok, **kw)
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]


class Harness:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        host, port = daemon.http_address
        self.api = Api(f"http://{host}:{port}")

    @property
    def table(self):
        return self.daemon.table

    def node(self, name: str = "fs1"):
        return self.daemon.nodes[name]

    def wait_ready(self, timeout: float = 5.0) -> None:
        for node in self.daemon.nodes.values():
            wait_until(lambda n=node: n.state == "ready", timeout, f"{node.name} ready")


@pytest.fixture
def held_start(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The courier's thread starts (its first task) only once the test calls the returned
    function: what a stop or a kill meets while the thread is starting, without timing it."""
    gate = gevent.monkey.get_original("_thread", "allocate_lock")()
    gate.acquire()

    def start() -> None:
        assert gate.acquire(timeout=10), "the thread's start was never let go"
        gate.release()

    monkeypatch.setattr("channelsd.sendmany._yield_to_ingest", start)
    return gate.release


@pytest.fixture
def make_switch() -> Iterator[Callable[..., Any]]:
    from channelsd.standin.server import StandinSwitch

    made: list[Any] = []

    def make(**kw: Any) -> Any:
        kw.setdefault("hostname", f"standin{len(made) + 1}")
        sw = StandinSwitch(**kw)
        sw.start()
        made.append(sw)
        return sw

    yield make
    for sw in made:
        sw.stop()


@pytest.fixture
def switch(make_switch: Callable[..., Any]) -> Any:
    return make_switch()


@pytest.fixture
def make_daemon() -> Iterator[Callable[..., Harness]]:
    made: list[Daemon] = []

    def make(switches: list[Any], wait: bool = True, **sections: Any) -> Harness:
        daemon = Daemon(parse(config_dict(switches, **sections), "test.toml"))
        daemon.start()
        made.append(daemon)
        h = Harness(daemon)
        if wait:
            h.wait_ready()
        return h

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def daemon(switch: Any, make_daemon: Callable[..., Harness]) -> Harness:
    return make_daemon([switch])


@pytest.fixture
def readers() -> Iterator[Callable[..., Any]]:
    """Raw-socket SSE readers (tests/sse_support.WireReader), closed after the test."""
    from sse_support import WireReader

    made: list[Any] = []

    def make(*args: Any, **kw: Any) -> Any:
        r = WireReader(*args, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# -- reliability figures ---------------------------------------------------------------------
# Fault and attack tests record how many cases they ran and how many held; the session writes
# them to test-artifacts/reliability.json, from which RELIABILITY.md is filled in.

FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture
def figure() -> Callable[..., None]:
    def record(name: str, **values: Any) -> None:
        entry = FIGURES.setdefault(name, {})
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key in entry:
                entry[key] += value
            else:
                entry[key] = value

    return record


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not FIGURES:
        return
    import json

    out = Path(__file__).resolve().parent.parent / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def start_demo(calls: int = 6) -> tuple[Any, str]:
    """`channelsd demo --port 0` as a user runs it: the process and what it printed up to
    "Stop with Ctrl-C" (URLs, tokens, curl lines)."""
    import os
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "channelsd", "demo", "--port", "0", "--calls", str(calls)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"demo exited early: {proc.stderr.read()}"
        lines.append(line)
        if line.startswith("Stop with Ctrl-C"):
            break
    return proc, "".join(lines)
