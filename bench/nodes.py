"""Many nodes (issue #16): 20 stand-in FreeSWITCH nodes × 500 live channels beside one daemon.

* **Aggregate ingest.** Each node writes its own share of the burst capture (fresh uuids)
  as fast as the daemon takes it; the figure is events/s from the first byte to the API
  showing the final state. Side by side: one node carrying the same events (the same
  frames, one stand-in holding all 10,000 channels). Interleaved rounds, best of each.
* **A network blip.** Every node's connections are dropped at once and new ones refused;
  meanwhile each node ends some calls and starts others (no event reaches the daemon);
  then all accept again. A node counts as reconciled when the API says so by its answers,
  not by its log or /readyz: each node's calls are in an account of their own, and that
  account's list must hold exactly the stand-in's live channels, none stale; at the end
  the system list must equal all stand-ins' channels together. Two clients ask for lists
  and single channels meanwhile (10 ms apart), whose latency is the API figure.
* **Start-up.** The daemon is stopped and started again beside the same nodes; the figure
  is from just before the process is spawned to the first `GET /v2/channels` answer
  holding exactly every stand-in's channels, none stale (one client, in a process of its
  own, asking again 10 ms after each answer). The worst of a few restarts is the target's
  figure.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import common as bc
import gevent
import load
import orjson

from channelsd.standin.server import StandinSwitch

if TYPE_CHECKING:
    from run import Suite

perf = time.perf_counter


def node_account(i: int) -> str:
    return bc.kazoo_id(f"node-account{i}")


class Fleet:
    """The stand-in nodes; node i's calls are in account node_account(i)."""

    def __init__(self, suite: Suite, count: int, channels_each: int) -> None:
        self.switches: list[StandinSwitch] = []
        for i in range(count):
            sw = StandinSwitch(host=bc.LOOPBACK, hostname=f"standin{i + 1}")
            sw.start()
            suite._cleanup.append(sw.stop)
            self.switches.append(sw)
        self.calls: list[list[str]] = [[] for _ in range(count)]
        for i in range(count):
            self.originate(i, channels_each // 2)

    def originate(self, i: int, calls: int) -> None:
        sw = self.switches[i]
        acc = node_account(i)
        for k in range(calls):
            a, _ = sw.originate(
                "9003",
                {"ecallmgr_Account-ID": acc, "ecallmgr_Owner-ID": bc.kazoo_id(f"{acc}/{k % 20}")},
            )
            self.calls[i].append(a)
            if k % 200 == 0:
                gevent.sleep(0)

    def hangup(self, i: int, calls: int) -> None:
        for _ in range(min(calls, len(self.calls[i]))):
            self.switches[i].hangup(self.calls[i].pop(0))

    def live(self, i: int) -> set[str]:
        return {u for u, ch in self.switches[i].channels.items() if ch.alive}

    def all_live(self) -> set[str]:
        out: set[str] = set()
        for i in range(len(self.switches)):
            out |= self.live(i)
        return out

    @property
    def ports(self) -> list[int]:
        return [sw.port for sw in self.switches]


def _subscribed_all(switches: list[StandinSwitch]) -> bool:
    return all(load.subscribed(sw) for sw in switches)


def _daemon(suite: Suite, name: str, switches: list[StandinSwitch]) -> bc.DaemonProcess:
    d = bc.DaemonProcess(suite.workdir, name, [sw.port for sw in switches])
    suite._cleanup.append(d.stop)
    d.wait_ready(120)
    bc.wait_until(lambda: _subscribed_all(switches), 30, "every node's subscription")
    return d


def _ingest(
    suite: Suite,
    switches: list[StandinSwitch],
    parts: list[list[Any]],
    expected: set[str],
    name: str,
) -> dict[str, Any]:
    """Each switch writes its part at once; the end is the API's first exact answer."""
    d = _daemon(suite, name, switches)
    http = bc.Http(d.http_port)
    try:
        # The nodes' own channels listed once before: their list JSON is then cached in both
        # cases alike, and the table is checked to hold exactly them.
        live = {i["uuid"] for i in http.get_json("/v2/channels")["data"]}
        if live != {u for sw in switches for u, ch in sw.channels.items() if ch.alive}:
            raise RuntimeError(f"{name}: the daemon holds {len(live)} channels, not the nodes'")
        total = sum(len(p) for p in parts)
        cpu0 = d.cpu_seconds()
        sched0 = bc.main_thread_sched(d.pid)
        t0 = perf()
        for sw, part in zip(switches, parts, strict=True):
            sw.send_frames(part)
        bc.wait_until(lambda: all(load.drained(sw) for sw in switches), 600, "all written")
        t_written = perf()
        polls: list[float] = []
        ports = {sw.port for sw in switches}
        done = load.wait_final_state(http, expected, 300, f"{name}:", polls, ports)
        seconds = done - t0
        return {
            "rate": total / seconds,
            "seconds": seconds,
            "written": t_written - t0,
            "cpu": (d.cpu_seconds() - cpu0) / seconds,
            # (ran, waited for a CPU): the hub's, in seconds
            "hub": bc.main_thread_since(d.pid, sched0),
            "poll": polls[-1],
            "rss": d.rss_kib(),
            "events": total,
        }
    finally:
        http.close()
        d.stop()


def many_nodes(suite: Suite) -> None:
    """Aggregate ingest, the blip and the restarts (sections 8 and 9)."""
    s = suite.s
    n, per = s.nodes_count, s.nodes_channels
    t = perf()
    fleet = Fleet(suite, n, per)
    one = Fleet(suite, 1, 0)
    for i in range(n):  # the single node holds the same channels in the same accounts
        acc = node_account(i)
        for k in range(per // 2):
            one.switches[0].originate(
                "9003",
                {"ecallmgr_Account-ID": acc, "ecallmgr_Owner-ID": bc.kazoo_id(f"{acc}/{k % 20}")},
            )
            if k % 200 == 0:
                gevent.sleep(0)
    build_s = perf() - t
    replay = bc.CaptureReplay("json")
    rounds: dict[str, list[dict[str, Any]]] = {"one": [], "many": []}
    for _ in range(s.nodes_rounds):
        parts = [replay.stream(s.nodes_reps) for _ in range(n)]
        cut: set[str] = set()
        for part in parts:
            cut |= bc.final_uuids(part[-replay.cut :])
        whole = [[f for part in parts for f in part]]
        rounds["one"].append(_ingest(suite, one.switches, whole, cut | one.all_live(), "nodes-1"))
        rounds["many"].append(
            _ingest(suite, fleet.switches, parts, cut | fleet.all_live(), f"nodes-{n}")
        )
    idle = {
        "one": _idle_cost(suite, one.switches, "nodes-idle-1"),
        "many": _idle_cost(suite, fleet.switches, f"nodes-idle-{n}"),
    }
    for sw in one.switches:
        sw.stop()
    best_one = max(rounds["one"], key=lambda r: r["rate"])
    best_many = max(rounds["many"], key=lambda r: r["rate"])
    ratio = best_many["rate"] / best_one["rate"]
    blip = _blip(suite, fleet, s.nodes_blip_change)
    suite.data["nodes"] = {
        "one": best_one,
        "many": best_many,
        "ratio": ratio,
        "blip": blip,
        "idle": idle,
        "n": n,
        "per": per,
    }
    _report_nodes(suite, n, per, build_s, rounds, best_one, best_many, ratio, idle, blip)
    _restarts(suite, fleet)


def startup(suite: Suite) -> None:
    """The restarts alone (section 9), beside a fleet of their own."""
    s = suite.s
    _restarts(suite, Fleet(suite, s.nodes_count, s.nodes_channels))


def _restarts(suite: Suite, fleet: Fleet) -> None:
    s = suite.s
    starts = [_startup(suite, fleet) for _ in range(s.startup_restarts)]
    suite.data["startup"] = starts
    _report_startup(suite, s.nodes_count, s.nodes_channels, starts)


def _idle_cost(suite: Suite, switches: list[StandinSwitch], name: str) -> dict[str, float]:
    """A daemon beside these nodes, doing nothing for 3 s: its RSS and CPU."""
    d = _daemon(suite, name, switches)
    try:
        gevent.sleep(1.0)
        cpu0, t0 = d.cpu_seconds(), perf()
        gevent.sleep(3.0)
        return {"rss": d.rss_kib(), "cpu": (d.cpu_seconds() - cpu0) / (perf() - t0)}
    finally:
        d.stop()


def _blip(suite: Suite, fleet: Fleet, change: int) -> dict[str, Any]:
    n = len(fleet.switches)
    d = _daemon(suite, f"nodes-blip-{n}", fleet.switches)
    accounts = [node_account(i) for i in range(n)]
    verifier = bc.Http(d.http_port)
    prober = None
    try:
        for sw in fleet.switches:
            sw.pause_accept(True)
        t_drop = perf()
        for sw in fleet.switches:
            sw.drop_connections()
        for i in range(n):  # while nobody listens: some calls end, others start
            fleet.hangup(i, change)
            fleet.originate(i, change)
        bc.wait_until(lambda: _none_connected(verifier), 30, "the daemon to see every node down")
        truth = [fleet.live(i) for i in range(n)]
        uuids = [u for t in truth for u in t]

        prober = _start_probers(d.http_port, accounts, uuids)
        cpu0 = d.cpu_seconds()
        t_resume = perf()
        for sw in fleet.switches:
            sw.pause_accept(False)
        done_at: dict[int, float] = {}
        ready_at = None
        verify_lat: list[float] = []
        deadline = perf() + 120
        while len(done_at) < n and perf() < deadline:
            for i in range(n):
                if i in done_at:
                    continue
                t = perf()
                items = verifier.get_json(f"/v2/accounts/{accounts[i]}/channels")["data"]
                verify_lat.append(perf() - t)
                if (
                    not any(it["stale"] for it in items)
                    and {it["uuid"] for it in items} == truth[i]
                ):
                    done_at[i] = perf()
            if ready_at is None and verifier.request("GET", "/readyz")[0] == 200:
                ready_at = perf()
            gevent.sleep(0.005)
        everything = set(uuids)
        while perf() < deadline:
            items = verifier.get_json("/v2/channels")["data"]
            if not any(it["stale"] for it in items) and {it["uuid"] for it in items} == everything:
                break
            gevent.sleep(0.01)
        else:
            raise TimeoutError(f"blip: reconciled {len(done_at)} of {n} nodes in 120 s")
        t_all = perf()
        lat, statuses = _stop_probers(prober)
        prober = None
        cpu = d.cpu_seconds() - cpu0
        logged = [float(x) for x in _logged_seconds(d)]
    finally:
        if prober is not None:
            load.stop_process(prober)
        verifier.close()
        d.stop()
    during = [x for t, x in lat if t_resume <= t < t_all]
    node_s = sorted(t - t_resume for t in done_at.values())
    return {
        "n": n,
        "change": change,
        "down_s": t_resume - t_drop,
        "wall": t_all - t_resume,
        "first_node": node_s[0],
        "last_node": node_s[-1],
        "median_node": node_s[len(node_s) // 2],
        "readyz": (ready_at - t_resume) if ready_at else float("nan"),
        "cpu": cpu / (t_all - t_resume),
        "p50": bc.percentile(during, 50),
        "p99": bc.percentile(during, 99),
        "max": max(during) if during else float("nan"),
        "n_api": len(during),
        "statuses": statuses,
        "verify_p50": bc.percentile(verify_lat, 50),
        "logged_max": max(logged) if logged else float("nan"),
        "channels": len(uuids),
    }


def _start_probers(port: int, accounts: list[str], uuids: list[str]) -> subprocess.Popen:
    """The blip's API readers (bench/probe_client.py), in a process of their own."""
    child = bc.spawn(
        [bc.PYTHON, str(Path(__file__).resolve().parent / "probe_client.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    job = {"port": port, "accounts": accounts, "uuids": uuids, "readers": 2}
    child.stdin.write(json.dumps(job) + "\n")
    child.stdin.flush()
    if load.read_line(child, 60) != "ready":
        load.stop_process(child)
        raise RuntimeError("probe client did not start")
    return child


def _stop_probers(child: subprocess.Popen) -> tuple[list[tuple[float, float]], dict[int, int]]:
    child.stdin.write("stop\n")
    child.stdin.flush()
    out = json.loads(load.read_line(child, 60))
    load.stop_process(child)
    return [(t, x) for t, x in out["lat"]], {int(k): v for k, v in out["statuses"].items()}


def _none_connected(http: bc.Http) -> bool:
    status, body = http.request("GET", "/readyz")
    return status == 503 and not any(n["connected"] for n in orjson.loads(body)["nodes"])


def _logged_seconds(d: bc.DaemonProcess) -> list[str]:
    found = re.findall(r"node=fs\d+ reconciled .*seconds=([\d.]+)", d.log_text())
    return found[-len(d.nodes) :]


def _startup(suite: Suite, fleet: Fleet) -> dict[str, Any]:
    """A restart: the daemon running beside the fleet stops; a new one starts. The client
    (bench/startup_client.py) runs in a process of its own, started first."""
    n = len(fleet.switches)
    old = _daemon(suite, f"nodes-before-restart-{n}", fleet.switches)
    old.stop()
    expected = fleet.all_live()
    client = bc.spawn(
        [bc.PYTHON, str(Path(__file__).resolve().parent / "startup_client.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = bc.free_port()
        job = {"port": port, "expected": sorted(expected), "deadline_s": 120}
        client.stdin.write(json.dumps(job) + "\n")
        client.stdin.flush()
        if load.read_line(client, 60) != "ready":
            raise RuntimeError("start-up client did not start")
        d = bc.DaemonProcess(suite.workdir, f"nodes-restart-{n}", fleet.ports, http_port=port)
        suite._cleanup.append(d.stop)
        try:
            res = json.loads(load.read_line(client, 130))
            cpu = d.cpu_seconds()
        finally:
            d.stop()
    finally:
        load.stop_process(client)
    if res["complete_at"] is None:
        raise TimeoutError(f"start-up: no complete list within 120 s: {d.log_text()[-2000:]}")
    if res["ready_at"] > d.started_at:
        raise RuntimeError("start-up client was not polling before the daemon started")
    return {
        "complete": res["complete_at"] - d.started_at,
        "first_answer": res["first_answer_at"] - d.started_at,
        "polls": res["polls"],
        "answers": res["answers"],
        "mb": res["bytes"] / 1e6,
        "channels": len(expected),
        "cpu": cpu,
    }


def _report_nodes(
    suite: Suite,
    n: int,
    per: int,
    build_s: float,
    rounds: dict[str, list[dict[str, Any]]],
    one: dict[str, Any],
    many: dict[str, Any],
    ratio: float,
    idle: dict[str, dict[str, float]],
    blip: dict[str, Any],
) -> None:
    s = suite.s
    lines = [
        "### 8. Many nodes",
        "",
        f"{n} stand-in nodes, each holding {per} live channels ({per // 2} loopback calls "
        f"answered and parked, Kazoo account and owner variables; node i's calls in an "
        f"account of their own), built in {build_s:.1f} s; beside them, one stand-in holding "
        f"the same {n * per:,} channels. Each node writes its own {s.nodes_reps} repetitions "
        f"of the burst capture plus the cut (fresh uuids; {one['events']:,} events in all); "
        "the single node writes the same frames. Figure: events/s from the first byte to the "
        "first `GET /v2/channels` answer holding exactly the expected channels, asked once "
        "the daemon has read every byte the nodes wrote (/proc/net/tcp) and again 10 ms "
        "after each answer (until 2026-12-02 it was asked every 10 ms from the moment the "
        "stand-ins had written everything: with 20 nodes' socket buffers a second of events "
        "ahead, those 10,000-channel lists took a third of the daemon's CPU). Best of "
        f"{s.nodes_rounds} interleaved round(s).",
        "",
        "| nodes | events/s | vs one node | daemon CPU | stand-ins done after | last poll | "
        "daemon RSS after |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in (("1", one), (str(n), many)):
        lines.append(
            f"| {label} | {r['rate']:,.0f} | {r['rate'] / one['rate']:.2f}x | {r['cpu']:.0%} | "
            f"{r['written']:.2f} s of {r['seconds']:.2f} s | {bc.ms(r['poll'])} ms | "
            f"{r['rss'] / 1024:.0f} MiB |"
        )
    lines += [
        "",
        bc.rounds_text("one node", rounds["one"], f"{n} nodes", rounds["many"])
        + " Idle beside the same channels (a fresh daemon, 3 s doing nothing): one node "
        f"RSS {idle['one']['rss'] / 1024:.1f} MiB, CPU {idle['one']['cpu']:.1%}; {n} nodes "
        f"RSS {idle['many']['rss'] / 1024:.1f} MiB, CPU {idle['many']['cpu']:.1%}.",
        "",
        "The daemon's main thread (the hub) in each round, from the kernel's schedstat: on a "
        "CPU / runnable but waiting for one, in seconds: one node "
        + ", ".join(bc.sched_text(r["hub"]) for r in rounds["one"])
        + f"; {n} nodes "
        + ", ".join(bc.sched_text(r["hub"]) for r in rounds["many"])
        + ". Each kind of round applies the same events every time: its time on a CPU varies "
        "only with how fast the machine ran that work.",
        "",
        f"**A network blip.** Every node's connections dropped at once, new ones refused for "
        f"{blip['down_s']:.2f} s while each node ended {blip['change']} calls and started "
        f"{blip['change']} (the daemon hears of none of it), then all accept again. "
        "Reconciled = the node's account list holds exactly its stand-in's live channels, "
        "none stale (asked in turn, 5 ms apart), and at the end the system list equals all "
        f"{blip['channels']:,} channels. Times from the moment the nodes accept again.",
        "",
        "| what | value |",
        "|---|---:|",
        f"| first / median / last node reconciled (API) | {blip['first_node']:.2f} / "
        f"{blip['median_node']:.2f} / {blip['last_node']:.2f} s |",
        f"| every node and the system list right (API) | {blip['wall']:.2f} s |",
        f"| /readyz said ready (the daemon's word) | {blip['readyz']:.2f} s |",
        f"| slowest reconcile as the daemon logs it | {blip['logged_max']:.2f} s |",
        f"| daemon CPU meanwhile | {blip['cpu']:.0%} |",
        f"| API requests meanwhile (statuses) | {blip['n_api']} ({blip['statuses']}) |",
        f"| API p50 / p99 / max meanwhile | {bc.ms(blip['p50'])} / {bc.ms(blip['p99'])} / "
        f"{bc.ms(blip['max'])} ms |",
        "",
    ]
    suite.report.add("nodes", *lines)
    suite.report.target(
        "nodes",
        f"{n} nodes × {per} channels: aggregate ingest ≥ 0.9× of one node with the same events",
        f"{ratio:.2f}×",
        ratio >= 0.9,
    )
    suite.report.target(
        "nodes",
        f"all {n} reconnecting at once: every node reconciled (API) ≤ 5 s",
        f"{blip['wall']:.2f} s",
        blip["wall"] <= 5,
    )
    suite.report.target(
        "nodes", "… API p99 ≤ 50 ms meanwhile", f"{bc.ms(blip['p99'])} ms", blip["p99"] <= 0.05
    )


def _report_startup(suite: Suite, n: int, per: int, starts: list[dict[str, Any]]) -> None:
    worst = max(starts, key=lambda r: r["complete"])
    lines = [
        "### 9. Start-up",
        "",
        f"A daemon running beside the {n} nodes × {per} channels is stopped (SIGTERM) and a "
        "new `channelsd run` started. From just before the process is spawned: the first "
        "HTTP answer, and the first `GET /v2/channels` answer holding exactly every "
        f"stand-in's {worst['channels']:,} channels, none stale (one client in a process of "
        "its own, asking again 10 ms after each answer; until 2026-12-02 it ran in the "
        "bench's process beside the 20 stand-ins, and parsing each ~11 MB answer there held "
        "back their answers to the daemon's `uuid_dump`s).",
        "",
        "| restart | first HTTP answer | first complete, correct list | daemon CPU until then "
        "| lists answered meanwhile (MB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {k + 1} | {r['first_answer']:.2f} s | {r['complete']:.2f} s | {r['cpu']:.2f} s | "
        f"{r['answers']} ({r['mb']:.0f}) |"
        for k, r in enumerate(starts)
    ]
    lines += [
        "",
        "The lists answered before the complete one are the measurement's own cost to the "
        "daemon (each a system-wide list of what it held then).",
    ]
    suite.report.add("startup", *lines, "")
    suite.report.target(
        "startup",
        f"restart beside {n} nodes × {per}: first complete, correct system list ≤ 3 s "
        f"(worst of {len(starts)})",
        f"{worst['complete']:.2f} s",
        worst["complete"] <= 3,
    )
