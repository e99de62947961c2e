"""Soak (issue #17): a busy day of calls, and memory that must come back to its floor.

    .venv/bin/python bench/soak.py                  # 200,000 calls, ~1,000 live (~10 min)
    .venv/bin/python bench/soak.py --quick          # 10,000 calls, a smoke test (~1.5 min)
    .venv/bin/python bench/soak.py --out DIR        # where the CSVs and the plot go
    .venv/bin/python bench/run.py --only soak       # the same, as a section of the suite

Two variants of the same day, one after the other:

* **The daemon** (`channelsd run`, its own process) beside a stand-in switch that churns
  loopback calls (answered, parked, hung up) as fast as the daemon keeps up: the oldest call
  ends and a new one starts, so the live set stays at `--live` calls (two channels each).
  80 % of the calls are in 100 fixed accounts, 20 % each in an account, owner and device of
  its own never seen again (tenants come and go: per-account state must not pile up). Meanwhile
  `--pollers` clients each ask for a random fixed account's list every second, SSE
  subscribers follow one account's stream and the system stream (a reader process of their
  own), the stand-in sends a HEARTBEAT every 20 s (the daemon's drift check may reconcile),
  and the node's connections are dropped `--reconnects` times. Sampled every second: the
  daemon's RSS from /proc, its CPU, and the table's sizes from /metrics (channels,
  tombstones, accounts, ended calls kept: the daemon has no debug endpoint, and this is what
  it exports; an earlier version read the ended calls' count from a `?ended=true` list every
  10 s, a 13 MB answer that swung the RSS it measured by as much). At the end the daemon's
  system list must equal the stand-in's live channels.
* **In process**: the table, the SSE broker (two subscribers draining it), the ended-calls
  store and the list cache, driven by the same stand-in call model without sockets, on a
  virtual clock (so a TTL passes in no time), with the same account mix, list builds for 20
  accounts every 50 calls, and the reconnects as the daemon's node does them (mark stale,
  lose the events meanwhile, reconcile: remove what the switch no longer has, hydrate from
  `uuid_dump` what it has). Sampled: the objects reachable from those four structures, by
  type (walked with `gc.get_referents`: strings, bytes and tuples included; the interpreter,
  the event loop and the stand-in beside them not), their sizes, and the table's own sizes.

The phases: ramp to the live set; warm-up (enough calls to fill every bounded store: the
ended-calls store to `api.ended_calls_max`, the event ring to `api.event_buffer`; and at least
1.5 TTLs at full speed, so that the tombstones have been at their steady level, and the
allocator's high-water mark with them, before the *before* sample); settle
(one tombstone TTL plus 2 s of a trickle of 2 calls/s, the live set unchanged) and the
*before* sample; the churn (`--calls` calls); settle again and the *after* sample. The
targets: RSS after within 5 MiB of before (same live set, every bounded store full both
times); no object type whose count grew with the number of calls (after minus before more
than max(20, calls / 1,000)).
Outputs: `soak-daemon.csv`, `soak-objects.csv`, and `soak.png` (matplotlib, when it is
installed) or `soak.svg` (written by bench/plot.py, no dependency).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import csv  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections import Counter, deque  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as bc  # noqa: E402
import gevent  # noqa: E402
import load  # noqa: E402
import orjson  # noqa: E402
import plot  # noqa: E402

from channelsd.ended import EndedCalls  # noqa: E402
from channelsd.events import parse_json  # noqa: E402
from channelsd.listing import ListCache  # noqa: E402
from channelsd.node import SUBSCRIBED_EVENTS  # noqa: E402
from channelsd.standin.channels import CallModel  # noqa: E402
from channelsd.standin.events import EventBuilder  # noqa: E402
from channelsd.standin.listings import uuid_dump_json  # noqa: E402
from channelsd.standin.server import StandinSwitch  # noqa: E402
from channelsd.stream import Broker, subscribe  # noqa: E402
from channelsd.table import ChannelTable  # noqa: E402

if TYPE_CHECKING:
    from run import Suite

perf = time.perf_counter
BENCH = Path(__file__).resolve().parent
FIXED_ACCOUNTS = 100
ONE_OFF_SHARE = 0.2
TRICKLE = 2.0  # calls/s while settling
# At rest: the mean RSS of the last REST_WINDOW_S one-second samples no more than
# REST_SLOPE_KIB below that of the window before; waited for at most SETTLE_MAX_S.
REST_WINDOW_S = 12  # longer than the daemon's trim interval (memory.TRIM_EVERY, 10 s)
REST_SLOPE_KIB = 256
SETTLE_MAX_S = 120.0
RSS_TOLERANCE_KIB = 5 * 1024
MAX_BACKLOG = 4000  # frames the stand-in may hold queued before the churn waits


@dataclass
class Plan:
    calls: int
    live: int
    warmup: int
    ttl: float
    reconnects: int
    pollers: int
    subscribers: int
    ended_max: int
    event_buffer: int
    out: Path
    quick: bool = False
    skip_daemon: bool = False
    skip_inprocess: bool = False


def plan_for(calls: int, live: int, out: Path, quick: bool = False, **kw: Any) -> Plan:
    ended_max = 1_000 if quick else 10_000
    event_buffer = 1_000 if quick else 10_000
    defaults = {
        "warmup": max(ended_max, event_buffer // 4) + live,
        "ttl": 8.0 if quick else 15.0,
        "reconnects": 2 if quick else 4,
        "pollers": 5 if quick else 20,
        "subscribers": 3 if quick else 5,
    }
    defaults.update({k: v for k, v in kw.items() if v is not None})
    return Plan(
        calls=calls,
        live=live,
        ended_max=ended_max,
        event_buffer=event_buffer,
        out=out,
        quick=quick,
        **defaults,
    )


class Accounts:
    """Where call i lives: 80 % in fixed accounts, 20 % in one-off tenants."""

    def __init__(self, seed: int = 7) -> None:
        self.fixed = [bc.kazoo_id(f"soak-account{i}") for i in range(FIXED_ACCOUNTS)]
        self.rnd = random.Random(seed)

    def variables(self, i: int) -> dict[str, str]:
        if self.rnd.random() < ONE_OFF_SHARE:
            acc = bc.kazoo_id(f"soak-oneoff{i}")
            user = f"oneoff{i}"
        else:
            acc = self.fixed[i % FIXED_ACCOUNTS]
            user = f"user{i % 20}"
        return {
            "ecallmgr_Account-ID": acc,
            "ecallmgr_Owner-ID": bc.kazoo_id(f"{acc}/{user}"),
            "ecallmgr_Authorizing-ID": bc.kazoo_id(f"{acc}/{user}/device"),
            "ecallmgr_Authorizing-Type": "device",
            "ecallmgr_Realm": f"{acc[:8]}.sip.example.net",
            "ecallmgr_Username": user,
        }


class Calls:
    """Live calls on a call model, oldest first: start one, end the oldest."""

    def __init__(self, originate: Any, hangup: Any, accounts: Accounts) -> None:
        self._originate, self._hangup = originate, hangup
        self.accounts = accounts
        self.live: deque[str] = deque()
        self.started = 0
        self.ended = 0

    def start(self) -> None:
        a, _ = self._originate("9003", self.accounts.variables(self.started))
        self.live.append(a)
        self.started += 1

    def end_oldest(self) -> None:
        self._hangup(self.live.popleft())
        self.ended += 1

    def churn(self) -> None:
        self.end_oldest()
        self.start()


# -- the daemon variant --------------------------------------------------------------------


@dataclass
class Sampler:
    """Samples the daemon every second into rows; the phase and call count are set by the
    churn."""

    d: bc.DaemonProcess
    sw: StandinSwitch
    calls: Calls
    phase: str = "ramp"
    rows: list[dict[str, Any]] = field(default_factory=list)
    poll_lat: list[float] = field(default_factory=list)
    t0: float = field(default_factory=perf)
    running: bool = True
    settled: dict[str, int] = field(default_factory=dict)  # phase -> seconds to come to rest

    def loop(self) -> None:
        http = bc.Http(self.d.http_port)
        try:
            while self.running:
                self.rows.append(self.sample(http))
                gevent.sleep(1.0)
        finally:
            http.close()

    def sample(self, http: bc.Http) -> dict[str, Any]:
        status, body = http.request("GET", "/metrics")
        text = bytes(body).decode() if status == 200 else ""
        lat, self.poll_lat = self.poll_lat, []
        row = {
            "t_s": round(perf() - self.t0, 2),
            "phase": self.phase,
            "calls": self.calls.ended,
            "live_channels": sum(1 for ch in self.sw.channels.values() if ch.alive),
            "rss_kib": self.d.rss_kib(),
            "daemon_cpu_s": round(self.d.cpu_seconds(), 2),
            "channels": _metric_sum(text, "channelsd_channels"),
            "tombstones": _metric_sum(text, "channelsd_tombstones"),
            "accounts": _metric_sum(text, "channelsd_accounts"),
            "events": _metric_sum(text, "channelsd_esl_events_total"),
            "ended": _metric_sum(text, "channelsd_ended_calls"),
            "poll_p99_ms": round(bc.percentile(lat, 99) * 1000, 2) if lat else "",
            "bench_rss_kib": bc.rss_kib(os.getpid()),
        }
        return row


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    if not var:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / var


def _metric_sum(text: str, name: str) -> int:
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M):
        total += float(m.group(1))
    return int(total)


def _pollers(port: int, accounts: list[str], n: int, sampler: Sampler) -> list[gevent.Greenlet]:
    def poll(seed: int) -> None:
        rnd = random.Random(seed)
        http = bc.Http(port)
        try:
            gevent.sleep(rnd.random())
            while sampler.running:
                t = perf()
                status, _ = http.request("GET", f"/v2/accounts/{rnd.choice(accounts)}/channels")
                sampler.poll_lat.append(perf() - t)
                if status != 200:
                    raise RuntimeError(f"poll answered {status}")
                gevent.sleep(max(0.0, 1.0 - (perf() - t)))
        finally:
            http.close()

    return [gevent.spawn(poll, k) for k in range(n)]


def run_daemon(plan: Plan, workdir: Path) -> dict[str, Any]:
    sw = StandinSwitch(host=bc.LOOPBACK, heartbeat_interval=20.0)
    sw.start()
    d = bc.DaemonProcess(
        workdir,
        "soak",
        sw.port,
        sync={"tombstone_ttl": plan.ttl},
        api={"ended_calls_max": plan.ended_max, "event_buffer": plan.event_buffer},
    )
    accounts = Accounts()
    calls = Calls(sw.originate, sw.hangup, accounts)
    sampler = Sampler(d, sw, calls)
    subs: list[subprocess.Popen] = []
    glets: list[gevent.Greenlet] = []
    try:
        d.wait_ready(30)
        bc.wait_until(lambda: load.subscribed(sw), 10, "the daemon's subscription")
        glets.append(gevent.spawn(sampler.loop))
        for _ in range(plan.live):
            calls.start()
            _pace(sw, calls.started)
        glets += _pollers(d.http_port, accounts.fixed, plan.pollers, sampler)
        for path, n in (
            (f"/v2/accounts/{accounts.fixed[0]}/channel_events", max(1, plan.subscribers - 1)),
            ("/v2/channel_events", 1),
        ):
            subs.append(_subscribers(workdir, d.http_port, path, n, len(subs)))
        ramp_rss = d.rss_kib()
        sampler.phase = "warm-up"
        # Every bounded store full, and one and a half TTLs at full speed: the tombstones (and
        # whatever else lives for a TTL) reach their steady level before the "before" sample.
        t_warm = perf()
        while calls.ended < plan.warmup or perf() - t_warm < 1.5 * plan.ttl:
            calls.churn()
            _pace(sw, calls.started)
        warm_rate = calls.ended / (perf() - t_warm)
        before = _settle(plan, sampler, sw, calls, "settle-before")
        sampler.phase = "churn"
        t_churn, cpu0 = perf(), d.cpu_seconds()
        first = calls.ended
        marks = {
            first + plan.calls * (k + 1) // (plan.reconnects + 1) for k in range(plan.reconnects)
        }
        peak = 0
        while calls.ended - first < plan.calls:
            calls.churn()
            if calls.ended in marks:
                sw.drop_connections()  # the daemon reconnects and reconciles
            _pace(sw, calls.started)
            if calls.ended % 1000 == 0:
                peak = max(peak, d.rss_kib())
                sw.received.clear()  # the stand-in's own record of commands: not the daemon's
        churn_s = perf() - t_churn
        churn_cpu = (d.cpu_seconds() - cpu0) / churn_s
        after = _settle(plan, sampler, sw, calls, "settle-after")
        check = bc.Http(d.http_port)
        try:
            truth = {u for u, ch in sw.channels.items() if ch.alive}
            items = check.get_json("/v2/channels")["data"]
            held = {i["uuid"] for i in items}
            if held != truth or any(i["stale"] for i in items):
                raise RuntimeError(
                    f"after the soak the API shows {len(held)} channels, the switch has "
                    f"{len(truth)} ({len(held - truth)} extra, {len(truth - held)} missing)"
                )
        finally:
            check.close()
        reconnects = len(re.findall(r"node=fs1 connected", d.log_text())) - 1
        sub_results = _stop_subscribers(subs)
    finally:
        sampler.running = False
        gevent.joinall(glets, timeout=5)
        for g in glets:
            g.kill(block=False)
        for p in subs:
            load.stop_process(p)
        d.stop()
        sw.stop()
    churn_rows = [r for r in sampler.rows if r["phase"] == "churn"]
    half = [r for r in churn_rows if r["calls"] >= first + plan.calls // 2]
    return {
        "rows": sampler.rows,
        "warmup_calls": first,
        "warm_rate": warm_rate,
        "rss_slope": slope([(r["calls"], r["rss_kib"]) for r in half]) * 10_000,
        "ramp_rss": ramp_rss,
        "before": before,
        "after": after,
        "peak": max(peak, max(r["rss_kib"] for r in sampler.rows)),
        "churn_s": churn_s,
        "settled": sampler.settled,
        "churn_cpu": churn_cpu,
        "calls_per_s": plan.calls / churn_s,
        "reconnects": reconnects,
        "subscribers": sub_results,
        "poll_p99": [r["poll_p99_ms"] for r in sampler.rows if r["poll_p99_ms"] != ""],
    }


def _pace(sw: StandinSwitch, started: int) -> None:
    """Let the stand-in's writers (and the daemon) keep up: a bounded queue, a turn of the hub."""
    if started % 5 == 0:
        gevent.sleep(0)
    while load.backlog(sw) > MAX_BACKLOG:
        gevent.sleep(0.002)


def _settle(plan: Plan, sampler: Sampler, sw: StandinSwitch, calls: Calls, phase: str) -> int:
    """One tombstone TTL (+2 s) of a trickle of calls, then, the trickle going on, until the
    RSS stops falling: the mean of its last three one-second samples.

    When the TTL is over the expired tombstones (tens of thousands after a burst) have just
    been freed and the daemon gives the pages back at its next trim (a trickle is quiet: every
    TRIM_EVERY s): a sample taken at once lands anywhere on that slope, and after − before
    moved by several MiB between runs of the same code. Both samples are taken the same way,
    at rest."""
    sampler.phase = phase
    end = perf() + plan.ttl + 2
    while perf() < end:
        calls.churn()
        gevent.sleep(1 / TRICKLE)
    values: list[int] = []
    deadline = perf() + SETTLE_MAX_S
    w = REST_WINDOW_S
    while True:
        tick = perf() + 1.0
        while perf() < tick:
            calls.churn()
            gevent.sleep(1 / TRICKLE)
        values.append(sampler.d.rss_kib())
        if len(values) >= 2 * w:
            recent, earlier = sum(values[-w:]) / w, sum(values[-2 * w : -w]) / w
            if recent >= earlier - REST_SLOPE_KIB or perf() > deadline:
                break
    sampler.settled[phase] = len(values)
    return int(sum(values[-3:]) / 3)


def _subscribers(workdir: Path, port: int, path: str, n: int, k: int) -> subprocess.Popen:
    out = workdir / f"soak-subs-{k}.json"
    proc = load.spawn_subscribers("sse", port, path, n, out, "--lifetime", "3600")
    line = load.read_line(proc, 60)
    if line != f"ready {n}":
        load.stop_process(proc)
        raise RuntimeError(f"soak subscribers: {line!r}")
    proc.out = out  # type: ignore[attr-defined]
    return proc


def _stop_subscribers(procs: list[subprocess.Popen]) -> dict[str, Any]:
    total_bytes, closed = 0, 0
    for p in procs:
        p.stdin.write("stop\n")
        p.stdin.flush()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
        out = p.out  # type: ignore[attr-defined]
        if out.exists():
            res = orjson.loads(out.read_bytes())
            total_bytes += sum(res["bytes"])
            closed += len(res["closed"])
    return {"bytes": total_bytes, "closed": closed}


# -- the in-process variant --------------------------------------------------------------------


class VirtualClock:
    """Monotonic and wall time that advance only when told: a TTL passes in no time."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = time.time()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall


class InProcess:
    """Table, broker, ended store and list cache fed by a call model, no sockets."""

    NODE = "fs1"
    WANTED = frozenset(SUBSCRIBED_EVENTS)

    def __init__(self, plan: Plan, rate: float) -> None:
        self.plan = plan
        self.step = 1.0 / rate  # virtual seconds per call, the daemon variant's pace
        self.clock = VirtualClock()
        self.table = ChannelTable(tombstone_ttl=plan.ttl, clock=self.clock.monotonic)
        self.broker = Broker(self.table, plan.event_buffer)
        self.ended = EndedCalls(15 * 60, plan.ended_max, clock=self.clock.time)
        self.table.listen(self.ended.on_change)
        self.lists = ListCache()
        self.builder = EventBuilder("soak", "127.0.0.1", "::1", bc.new_uuid())
        self.model = CallModel(self.builder, self._emit)
        self.accounts = Accounts()
        self.calls = Calls(self.model.originate, self.model.hangup, self.accounts)
        self.connected = True
        self.drained = 0
        self._subs = [
            gevent.spawn(self._drain, lambda ch: True, self.table.all),
            gevent.spawn(
                self._drain,
                lambda ch, a=self.accounts.fixed[0]: ch.account_id == a,
                lambda a=self.accounts.fixed[0]: self.table.by_account(a),
            ),
        ]
        self.samples: list[tuple[str, int, Counter[str], dict[str, int]]] = []

    def _emit(self, event: Any) -> None:
        if not self.connected or event.name not in self.WANTED:
            return
        body = event.json_body()
        self.table.apply(self.NODE, parse_json(body), body)

    def _drain(self, in_scope: Any, snapshot: Any) -> None:
        for chunk in subscribe(self.broker, in_scope, lambda item: True, snapshot, None):
            self.drained += len(chunk)

    def churn(self, n: int, polls: bool = True, reconnect_at: set[int] | None = None) -> None:
        for _ in range(n):
            self.calls.churn()
            self.clock.advance(self.step)
            done = self.calls.ended
            if polls and done % 50 == 0:
                self.poll()
            if reconnect_at and done in reconnect_at:
                self.reconnect()
            if done % 20 == 0:
                gevent.sleep(0)  # the broker's publishing and the subscribers

    def poll(self) -> None:
        """The portal's polls: 20 fixed accounts' lists, as the API builds them."""
        now = self.clock.time()
        for acc in self.accounts.fixed[:20]:
            self.lists.json(self.table, self.table.account_scope(acc), now)

    def reconnect(self, lost_calls: int = 20) -> None:
        """As NodeLink does it: stale, events lost meanwhile, then a reconcile."""
        self.table.mark_stale(self.NODE)
        self.connected = False
        for _ in range(lost_calls):
            self.calls.churn()
            self.clock.advance(self.step)
        self.connected = True
        live = {u: ch for u, ch in self.model.channels.items() if ch.alive}
        for uuid in self.table.node_uuids(self.NODE) - set(live):
            self.table.remove(self.NODE, uuid, tombstone=False)
        for uuid, ch in live.items():
            if self.table.row(self.NODE, uuid) is None:
                self.table.hydrate(self.NODE, parse_json(uuid_dump_json(self.builder, ch)))
        self.table.clear_stale(self.NODE)

    def settle(self) -> None:
        """One TTL (+2 s) of virtual time with a trickle of calls."""
        for _ in range(int((self.plan.ttl + 2) * TRICKLE)):
            self.calls.churn()
            self.clock.advance(1 / TRICKLE)
            gevent.sleep(0)
        gevent.sleep(self.broker.interval * 2)

    def sample(self, phase: str) -> None:
        # Every sample just after a poll: what the list caches hold then does not depend on
        # how many calls went by since the last one.
        self.poll()
        gevent.sleep(self.broker.interval * 2)
        gc.collect()
        counts, retained = reachable((self.table, self.broker, self.ended, self.lists))
        t = self.table
        sizes = {
            "live_channels": len(t),
            "tombstones": t.tombstone_count(),
            "json_kept": len(t._json_kept),
            "accounts": t.account_count(),
            "owners": len(t._by_owner),
            "devices": len(t._by_device),
            "uuid_index": len(t._by_uuid),
            "ring": len(self.broker.ring),
            "published": len(self.broker._published),
            "ended": len(self.ended),
            "retained_bytes": retained,
            "allocated_blocks": sys.getallocatedblocks(),
        }
        self.samples.append((phase, self.calls.ended, counts, sizes))

    def close(self) -> None:
        self.broker.close()
        gevent.killall(self._subs, block=False)


# Not walked into: the interpreter and the event loop the daemon's structures point at (a
# listener is a bound method, the broker holds gevent events), which are not per call.
_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
)


def reachable(roots: tuple[Any, ...]) -> tuple[Counter[str], int]:
    """Objects reachable from `roots` by type (through gc.get_referents, so strings, bytes
    and tuples are counted too, tracked by gc or not), and their sizes added up. Only what
    the daemon's own structures hold is counted, not the bench's stand-in beside them."""
    counts: Counter[str] = Counter()
    seen: set[int] = set()
    todo = list(roots)
    size = 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        t = type(obj)
        counts[f"{t.__module__}.{t.__qualname__}"] += 1
        size += sys.getsizeof(obj, 0)
        if isinstance(obj, _OPAQUE) or t.__module__.startswith(("gevent", "greenlet")):
            continue
        todo.extend(gc.get_referents(obj))
    return counts, size


def run_inprocess(plan: Plan, rate: float) -> dict[str, Any]:
    ip = InProcess(plan, rate)
    try:
        for _ in range(plan.live):
            ip.calls.start()
        gevent.sleep(0.3)
        ip.sample("ramp")
        ip.churn(max(plan.warmup, int(1.5 * plan.ttl / ip.step)))
        ip.settle()
        ip.sample("before")
        first = ip.calls.ended
        marks = {
            first + plan.calls * (k + 1) // (plan.reconnects + 1) for k in range(plan.reconnects)
        }
        step = max(1, plan.calls // 10)
        t = perf()
        done = 0
        while done < plan.calls:
            n = min(step, plan.calls - done)
            ip.churn(n, reconnect_at=marks)
            done += n
            ip.sample("churn")
        seconds = perf() - t
        ip.settle()
        ip.sample("after")
        if ip.table.problems():
            raise RuntimeError(f"in-process table unsound: {ip.table.problems()[:3]}")
    finally:
        ip.close()
    before = next(s for s in ip.samples if s[0] == "before")
    after = ip.samples[-1]
    # The churn's samples once the tombstones are back at their level (1.5 TTLs into it: the
    # settle before it had let them expire), so that the trend is not their climb back.
    steady_from = before[1] + 1.5 * plan.ttl / ip.step
    churned = [s for s in ip.samples if s[0] == "churn" and s[1] >= steady_from]
    churned = churned if len(churned) >= 3 else [s for s in ip.samples if s[0] == "churn"][-3:]
    limit = max(20, plan.calls // 1000)
    grew = []
    for name, n in after[2].items():
        # Grew with the calls: more after than before, and a count that trends up over the
        # churn's samples (a bounded store's contents wander; a leak climbs).
        trend = slope([(c, counts.get(name, 0)) for _, c, counts, _ in churned]) * plan.calls
        if n - before[2].get(name, 0) > limit and trend > limit:
            grew.append((name, before[2].get(name, 0), n, trend))
    grew.sort(key=lambda x: x[1] - x[2])
    return {
        "samples": ip.samples,
        "grew": grew,
        "limit": limit,
        "seconds": seconds,
        "before": before,
        "after": after,
    }


# -- output ---------------------------------------------------------------------------------


def write_outputs(
    plan: Plan, daemon: dict[str, Any] | None, inproc: dict[str, Any] | None
) -> list[str]:
    """CSV files and the plot; returns the names written."""
    plan.out.mkdir(parents=True, exist_ok=True)
    written = []
    if daemon is not None:
        path = plan.out / "soak-daemon.csv"
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(daemon["rows"][0]))
            w.writeheader()
            w.writerows(daemon["rows"])
        written.append(path.name)
        rows = daemon["rows"]
        phases = [(r["t_s"], r["phase"]) for r in rows]
        series = [
            ("daemon RSS (MiB)", [(r["t_s"], r["rss_kib"] / 1024) for r in rows]),
            ("tombstones / 1,000", [(r["t_s"], r["tombstones"] / 1000) for r in rows]),
            ("live channels / 1,000", [(r["t_s"], r["channels"] / 1000) for r in rows]),
        ]
        written.append(
            plot.write(
                plan.out / "soak",
                "channelsd soak: RSS and table sizes over the day (seconds)",
                series,
                phases,
            )
        )
    if inproc is not None:
        path = plan.out / "soak-objects.csv"
        samples = inproc["samples"]
        first, last = samples[0][2], samples[-1][2]
        types = sorted(
            {n for _, _, c, _ in samples for n in c if max(first.get(n, 0), last.get(n, 0)) >= 50},
        )
        size_keys = list(samples[0][3])
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["phase", "calls", *size_keys, *types])
            for phase, calls, counts, sizes in samples:
                w.writerow(
                    [
                        phase,
                        calls,
                        *[sizes[k] for k in size_keys],
                        *[counts.get(t, 0) for t in types],
                    ]
                )
        written.append(path.name)
    return written


def summary(
    plan: Plan, daemon: dict[str, Any] | None, inproc: dict[str, Any] | None, files: list[str]
) -> tuple[list[str], list[tuple[str, str, bool]]]:
    """Markdown lines and (target, measured, met) rows."""
    lines = [
        "### 10. Soak: a busy day of calls",
        "",
        f"{plan.calls:,} calls churned with {plan.live:,} live (two channels each; "
        f"{1 - ONE_OFF_SHARE:.0%} in {FIXED_ACCOUNTS} fixed accounts, {ONE_OFF_SHARE:.0%} in "
        "one-off tenants), after a warm-up that fills every bounded store "
        f"(`api.ended_calls_max` = {plan.ended_max:,}, `api.event_buffer` = "
        f"{plan.event_buffer:,}) and runs 1.5 TTLs at full speed (tombstones at their steady "
        f"level); `sync.tombstone_ttl` = {plan.ttl:g} s for the run; "
        f"{plan.pollers} clients polling an account list every second, {plan.subscribers} SSE "
        f"subscribers, {plan.reconnects} node reconnects. *Before* / *after*: one TTL + 2 s "
        f"of a trickle ({TRICKLE:g} calls/s, same live set), then, the trickle going on, "
        f"until the RSS is at rest (the mean of the last {REST_WINDOW_S} one-second samples "
        f"less than {REST_SLOPE_KIB} KiB below that of the {REST_WINDOW_S} before, at most "
        f"{SETTLE_MAX_S:g} s): the mean of the last three samples. Command: "
        "`.venv/bin/python bench/soak.py`"
        + (" --quick" if plan.quick else "")
        + f"; files: {', '.join(f'`{x}`' for x in files)}"
        + (
            " (the plot drawn by matplotlib)."
            if any(x.endswith(".png") for x in files)
            else " (the plot as hand-written SVG: matplotlib is not installed)."
        ),
        "",
    ]
    targets: list[tuple[str, str, bool]] = []
    if daemon is not None:
        diff = daemon["after"] - daemon["before"]
        polls = daemon["poll_p99"]
        lines += [
            "| the daemon (`channelsd run`) | value |",
            "|---|---:|",
            f"| RSS with the live set up (ramp) | {daemon['ramp_rss'] / 1024:.1f} MiB |",
            f"| RSS before the churn (bounded stores full) | {daemon['before'] / 1024:.1f} MiB |",
            f"| RSS peak during the churn | {daemon['peak'] / 1024:.1f} MiB |",
            f"| RSS after the churn and one TTL | {daemon['after'] / 1024:.1f} MiB |",
            "| seconds to come to rest after the TTL, before / after | "
            f"{daemon['settled'].get('settle-before', 0)} / "
            f"{daemon['settled'].get('settle-after', 0)} |",
            f"| after − before | {diff / 1024:+.1f} MiB |",
            f"| RSS trend over the churn's second half (least squares) | "
            f"{daemon['rss_slope'] / 1024:+.2f} MiB per 10,000 calls |",
            f"| warm-up: calls, calls/s | {daemon['warmup_calls']:,}, {daemon['warm_rate']:,.0f} |",
            f"| churn: calls/s, daemon CPU | {daemon['calls_per_s']:,.0f}, "
            f"{daemon['churn_cpu']:.0%} |",
            f"| reconnects seen in the daemon's log | {daemon['reconnects']} |",
            f"| account-list polls, worst per-second p99 | "
            f"{max(polls) if polls else float('nan'):.1f} ms |",
            f"| SSE bytes read, subscribers dropped | {daemon['subscribers']['bytes']:,}, "
            f"{daemon['subscribers']['closed']} |",
            "",
        ]
        targets.append(
            (
                f"soak: RSS after {plan.calls:,} calls and one TTL within 5 MiB of before",
                f"{diff / 1024:+.1f} MiB",
                abs(diff) <= RSS_TOLERANCE_KIB,
            )
        )
    if inproc is not None:
        before, after = inproc["before"], inproc["after"]
        lines += [
            "| in process (table, broker, ended store, list cache) | before | after |",
            "|---|---:|---:|",
        ]
        for key in before[3]:
            lines.append(f"| {key} | {before[3][key]:,} | {after[3][key]:,} |")
        channel_type = "channelsd.channel.Channel"
        lines.append(
            f"| `Channel` objects reachable | {before[2].get(channel_type, 0):,} | "
            f"{after[2].get(channel_type, 0):,} |"
        )
        grew = inproc["grew"]
        lines += [
            "",
            "Object types (reachable from the table, broker, ended store and list cache) whose "
            f"count grew by more than {inproc['limit']:,} from before "
            "to after *and* whose least-squares trend over the churn's samples (from 1.5 TTLs "
            "into it) adds as many over the churn (a bounded store's contents wander, a leak "
            "climbs): "
            + (
                ", ".join(f"`{n}` {a:,} → {b:,} (trend +{t:,.0f})" for n, a, b, t in grew[:10])
                if grew
                else "none"
            )
            + f". In-process churn: {inproc['seconds']:.0f} s.",
            "",
        ]
        targets.append(
            (
                f"soak: no object type whose count grew with the calls ({plan.calls:,})",
                f"{len(grew)} grew",
                not grew,
            )
        )
    return lines, targets


def run(plan: Plan) -> tuple[list[str], list[tuple[str, str, bool]], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="channelsd-soak-") as tmp:
        daemon = None if plan.skip_daemon else run_daemon(plan, Path(tmp))
    rate = daemon["calls_per_s"] if daemon else 500.0
    inproc = None if plan.skip_inprocess else run_inprocess(plan, rate)
    files = write_outputs(plan, daemon, inproc)
    lines, targets = summary(plan, daemon, inproc, files)
    return lines, targets, {"daemon": daemon, "inprocess": inproc}


def suite_scenario(suite: Suite) -> None:
    """bench/run.py --only soak: the same soak, reported as a section of the suite."""
    s = suite.s
    plan = plan_for(s.soak_calls, s.soak_live, suite.workdir / "soak", quick=suite.quick)
    lines, targets, data = run(plan)
    if not suite.quick:  # the full run's files are the ones BENCHMARKS.md shows
        kept = BENCH / "soak-output"
        kept.mkdir(exist_ok=True)
        for f in plan.out.iterdir():
            (kept / f.name).write_bytes(f.read_bytes())
        lines += ["(Files copied to `bench/soak-output/`.)", ""]
    suite.report.add("soak", *lines)
    for what, measured, met in targets:
        suite.report.target("soak", what, measured, met)
    suite.data["soak"] = {
        "before": data["daemon"]["before"] if data["daemon"] else None,
        "after": data["daemon"]["after"] if data["daemon"] else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 calls, 200 live")
    ap.add_argument("--calls", type=int, default=None)
    ap.add_argument("--live", type=int, default=None)
    ap.add_argument("--ttl", type=float, default=None, help="sync.tombstone_ttl for the run")
    ap.add_argument("--reconnects", type=int, default=None)
    ap.add_argument("--pollers", type=int, default=None)
    ap.add_argument("--subscribers", type=int, default=None)
    ap.add_argument(
        "--out", default="", help="default: bench/soak-output/ (a temporary one with --quick)"
    )
    ap.add_argument("--skip-daemon", action="store_true")
    ap.add_argument("--skip-inprocess", action="store_true")
    args = ap.parse_args()
    calls = args.calls or (10_000 if args.quick else 200_000)
    live = args.live or (200 if args.quick else 1_000)
    if args.out:
        out = Path(args.out)
    elif args.quick:
        out = Path(tempfile.mkdtemp(prefix="channelsd-soak-quick-"))
    else:
        out = BENCH / "soak-output"
    print(f"soak: files go to {out}", file=sys.stderr)
    plan = plan_for(
        calls,
        live,
        out,
        quick=args.quick,
        ttl=args.ttl,
        reconnects=args.reconnects,
        pollers=args.pollers,
        subscribers=args.subscribers,
    )
    plan.skip_daemon, plan.skip_inprocess = args.skip_daemon, args.skip_inprocess
    watchdog = gevent.spawn_later(3600, lambda: (print("soak: overran 1 h"), os._exit(3)))
    try:
        lines, targets, _ = run(plan)
    finally:
        watchdog.kill(block=False)
    print("\n".join(lines))
    print("| target | measured | |")
    print("|---|---:|---|")
    for what, measured, met in targets:
        print(f"| {what} | {measured} | {'met' if met else '**missed**'} |")
    return 0 if all(met for _, _, met in targets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
