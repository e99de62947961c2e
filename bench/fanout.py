"""Fan-out (issue #16): a crowd of live-event subscribers on one account while the daemon ingests.

Two measurements, side by side in one run:

* **Throughput.** The burst capture, every channel put in a Kazoo account (a share of them in
  the watched account), is written as fast as the daemon takes it, with and without the
  crowd (interleaved rounds, best of each); the figure is events/s from the first byte to the
  API showing the final state, as in the ingest scenario.
* **Lag.** Probe channels in the watched account get a CALL_UPDATE with a new callee name
  (`benchprobe-NNNNNN`) 20 times a second, rotating over 64 channels so that the broker
  never folds two probes of one channel into one message. A probe's lag, for one
  subscriber: from the moment the stand-in started writing the frame that carries it to the
  daemon's socket (the start of the `sendall` of the chunk holding it; a proxy on the
  stand-in's socket reads the monotonic clock) to the moment that subscriber's process had
  read the whole message carrying the new name (the same clock, read right after the
  `recv` that completed the message; CLOCK_MONOTONIC is one clock for every process of the
  machine). A probe a subscriber never receives counts as lost. Measured while the stand-in
  writes the same kind of traffic at a paced 5,000 events/s (the target), and also during
  the full-speed throughput round (where it includes the input queued ahead of the probe).

The subscribers run in processes of their own (bench/subscriber_proc.py: epoll, no gevent,
at nice READER_NICE: the CPU they use is what the daemon leaves), a few hundred each, plus one
canary process with a single subscriber connected last; their CPU is measured, and the canary's
lag beside the crowd's shows whether the readers themselves were late.

Each kind of subscriber in KINDS gets the same rounds, tables and targets, one after the
other: SSE (`GET /v2/accounts/{acc}/channel_events`), then Kazoo's websocket (blackhole's
protocol on the daemon's websocket port, each socket subscribing to the watched account's
`call.*.*` with the bench token, as a monster-ui app does). A CALL_UPDATE is no Kazoo call
event (blackhole sends nothing for it under any binding), so the websocket's probes are
CHANNEL_HOLD and CHANNEL_UNHOLD in turn, carrying the new callee name the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import common as bc
import gevent
import load

if TYPE_CHECKING:
    from run import Suite

perf = time.perf_counter
clock = time.monotonic
MARKER = b"benchprobe-"
PROBE_CHANNELS = 64
PROBE_RATE = 20.0  # probes per second
PACED_RATE = 5000.0  # events/s of the paced phase (the lag target)
# The crowd's readers' nice value (the canary keeps the bench's, as the daemon it starts does).
# They stand for browsers on other machines; sharing the daemon's two cores at its priority,
# they kept the hub waiting for a CPU up to ~0.1 s of a websocket crowd round while it had
# events to apply (schedstat; up to 0.22 s in earlier suites), which a crowd elsewhere would not.
READER_NICE = 19
MAX_BACKLOG = 2000  # frames the stand-in may hold queued during the full-speed rounds

# What a monster-ui app subscribes to for an account's calls: every call event.
BINDING = "call.*.*"


@dataclass(frozen=True)
class Kind:
    """One kind of subscriber: where it connects, and what the probes are for it."""

    title: str
    path: Callable[[str], str]  # the stream's path for an account
    # The probes' FreeSWITCH events, taken in turn on each probe channel: each must be one
    # that this kind of stream tells its subscribers about, carrying the channel's new name.
    probes: tuple[str, ...]
    websocket: bool = False  # on the daemon's websocket port, subscribing to BINDING
    note: str = ""


KINDS: dict[str, Kind] = {
    "sse": Kind(
        "SSE `/v2/accounts/{acc}/channel_events`",
        lambda acc: f"/v2/accounts/{acc}/channel_events",
        ("CALL_UPDATE",),
    ),
    "websocket": Kind(
        f"Kazoo websocket, `subscribe` to `{BINDING}` of the account",
        lambda acc: "/",
        # Hold then unhold, never two holds in a row: what a switch would send. Blackhole has
        # no event for a CALL_UPDATE (channelsd.blackhole.events.EVENTS), the SSE's probe.
        ("CHANNEL_HOLD", "CHANNEL_UNHOLD"),
        websocket=True,
        note=(
            "Each socket upgrades on the daemon's websocket port (`websocket.port`, as "
            "blackhole's 5555) and sends one `subscribe` with the bench token, the watched "
            f"account and `{BINDING}`, as monster-ui does; it counts as connected once the "
            "success reply is read. Blackhole sends no event for a CALL_UPDATE, the SSE "
            "probe, so here each probe is a CHANNEL_HOLD or CHANNEL_UNHOLD (in turn on each "
            "probe channel) carrying the new callee name; its Kazoo event's `data` names it."
        ),
    ),
}


class TimedSocket:
    """A stand-in connection's socket, noting when the write of each probe's frame starts."""

    def __init__(self, sock: Any, written: dict[int, float]) -> None:
        self._sock = sock
        self._written = written

    def sendall(self, data: bytes) -> None:
        t = clock()
        at = data.find(MARKER)
        while at >= 0:
            digits = data[at + len(MARKER) : at + len(MARKER) + 6]
            if digits.isdigit():
                self._written.setdefault(int(digits), t)
            at = data.find(MARKER, at + 200)  # a frame names its probe in three headers
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class Prober:
    """Sends the probes, 20 a second, and remembers when each was queued and written."""

    def __init__(
        self, sw: Any, gen: bc.SyntheticChannels, uuids: list[str], events: tuple[str, ...]
    ) -> None:
        self.sw, self.gen, self.uuids, self.events = sw, gen, uuids, events
        self.written: dict[int, float] = {}
        self.queued: dict[int, float] = {}
        self.next = 0
        self._glet: gevent.Greenlet | None = None
        for conn in list(sw.connections):
            wants = any(conn.wants(e) for e in events)
            if wants and not isinstance(conn.sock, TimedSocket):
                conn.sock = TimedSocket(conn.sock, self.written)

    def start(self) -> list[int]:
        """Start probing; returns the list that the probes of this phase are appended to."""
        ids: list[int] = []
        self._glet = gevent.spawn(self._loop, ids)
        return ids

    def _loop(self, ids: list[int]) -> None:
        t0 = perf()
        sent = 0
        while perf() - t0 < 900:
            due = int((perf() - t0) * PROBE_RATE) + 1
            while sent < due:
                k = self.next
                self.next += 1
                uid = self.uuids[k % len(self.uuids)]
                event = self.events[k // len(self.uuids) % len(self.events)]
                frame = self.gen.update(uid, f"{MARKER.decode()}{k:06d}", event)
                self.queued[k] = clock()
                self.sw.send_frames([frame])
                ids.append(k)
                sent += 1
            gevent.sleep(0.005)

    def stop(self) -> None:
        if self._glet is not None:
            self._glet.kill(block=True, timeout=2)
            self._glet = None


@dataclass
class Crowd:
    """The subscriber processes (and the canary)."""

    procs: list[subprocess.Popen]
    outs: list[Path]
    counts: list[int]

    def cpu(self) -> list[float]:
        return [bc.proc_cpu(p.pid) for p in self.procs]

    def collect(self) -> list[dict[str, Any]]:
        results = []
        for p in self.procs:
            if p.poll() is None:
                p.stdin.write("stop\n")
                p.stdin.flush()
        for p, out in zip(self.procs, self.outs, strict=True):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
            results.append(json.loads(out.read_text()) if out.exists() else {})
        return results

    def kill(self) -> None:
        for p in self.procs:
            load.stop_process(p)


def start_crowd(
    workdir: Path,
    kind: str,
    port: int,
    path: str,
    total: int,
    procs: int,
    tag: str,
    extra: tuple[str, ...] = (),
) -> Crowd:
    """`total` subscribers: the rest over `procs` processes, then one canary process with one
    subscriber, connected last (the daemon wakes its subscribers roughly in the order they came, so
    the canary is at the end of every round: if it is no later than the crowd, the crowd's
    readers did not add to the lag). The crowd runs at nice READER_NICE, the canary at the
    bench's own priority, so that the comparison also shows what the crowd's priority cost it."""
    counts = [len(range(i, total - 1, procs)) for i in range(procs)]
    counts = [c for c in counts if c] + [1]
    started: list[subprocess.Popen] = []
    outs: list[Path] = []

    def spawn(i: int, n: int, nice: int) -> subprocess.Popen:
        out = workdir / f"subs-{tag}-{i}.json"
        out.unlink(missing_ok=True)
        outs.append(out)
        options = ("--marker", MARKER.decode(), "--nice", str(nice), *extra)
        proc = load.spawn_subscribers(kind, port, path, n, out, *options)
        started.append(proc)
        return proc

    def ready(proc: subprocess.Popen, n: int) -> None:
        line = load.read_line(proc, 120)
        if line != f"ready {n}":
            raise RuntimeError(f"subscriber process: {line!r} (wanted ready {n})")

    try:
        crowd = [spawn(i, n, READER_NICE) for i, n in enumerate(counts[:-1])]
        for proc, n in zip(crowd, counts, strict=False):
            ready(proc, n)
        ready(spawn(len(counts) - 1, 1, 0), 1)
    except BaseException:
        for p in started:
            load.stop_process(p)
        raise
    return Crowd(started, outs, counts)


def _nices(values: list[int | None]) -> str:
    return ", ".join("?" if v is None else str(v) for v in values)


def lag_stats(
    results: list[dict[str, Any]], written: dict[int, float], probes: list[int]
) -> dict[str, Any]:
    """Per-subscriber lag of the given probes: every subscriber's p99, and all lags pooled."""
    wanted = set(probes)
    per_sub: list[list[float]] = []
    pooled: list[float] = []
    canary: list[float] = []
    lost = 0
    unwritten = sum(1 for k in probes if k not in written)
    for proc_i, res in enumerate(results):
        got: dict[int, dict[int, float]] = {}
        for sub, k, t in res.get("received", []):
            if k in wanted:
                got.setdefault(sub, {})[k] = t
        for sub in range(res.get("count", 0)):
            mine = got.get(sub, {})
            lags = [mine[k] - written[k] for k in probes if k in written and k in mine]
            lost += sum(1 for k in probes if k in written and k not in mine)
            per_sub.append(lags)
            pooled += lags
            if proc_i == len(results) - 1:
                canary += lags
    p99s = [bc.percentile(x, 99) for x in per_sub if x]
    return {
        "subscribers": len(per_sub),
        "probes": len(probes),
        "unwritten": unwritten,
        "lost": lost,
        "p50": bc.percentile(pooled, 50),
        "p99": bc.percentile(pooled, 99),
        "max": max(pooled) if pooled else float("nan"),
        "worst_p99": max(p99s) if p99s else float("nan"),
        "median_p99": bc.percentile(p99s, 50),
        "canary_p99": bc.percentile(canary, 99),
        "canary_p50": bc.percentile(canary, 50),
    }


def fanout(suite: Suite) -> None:
    """Every kind of subscriber in KINDS, one after the other."""
    for kind in KINDS:
        _fanout(suite, kind)


def _fanout(suite: Suite, kind: str) -> None:
    s = suite.s
    watched = bc.kazoo_id("fanout-watched")
    others = [bc.kazoo_id(f"fanout-account{i}") for i in range(99)]
    every = max(1, round(1 / s.fanout_share))
    replay = bc.CaptureReplay(
        "json", account_of=lambda k: watched if k % every == 0 else others[k % len(others)]
    )
    frames = replay.stream(s.fanout_reps)
    expected_cut = bc.final_uuids(frames[-replay.cut :])
    in_watched = sum(1 for k, a in replay.accounts.items() if a == watched)
    title = KINDS[kind].title
    rounds: dict[str, list[dict[str, Any]]] = {"none": [], "crowd": []}
    for _ in range(s.fanout_rounds):
        rounds["none"].append(_round(suite, frames, expected_cut, replay, watched, 0, kind))
        rounds["crowd"].append(
            _round(suite, frames, expected_cut, replay, watched, s.fanout_subscribers, kind)
        )
    none = max(rounds["none"], key=lambda r: r["rate"])
    crowd = max(rounds["crowd"], key=lambda r: r["rate"])
    # The lag target must hold in every crowd round: the worst round's paced phase is the one
    # shown and judged, and a probe lost in any round fails it (until 2026-12-06 it was the
    # best round's, and the others' losses went unchecked: an outside review).
    paced = max((r["paced"] for r in rounds["crowd"]), key=lambda x: x["worst_p99"])
    lost_all = sum(r["paced"]["lost"] for r in rounds["crowd"])
    unwritten_all = sum(r["paced"]["unwritten"] for r in rounds["crowd"])
    burst = crowd["burst_lag"]
    ratio = crowd["rate"] / none["rate"]
    n = s.fanout_subscribers
    suite.data.setdefault("fanout", {})[kind] = {
        "none": none,
        "crowd": crowd,
        "ratio": ratio,
        "paced": paced,
    }
    lines = [
        f"### 7. Fan-out: live-event subscribers on one account ({kind})",
        "",
        f"{n:,} subscribers ({title}) on one account, in {s.fanout_procs} reader process(es) "
        f"of their own (epoll, no gevent, at nice {READER_NICE}: they stand for browsers on "
        "other machines, and take the CPU the daemon leaves) plus a canary process at the "
        "bench's priority holding one of them. Ingest: "
        f"the burst capture with every channel in a Kazoo account, 1 in {every} in the "
        f"watched one ({in_watched} of the capture's channels per repetition), "
        f"{s.fanout_reps} repetitions plus the cut ({len(frames):,} events), written as fast "
        f"as the daemon takes them (at most {MAX_BACKLOG:,} frames queued in the stand-in, "
        f"so that probes interleave), plus {PROBE_CHANNELS} probe channels in the watched "
        f"account updated {PROBE_RATE:g} times a second. Rate: events/s from the first "
        "byte to the API showing the final state (asked once the daemon has read every byte "
        "written, as in the ingest scenario); best of "
        f"{s.fanout_rounds} interleaved round(s) each. Lag: " + _LAG_DEFINITION,
        *(["", KINDS[kind].note] if KINDS[kind].note else []),
        "",
        "| subscribers | events/s to final state | vs none | daemon CPU | stand-in done after | "
        "messages per subscriber | MB streamed |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in (("0", none), (f"{n:,}", crowd)):
        lines.append(
            f"| {label} | {r['rate']:,.0f} | {r['rate'] / none['rate']:.2f}x | "
            f"{r['daemon_cpu']:.0%} | {r['written']:.2f} s of {r['seconds']:.2f} s | "
            f"{r.get('msgs_per_sub', 0):,.0f} | {r.get('bytes', 0) / 1e6:,.1f} |"
        )
    lines += [
        "",
        bc.rounds_text("none", rounds["none"], f"{n:,} subscribers", rounds["crowd"]),
        "",
        "The paced phase of each crowd round, its worst subscriber's p99: "
        + ", ".join(f"{bc.ms(r['paced']['worst_p99'])} ms" for r in rounds["crowd"])
        + f"; probes lost in all of them: {lost_all:,} (unwritten: {unwritten_all:,}). The "
        "row below is the worst round's.",
        "",
        "| lag (ms) | probes | lost | p50 | p99 (all) | worst subscriber's p99 | median "
        "subscriber's p99 | canary p50 / p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, lag in (
        (f"ingesting {paced['rate']:,.0f} ev/s (paced)", paced),
        ("full-speed round (input queued ahead of the probe included)", burst),
    ):
        lines.append(
            f"| {label} | {lag['probes']} × {lag['subscribers']:,} | {lag['lost']:,} | "
            f"{bc.ms(lag['p50'])} | {bc.ms(lag['p99'])} | {bc.ms(lag['worst_p99'])} | "
            f"{bc.ms(lag['median_p99'])} | {bc.ms(lag['canary_p50'])} / "
            f"{bc.ms(lag['canary_p99'])} | {bc.ms(lag['max'])} |"
        )
    cpu_full = ", ".join(f"{c:.0%}" for c in crowd["sub_cpu"])
    cpu_paced = ", ".join(f"{c:.0%}" for c in paced["sub_cpu"])
    lines += [
        "",
        "Are the readers the bottleneck? Reader processes' CPU (the canary last, share of one "
        f"core): full-speed round {cpu_full}; paced phase {cpu_paced}; reads that filled "
        f"the whole 256 KiB buffer: {crowd['full_reads']:,}. The bench process (stand-in, "
        f"feeder, probes) used {crowd['load_cpu']:.0%} of a core in the full-speed round. "
        "Subscribers dropped by the daemon: "
        f"{crowd['closed'] or 'none'}. The canary reads one socket in an idle process and "
        "was connected last (the daemon wakes its subscribers roughly in the order they "
        "came): a crowd later than the canary would mean the readers (their work or their "
        "priority), not the daemon, were late; nice values in effect, the readers' (the "
        f"canary last) {_nices(crowd['nice'])}, the daemon's {crowd['daemon_nice']}. The daemon "
        f"used {paced['daemon_cpu']:.0%} of a core in the paced phase.",
        "",
        "The daemon's main thread (the hub: ingest, the API, the publishes) in the full-speed "
        "rounds, from the kernel's schedstat: on a CPU / runnable but waiting for one, in "
        "seconds: none "
        + ", ".join(bc.sched_text(r["hub"]) for r in rounds["none"])
        + f"; {n:,} subscribers "
        + ", ".join(bc.sched_text(r["hub"]) for r in rounds["crowd"])
        + ". The wait is CPU the machine's other work (the readers, the stand-in, the "
        "courier's sends) took from the hub while it had events to apply.",
        "",
    ]
    suite.report.add("fanout", *lines)
    suite.report.target(
        "fanout",
        f"{n:,} subscribers on one account ({kind}): ingest ≥ 0.8× of none",
        f"{ratio:.2f}×",
        ratio >= 0.8,
    )
    ok = paced["worst_p99"] <= 0.2 and lost_all == 0 and unwritten_all == 0
    suite.report.target(
        "fanout",
        # The kind in the text: a target is keyed by it (report.Target.key), and the kinds'
        # lag rows would otherwise be one.
        f"… ({kind}) each subscriber's lag p99 ≤ 200 ms, ingesting {PACED_RATE:,.0f} ev/s, "
        "none lost",
        f"{bc.ms(paced['worst_p99'])} ms worst, {lost_all:,} lost",
        ok,
    )


_LAG_DEFINITION = (
    "from the moment the stand-in starts writing the frame carrying a probe to the daemon's "
    "socket (start of its `sendall`) to the moment a subscriber's process has read the whole "
    "message carrying the probe's value (CLOCK_MONOTONIC in both processes); a probe a "
    "subscriber never receives is lost. The paced phase (the target) writes the same kind of "
    f"traffic at {PACED_RATE:,.0f} events/s for a few seconds after the full-speed round."
)


def _round(
    suite: Suite,
    frames: list[Any],
    expected_cut: set[str],
    replay: bc.CaptureReplay,
    watched: str,
    subscribers: int,
    kind: str,
) -> dict[str, Any]:
    s = suite.s
    sw = suite.switch()
    how = KINDS[kind]
    # One bench token opens every stream: the per-token and per-account caps (32, 64 by
    # default, against a tenant taking every place) are raised to the crowd's size.
    places = subscribers + 16
    limits = {
        "max_streams": places,
        "max_streams_per_token": places,
        "max_streams_per_account": places,
        "max_connections": places + 64,
    }
    ws: dict[str, Any] | None = None
    if how.websocket:
        # Likewise the websocket's caps per server, client address and token (512, 64, 16);
        # the same in the rounds without subscribers, so that only the crowd differs.
        ws = {
            "port": bc.free_port(),
            "max_sockets": places,
            "max_sockets_per_client": places,
            "max_sockets_per_token": places,
        }
    d = suite.daemon(f"fanout-{kind}{subscribers}", sw, http=limits, websocket=ws)
    http = bc.Http(d.http_port)
    crowd: Crowd | None = None
    gen = bc.SyntheticChannels([watched])
    try:
        probe_uuids = []
        setup = []
        for _ in range(PROBE_CHANNELS):
            uid, fr = gen.channel(watched, keep=True)
            probe_uuids.append(uid)
            setup += fr
        sw.send_frames(setup)
        last = probe_uuids[-1]
        bc.wait_until(
            lambda: http.request("GET", f"/v2/accounts/{watched}/channels/{last}")[0] == 200,
            30,
            "probe channels",
        )
        if subscribers:
            crowd = start_crowd(
                suite.workdir,
                kind,
                d.ws_port if how.websocket and d.ws_port is not None else d.http_port,
                how.path(watched),
                subscribers,
                s.fanout_procs,
                f"{kind}{subscribers}",
                ("--account", watched, "--binding", BINDING) if how.websocket else (),
            )
        prober = Prober(sw, gen, probe_uuids, how.probes)
        expected = expected_cut | set(probe_uuids)
        # -- full speed ------------------------------------------------------------------
        cpu0, lcpu0 = d.cpu_seconds(), load.load_cpu()
        sched0 = bc.main_thread_sched(d.pid)
        sub0 = crowd.cpu() if crowd else []
        t0 = perf()
        burst_probes = prober.start()
        i = 0
        while i < len(frames):
            if load.backlog(sw) > MAX_BACKLOG:
                gevent.sleep(0.001)
                continue
            sw.send_frames(frames[i : i + 500])
            i += 500
            gevent.sleep(0)
        bc.wait_until(lambda: load.drained(sw), 600, "the stand-in to write everything")
        t_written = perf()
        prober.stop()
        done = load.wait_final_state(http, expected, 300, "fan-out:", ports={sw.port})
        seconds = done - t0
        out: dict[str, Any] = {
            "rate": len(frames) / seconds,
            "seconds": seconds,
            "written": t_written - t0,
            "daemon_cpu": (d.cpu_seconds() - cpu0) / seconds,
            "load_cpu": (load.load_cpu() - lcpu0) / seconds,
            # (ran, waited for a CPU): the hub's, in seconds
            "hub": bc.main_thread_since(d.pid, sched0),
        }
        if crowd is not None:
            sub1 = crowd.cpu()
            out["sub_cpu"] = [(b - a) / seconds for a, b in zip(sub0, sub1, strict=True)]
            gevent.sleep(1.0)  # the last probes' messages
            # -- paced: the lag target --------------------------------------------------
            churn = load.Churn(sw, replay, PACED_RATE)
            churn.start()
            gevent.sleep(0.5)
            p0, pt0, dcpu0 = crowd.cpu(), perf(), d.cpu_seconds()
            paced_probes = prober.start()
            gevent.sleep(s.fanout_paced_s)
            prober.stop()
            rate = churn.achieved()
            churn.stop()
            paced_s = perf() - pt0
            paced_cpu = [(b - a) / paced_s for a, b in zip(p0, crowd.cpu(), strict=True)]
            daemon_paced = (d.cpu_seconds() - dcpu0) / paced_s
            gevent.sleep(1.0)
            results = crowd.collect()
            out["bytes"] = sum(sum(r.get("bytes", [])) for r in results)
            msgs = [m for r in results for m in r.get("messages", [])]
            out["msgs_per_sub"] = sum(msgs) / max(1, len(msgs))
            out["full_reads"] = sum(r.get("full_reads", 0) for r in results)
            out["nice"] = [r.get("nice") for r in results]
            out["daemon_nice"] = os.getpriority(os.PRIO_PROCESS, d.pid)
            out["closed"] = sum(len(r.get("closed", {})) for r in results)
            out["burst_lag"] = lag_stats(results, prober.written, burst_probes)
            paced = lag_stats(results, prober.written, paced_probes)
            paced["rate"] = rate
            paced["sub_cpu"] = paced_cpu
            paced["daemon_cpu"] = daemon_paced
            out["paced"] = paced
        return out
    finally:
        if crowd is not None:
            crowd.kill()
        http.close()
        d.stop()
        sw.stop()
