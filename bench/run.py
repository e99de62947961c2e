"""channelsd end-to-end benchmark suite (issues #4, #16, #17): one command, one Markdown report.

    .venv/bin/python bench/run.py             # the whole suite once (~12 min, quiet machine)
    .venv/bin/python bench/run.py --runs 3    # three times in a row: every target must hold in all
    .venv/bin/python bench/run.py --quick     # smaller sizes, a smoke test of the instrument
    .venv/bin/python bench/run.py --write     # ... and put the report into BENCHMARKS.md

Options: `--only ingest,reads,...` (see ORDER; `soak` runs only when named), `--no-profile`
(skip the profiled re-runs of scenarios that miss a target), `--no-whatif`, `--out FILE`
(report copy), `--keep` (keep the work directory).

How it is measured: the daemon under test runs as `python -m channelsd run -c <generated
toml>` in its own process; the stand-ins FreeSWITCH (channelsd.standin, real ESL over TCP), the
baselines' senders and every HTTP client run in this process, on the other core; the baseline
readers and the fan-out's subscribers run in processes of their own (this process's cyclic
garbage collector is off while a scenario runs: its full collections, up to 200 ms by the
many-nodes scenario, stopped the stand-ins and clients inside measured rounds). All traffic is
on 127.0.0.1. Every comparison is measured in the same run and given as a ratio. Every loop is
bounded in count and time, every child process dies with this one, and a watchdog ends the
suite if it overruns. Results the daemon reports are not trusted: ingest ends when the HTTP API
shows exactly the channels the capture leaves up, populations are confirmed through the API,
reconciles are checked against the stand-ins' own channel lists, and the clients' own CPU is
measured beside every read figure.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import compileall  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import capacity  # noqa: E402
import common as bc  # noqa: E402
import fanout  # noqa: E402
import gevent  # noqa: E402
import load  # noqa: E402
import nodes  # noqa: E402
import soak  # noqa: E402
from load import (  # noqa: E402
    Churn,
    LoadResult,
    RawEsl,
    drained,
    http_load,
    http_load_apart,
    load_cpu,
    read_line,
    stop_process,
    subscribed,
)
from report import (  # noqa: E402
    MARK_BEGIN,
    MARK_END,
    Report,
    RunResult,
    Target,
    demote,
    machine,
    pace_text,
    per_run,
    targets_table,
    write_benchmarks,
)

from channelsd.config import SyncConfig  # noqa: E402
from channelsd.events import parse_json  # noqa: E402
from channelsd.gzipped import GZIP_ABOVE  # noqa: E402
from channelsd.memory import TRIM_EVERY  # noqa: E402
from channelsd.node import SUBSCRIBED_EVENTS  # noqa: E402
from channelsd.standin.server import StandinSwitch  # noqa: E402
from channelsd.table import ChannelTable  # noqa: E402

perf = time.perf_counter
NAMES = " ".join(SUBSCRIBED_EVENTS)
# FreeSWITCH's own `show channels as json`, measured on a real switch of this machine type.
FS_SHOW_CHANNELS_MS = {100: 3.2, 500: 15.0, 980: 42.0}
BENCH = Path(__file__).resolve().parent
NOISY = 0.25  # cores of other processes' CPU above which a scenario is run again
POLL_PERIOD = 1.0  # seconds between one dashboard's requests in the open-loop row
RETRIES = 2
ORDER = (
    "ingest",
    "reads",
    "fs",
    "memory",
    "reconcile",
    "actions",
    "fanout",
    "nodes",
    "startup",
    "soak",
)
# Scenarios run when none is named: the soak (issue #17) has its own script and is long.
DEFAULT = tuple(k for k in ORDER if k not in ("soak", "startup"))
# What else a scenario reports (its sections and targets move with it between retries).
OWNS = {"nodes": ("nodes", "startup")}


@dataclass
class Sizes:
    ingest_reps: int  # full repetitions of the capture per run (plus one cut repetition)
    ingest_rounds: int  # floor / greenswitch / channelsd, interleaved, best of
    reads_channels: int
    reads_accounts: int
    case_seconds: float
    fs_samples: int
    memory_counts: tuple[int, ...]
    memory_ended: int  # ended calls put into the store (its configured maximum)
    reconcile_channels: int
    action_samples: int
    fanout_subscribers: int
    fanout_procs: int  # reader processes besides the canary
    fanout_reps: int
    fanout_rounds: int
    fanout_share: float  # share of the ingested channels in the watched account
    fanout_paced_s: float
    nodes_count: int
    nodes_channels: int
    nodes_reps: int  # capture repetitions each node writes (plus the cut)
    nodes_rounds: int
    nodes_blip_change: int  # calls each node ends, and starts, while disconnected
    startup_restarts: int
    soak_calls: int
    soak_live: int


FULL = Sizes(
    ingest_reps=40,
    ingest_rounds=3,
    reads_channels=10_000,
    reads_accounts=100,
    case_seconds=4.0,
    fs_samples=100,
    memory_counts=(1_000, 10_000, 100_000),
    memory_ended=10_000,
    reconcile_channels=10_000,
    action_samples=300,
    fanout_subscribers=1_000,
    fanout_procs=2,
    fanout_reps=40,
    # Five rounds of each kind, not three: on these VMs the same events cost the hub up to
    # half again as much CPU from one round to the next (the machine's speed of the moment),
    # so that the best of three of each was sometimes a slow spell's. The noise only slows a
    # round, so the best of each kind approaches the noise-free ratio from below as rounds are
    # added; the median of paired rounds' ratios stays below it (an outside review's
    # simulation: BENCHMARKS.md, issue #16, 2026-12-06). The fan-out's lag target holds in
    # every round.
    fanout_rounds=5,
    fanout_share=0.01,
    fanout_paced_s=8.0,
    nodes_count=20,
    nodes_channels=500,
    nodes_reps=2,
    nodes_rounds=5,  # (as fanout_rounds)
    nodes_blip_change=25,
    startup_restarts=3,
    soak_calls=200_000,
    soak_live=1_000,
)
QUICK = Sizes(
    ingest_reps=8,
    ingest_rounds=1,
    reads_channels=2_000,
    reads_accounts=20,
    case_seconds=1.0,
    fs_samples=40,
    memory_counts=(1_000, 5_000),
    memory_ended=1_000,
    reconcile_channels=2_000,
    action_samples=60,
    fanout_subscribers=100,
    fanout_procs=1,
    fanout_reps=4,
    fanout_rounds=1,
    fanout_share=0.01,
    fanout_paced_s=2.0,
    nodes_count=5,
    nodes_channels=100,
    nodes_reps=1,
    nodes_rounds=1,
    nodes_blip_change=5,
    startup_restarts=1,
    soak_calls=10_000,
    soak_live=200,
)


# -- the suite ----------------------------------------------------------------------------------


class Suite:
    def __init__(self, sizes: Sizes, quick: bool, workdir: Path) -> None:
        self.s = sizes
        self.quick = quick
        self.workdir = workdir
        self.report = Report()
        self.data: dict[str, Any] = {}
        # scenario -> (seconds, other processes' CPU meanwhile in cores, runs made)
        self.noise: dict[str, tuple[float, float, int]] = {}
        self.pace: dict[str, float] = {}
        self._cleanup: list[Callable[[], None]] = []

    # infrastructure ------------------------------------------------------------------------

    def switch(self) -> StandinSwitch:
        sw = StandinSwitch(host=bc.LOOPBACK)
        sw.start()
        self._cleanup.append(sw.stop)
        return sw

    def daemon(
        self, name: str, sw: StandinSwitch, nocache: bool = False, **kw: Any
    ) -> bc.DaemonProcess:
        d = bc.DaemonProcess(self.workdir, name, sw.port, nocache=nocache, **kw)
        self._cleanup.append(d.stop)
        d.wait_ready()
        bc.wait_until(lambda: subscribed(sw), 10, "the daemon's subscription")
        return d

    def take(self, key: str) -> tuple[dict[str, list[str]], list[Target], dict[str, Any]]:
        """Remove and return what a scenario put into the report (and what it owns)."""
        keys = OWNS.get(key, (key,))
        sections = {k: self.report.sections.pop(k) for k in keys if k in self.report.sections}
        targets = [t for t in self.report.targets if t.scenario in keys]
        self.report.targets = [t for t in self.report.targets if t.scenario not in keys]
        data = {k: self.data.pop(k) for k in keys if k in self.data}
        return sections, targets, data

    def put(
        self, key: str, taken: tuple[dict[str, list[str]], list[Target], dict[str, Any]]
    ) -> None:
        sections, targets, data = taken
        self.report.sections.update(sections)
        self.report.targets += targets
        self.data.update(data)

    def attempt(self, key: str, run: Callable[[], None]) -> bool:
        """Run a scenario on a quiet machine; repeat it (twice at most) while other processes
        used more than NOISY cores meanwhile, and keep the quietest run. False if all failed."""
        best: tuple[float, float, Any, float] | None = None
        runs = 0
        error: Exception | None = None
        for _ in range(RETRIES + 1):
            runs += 1
            bc.wait_quiet(60)
            pace = bc.machine_pace()
            self.take(key)
            meter, t = bc.MachineMeter(), perf()
            try:
                with bc.collector_off():
                    run()
            except Exception as exc:  # report it, go on with the other scenarios
                traceback.print_exc()
                error = exc
                self.cleanup()
                self.take(key)
                continue
            self.cleanup()
            foreign, seconds = meter.foreign(), perf() - t
            if best is None or foreign < best[0]:
                best = (foreign, seconds, self.take(key), pace)
            else:
                self.take(key)
            if foreign <= NOISY:
                break
            print(f"bench: {key}: other processes used {foreign:.2f} cores, again", file=sys.stderr)
        if best is None:
            self.report.add(key, f"### {key}: failed", "", f"`{error!r}`", "")
            return False
        self.put(key, best[2])
        self.noise[key] = (best[1], best[0], runs)
        self.pace[key] = best[3]
        return True

    def cleanup(self) -> None:
        while self._cleanup:
            fn = self._cleanup.pop()
            with contextlib.suppress(Exception):
                fn()

    def spy(self, d: bc.DaemonProcess, label: str) -> tuple[bc.Spy, float, float]:
        return bc.Spy(d.pid, self.workdir / f"profile-{label}.txt"), d.cpu_seconds(), perf()

    def keep_profile(
        self, key: str, title: str, d: bc.DaemonProcess, spied: tuple[bc.Spy, float, float]
    ) -> None:
        spy, cpu0, t0 = spied
        busy = (d.cpu_seconds() - cpu0) / max(1e-9, perf() - t0)
        spy.stop()
        if not spy.available:
            self.report.profiles.setdefault(key, []).extend(
                [f"**Profile — {title}**: not taken, py-spy is not installed in the venv.", ""]
            )
            return
        samples, rows = bc.summarise_profile(spy.out)
        lines = [
            f"**Profile — {title}** (py-spy 200 Hz on the daemon process, {samples:,} samples "
            f"of Python on CPU; the daemon was busy {busy:.0%} of the wall time meanwhile; "
            "self = in the function itself, total = with what it calls):",
            "",
            "| function | self % | total % |",
            "|---|---:|---:|",
        ]
        lines += [f"| `{f}` | {own:.1f} | {tot:.1f} |" for f, own, tot in rows]
        self.report.profiles.setdefault(key, []).extend([*lines, ""])

    def populate(
        self,
        sw: StandinSwitch,
        http: bc.Http,
        gen: bc.SyntheticChannels,
        count: int,
        batch: int = 1000,
    ) -> list[tuple[str, str]]:
        """`count` live channels learnt over ESL, each batch confirmed through the API."""
        made: list[tuple[str, str]] = []
        while len(made) < count:
            frames = []
            for _ in range(min(batch, count - len(made))):
                acc = gen.account_of(gen.made)
                uid, fr = gen.channel(acc)
                frames.extend(fr)
                made.append((acc, uid))
            sw.send_frames(frames)
            acc, uid = made[-1]
            path = f"/v2/accounts/{acc}/channels/{uid}"
            bc.wait_until(
                lambda p=path: http.request("GET", p)[0] == 200, 120, f"channel {uid}", 0.005
            )
        return made

    # 1. ingest -------------------------------------------------------------------------------

    def _reader_run(self, script: str, frames: list[Any]) -> float:
        sw = self.switch()
        proc = bc.spawn(
            [bc.PYTHON, str(BENCH / script), str(sw.port), str(len(frames)), "300", NAMES],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = read_line(proc, 30)
            if line != "ready":
                raise RuntimeError(f"{script}: {line!r}")
            bc.wait_until(lambda: subscribed(sw), 10, "subscription")
            sw.send_frames(frames)
            t0 = perf()
            line = read_line(proc, 300)
            t1 = perf()
            if line != f"done {len(frames)}":
                raise RuntimeError(f"{script} ended with {line!r}")
            return len(frames) / (t1 - t0)
        finally:
            stop_process(proc)
            sw.stop()

    def _daemon_ingest(self, frames: list[Any], expected: set[str], spy: bool = False) -> dict:
        sw = self.switch()
        d = self.daemon("ingest", sw)
        http = bc.Http(d.http_port)
        rss = [d.rss_kib(), 0]
        sampling = [True]

        def sample_rss() -> None:
            for _ in range(20_000):
                if not sampling[0]:
                    break
                rss[1] = max(rss[1], d.rss_kib())
                gevent.sleep(0.02)

        try:
            spied = self.spy(d, "ingest") if spy else None
            sampler = gevent.spawn(sample_rss)
            cpu0, lcpu0 = d.cpu_seconds(), load_cpu()
            sw.send_frames(frames)
            t0 = perf()
            bc.wait_until(lambda: drained(sw), 600, "the stand-in to write everything")
            t_written = perf()
            polls: list[float] = []
            done = load.wait_final_state(http, expected, 120, "table", polls, {sw.port})
            seconds = done - t0
            cpu = d.cpu_seconds() - cpu0
            lcpu = load_cpu() - lcpu0
            sampling[0] = False
            sampler.join(timeout=2)
            if spied is not None:
                self.keep_profile("ingest", "ingest of the burst capture", d, spied)
            return {
                "rate": len(frames) / seconds,
                "seconds": seconds,
                "written": t_written - t0,
                "daemon_cpu": cpu / seconds,
                "load_cpu": lcpu / seconds,
                "first_poll": polls[0],
                "rss0": rss[0],
                "rss_peak": rss[1],
            }
        finally:
            sampling[0] = False
            http.close()
            d.stop()
            sw.stop()

    def ingest(self, spy: bool = False) -> None:
        s = self.s
        jr, pr = bc.CaptureReplay("json"), bc.CaptureReplay("plain")
        if bc.final_uuids(jr.repetition()):
            raise RuntimeError("a full repetition of the capture leaves channels up")
        reps = max(4, s.ingest_reps // 2) if spy else s.ingest_reps
        jframes, pframes = jr.stream(reps), pr.stream(reps)
        expected = bc.final_uuids(jframes[-jr.cut :])
        if spy:
            self._daemon_ingest(jframes, expected, spy=True)
            return
        floor, gs, daemon = [], [], []
        for _ in range(s.ingest_rounds):
            floor.append(self._reader_run("floor_reader.py", jframes))
            gs.append(self._reader_run("greenswitch_reader.py", pframes))
            daemon.append(self._daemon_ingest(jframes, expected))
            gc.collect()
        best = max(daemon, key=lambda r: r["rate"])
        f, g, c = max(floor), max(gs), best["rate"]
        rounds = s.ingest_rounds

        def fmt(values: list[float]) -> str:
            return ", ".join(f"{x:,.0f}" for x in values)

        self.report.add(
            "ingest",
            "### 1. Ingest",
            "",
            f"The real burst capture `s7_burst50` filtered to channelsd's {len(SUBSCRIBED_EVENTS)} "
            "subscribed event names less HEARTBEAT (one per repetition: replayed dozens of times "
            "a second its Session-Count would trip the daemon's drift check into a reconcile "
            f"each time) ({len(jr):,} json events per repetition, "
            f"{jr.channel_events:,} of them CHANNEL_*/CALL_UPDATE; {len(pr):,} in the plain "
            f"form), repeated {reps} times with fresh uuids plus one repetition cut where all "
            f"its 100 channels are up: {len(jframes):,} json / {len(pframes):,} plain events, "
            "written by the stand-in as fast as the socket takes them. Figure: events/s from "
            "the first byte to the end. channelsd's end is the answer to the first "
            "`GET /v2/channels` that shows exactly the 100 channels the cut repetition leaves "
            "up (computed offline with channelsd's own ChannelTable), asked once the daemon "
            "has read every byte written (its socket's receive queue empty, watched in "
            "/proc/net/tcp) and again 10 ms after each answer; the baselines end when they "
            f"have read every event. Best of {rounds} interleaved round"
            f"{'s' if rounds > 1 else ''}.",
            "",
            "| reader | events/s | channelsd vs it |",
            "|---|---:|---:|",
            f"| floor: bare socket, frame + orjson.loads only (json) | {f:,.0f} | {c / f:.2f}x |",
            f"| stock greenswitch InboundESL, no-op handler (plain) | {g:,.0f} | {c / g:.2f}x |",
            f"| **channelsd** (`channelsd run`, table checked through the API) | **{c:,.0f}** "
            "| 1.00x |",
            "",
            f"All rounds, events/s: floor {fmt(floor)}; greenswitch {fmt(gs)}; channelsd "
            f"{fmt([r['rate'] for r in daemon])}. In channelsd's best run the daemon used "
            f"{best['daemon_cpu']:.0%} of a core and the stand-in process "
            f"{best['load_cpu']:.0%}; the stand-in had handed everything to the socket after "
            f"{best['written']:.2f} s of {best['seconds']:.2f} s (the rest waited inside the "
            f"daemon), the first `GET /v2/channels` sent then took {best['first_poll']:.2f} s "
            f"to answer, and the daemon's RSS went from {best['rss0'] / 1024:.0f} MiB to a peak "
            f"of {best['rss_peak'] / 1024:.0f} MiB. "
            + bc.steadiness_text(
                {
                    "floor": floor,
                    "greenswitch": gs,
                    "channelsd": [r["rate"] for r in daemon],
                }
            ),
            "",
        )
        self.data["ingest"] = {
            "rate": c,
            "floor": f,
            "greenswitch": g,
            "cpu_us_per_event": best["daemon_cpu"] * best["seconds"] / len(jframes) * 1e6,
            "events": len(jframes),
        }
        self.report.target(
            "ingest", "ingest ≥ 5× stock greenswitch (same run)", f"{c / g:.2f}×", c >= 5 * g
        )
        self.report.target(
            "ingest", "ingest ≥ 80 % of the floor reader (same run)", f"{c / f:.0%}", c >= 0.8 * f
        )

    # 2. reads at scale ------------------------------------------------------------------------

    def reads_measure(
        self, cases: tuple[str, ...] = (), nocache: bool = False, spy: bool = False
    ) -> dict[str, Any]:
        """Run the read cases (all, or those named `<endpoint>-<clients>-<idle|loaded>`)."""
        s = self.s
        accounts = [bc.kazoo_id(f"account{i}") for i in range(s.reads_accounts)]
        gen = bc.SyntheticChannels(accounts)
        sw = self.switch()
        d = self.daemon("reads", sw, nocache)
        http = bc.Http(d.http_port)
        out: dict[str, Any] = {}
        try:
            t, cpu0 = perf(), d.cpu_seconds()
            made = self.populate(sw, http, gen, s.reads_channels)
            out["populate_s"] = perf() - t
            # two events per channel, each carrying every variable (Kazoo-style)
            out["populate_cpu_us_per_event"] = (
                (d.cpu_seconds() - cpu0) / (2 * s.reads_channels) * 1e6
            )
            total = len(http.get_json("/v2/channels")["data"])
            per = s.reads_channels // s.reads_accounts
            counts = {len(http.get_json(f"/v2/accounts/{a}/channels")["data"]) for a in accounts}
            if total != s.reads_channels or counts != {per}:
                raise RuntimeError(f"populated {total} channels, accounts hold {counts}")
            endpoints: dict[str, list[str]] = {
                "account": [f"/v2/accounts/{a}/channels" for a in accounts],
                "single": ["/v2/accounts/{}/channels/{}".format(*m) for m in made],
                "system": ["/v2/channels"],
            }
            churn = Churn(sw, bc.CaptureReplay("json"), 5000)
            for loaded in (False, True):
                todo = [
                    (ep, clients)
                    for clients in (1, 16)
                    for ep in endpoints
                    if not cases or f"{ep}-{clients}-{'loaded' if loaded else 'idle'}" in cases
                ]
                if not todo:
                    continue
                if loaded:
                    churn.start()
                    gevent.sleep(1.0)
                for ep, clients in todo:
                    key = f"{ep}-{clients}-{'loaded' if loaded else 'idle'}"
                    http_load_apart(d.http_port, clients, 0.3, endpoints[ep])  # warm-up
                    churn.max_backlog = 0
                    sent0, t0, cpu0 = churn.sent, perf(), d.cpu_seconds()
                    spied = self.spy(d, key) if spy else None
                    res = http_load_apart(d.http_port, clients, s.case_seconds, endpoints[ep])
                    wall = perf() - t0
                    if spied is not None:
                        self.keep_profile(
                            "reads",
                            f"{self.read_title(ep)}, {clients} client(s), "
                            f"{'ingesting' if loaded else 'idle'}",
                            d,
                            spied,
                        )
                    out[key] = {
                        "res": res,
                        "rate": (churn.sent - sent0) / wall if loaded else 0.0,
                        "backlog": churn.max_backlog,
                        "cpu": (d.cpu_seconds() - cpu0) / wall,
                    }
                if loaded:
                    churn.stop()
                    bc.wait_until(lambda: drained(sw), 60, "churn drained")
            # Dashboards: 16 clients each asking for the system list once a second (open loop),
            # beside the closed-loop rows, where 16 clients ask again the moment an answer ends.
            if not cases or "system-16-poll" in cases:
                t0, cpu0 = perf(), d.cpu_seconds()
                res = http_load_apart(
                    d.http_port, 16, 2 * s.case_seconds, endpoints["system"], period=POLL_PERIOD
                )
                wall = perf() - t0
                out["system-16-poll"] = {
                    "res": res,
                    "rate": 0.0,
                    "backlog": 0,
                    "cpu": (d.cpu_seconds() - cpu0) / wall,
                }
            # checked, not trusted: the table still holds every channel, in every account
            counts = {len(http.get_json(f"/v2/accounts/{a}/channels")["data"]) for a in accounts}
            if counts != {per}:
                raise RuntimeError(f"after the read cases the accounts hold {counts}")
        finally:
            http.close()
            d.stop()
            sw.stop()
        return out

    def reads(self) -> None:
        s = self.s
        out = self.reads_measure()
        self.data["reads"] = out
        per = s.reads_channels // s.reads_accounts
        lines = [
            "### 2. Reads at scale",
            "",
            f"{s.reads_channels:,} live channels in {s.reads_accounts} accounts ({per} each), "
            "learnt over ESL from synthetic CHANNEL_CREATE + CHANNEL_ANSWER events built from "
            "the capture's own (Kazoo-style: ten `ecallmgr_` custom channel variables; "
            f"populated in {out['populate_s']:.1f} s, confirmed through the API). Closed-loop "
            f"keep-alive clients, {s.case_seconds:g} s per row; the single-channel GET asks for a "
            "random channel, the account list for a random account. *Ingesting* = the burst "
            "capture replayed with fresh uuids at 5,000 events/s meanwhile (achieved rate and "
            "the stand-in's worst backlog in frames). Daemon CPU = share of one core; client "
            "CPU = the client process's (`bench/http_client.py`: the clients run in a process "
            "of their own, apart from the stand-in and the events it replays), "
            f"a row where it reached {load.CLIENT_BOUND:.0%} is marked *client-bound*: there the "
            "clients, not the daemon, may be what the row measures. The clients send "
            f"`Accept-Encoding: gzip`, as browsers do: a list of {GZIP_ABOVE >> 20} MiB or more "
            "answered again "
            "within its second comes in gzip (`channelsd/gzipped.py`; in gzip = share of "
            "answers); MB/s = response bodies read, as they came. "
            "The closed-loop rows ask again the moment an answer ends, so with 16 clients "
            "the latency is 16 / req/s (Little's law): a p99 of 50 ms there needs ~320 lists a "
            "second, which for the system-wide list raw is 4 GB a second through loopback, "
            "read by the clients too (in gzip ~8x less: ISA-L's deflate at level 1, compressed "
            "once a second on the daemon's hub); the last row is 16 dashboards polling "
            "once a second.",
            "",
            "| request | clients | ingest | req/s | p50 ms | p99 ms | requests | errors | "
            "daemon CPU | client CPU | MB/s | in gzip |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, r in out.items():
            if key.startswith("populate"):
                continue
            ep, clients, state = key.split("-")
            res = r["res"]
            ing = {
                "loaded": f"{r['rate']:,.0f} ev/s, backlog ≤{r['backlog']}",
                "poll": f"idle; each client every {POLL_PERIOD:g} s",
            }.get(state, "idle")
            bound = " *client-bound*" if res.client_bound else ""
            lines.append(
                f"| {self.read_title(ep)} | {clients} | {ing} | {res.rps:,.0f} | "
                f"{bc.ms(res.p50)} | {bc.ms(res.p99)} | {res.n:,} | {res.errors} | "
                f"{r['cpu']:.0%} | {res.client_cpu:.0%}{bound} | "
                f"{res.body_bytes / 1e6 / max(1e-9, res.seconds):,.0f} | "
                f"{res.gzipped / max(1, res.n):.0%} |"
            )
        self.report.add("reads", *lines, "")
        acc16 = out["account-16-loaded"]["res"]
        single = out["single-1-idle"]["res"]
        sys1 = out["system-1-idle"]["res"]
        sys16 = out["system-16-idle"]["res"]
        total = f"{s.reads_channels:,}"

        def tag(res: LoadResult) -> str:
            return " (client-bound)" if res.client_bound else ""

        t = self.report.target
        t(
            "reads",
            f"account list ({per} of {total}), 16 clients, ingesting 5k ev/s: p99 ≤ 10 ms",
            f"{bc.ms(acc16.p99)} ms{tag(acc16)}",
            acc16.p99 <= 0.010,
        )
        t("reads", "… and ≥ 3,000 req/s", f"{acc16.rps:,.0f} req/s{tag(acc16)}", acc16.rps >= 3000)
        t(
            "reads",
            f"system-wide list of {total}, 1 client (idle): ≥ 100 req/s",
            f"{sys1.rps:,.0f} req/s{tag(sys1)}",
            sys1.rps >= 100,
        )
        t(
            "reads",
            f"system-wide list of {total}, 16 clients (idle): p99 ≤ 50 ms",
            f"{bc.ms(sys16.p99)} ms{tag(sys16)}",
            sys16.p99 <= 0.050,
        )
        t(
            "reads",
            "single-channel GET, 1 client (idle): p50 ≤ 0.3 ms",
            f"{bc.ms(single.p50)} ms{tag(single)}",
            single.p50 <= 0.0003,
        )

    def read_title(self, ep: str) -> str:
        s = self.s
        per = s.reads_channels // s.reads_accounts
        return READ_TITLES[ep].format(per=per, total=f"{s.reads_channels:,}")

    # 3. against FreeSWITCH's own listing ---------------------------------------------------------

    def fs_measure(
        self,
        sizes: tuple[int, ...] = tuple(FS_SHOW_CHANNELS_MS),
        nocache: bool = False,
        spy: bool = False,
    ) -> list[tuple[int, str, int, LoadResult]]:
        s = self.s
        big = bc.kazoo_id("big-account")
        small = [bc.kazoo_id(f"small-account{i}") for i in range(99)]
        gen = bc.SyntheticChannels([big])
        # every 10th channel is in one big account (10 %), the rest spread over 99 (~1 % each)
        gen.account_of = lambda i: big if i % 10 == 0 else small[i % 99]  # type: ignore[method-assign]
        sw = self.switch()
        d = self.daemon("fs", sw, nocache)
        http = bc.Http(d.http_port)
        rows = []
        try:
            made: list[tuple[str, str]] = []
            for size in sorted(FS_SHOW_CHANNELS_MS):
                made += self.populate(sw, http, gen, size - len(made), batch=500)
                if size not in sizes:
                    continue
                paths = {
                    "system": "/v2/channels",
                    "big": f"/v2/accounts/{big}/channels",
                    "small": f"/v2/accounts/{made[1][0]}/channels",
                }
                counts = {k: len(http.get_json(p)["data"]) for k, p in paths.items()}
                if counts["system"] != size:
                    raise RuntimeError(f"system list has {counts['system']} of {size}")
                spied = self.spy(d, f"fs{size}") if spy else None
                for key, path in paths.items():
                    res = http_load(
                        d.http_port, 1, 60, lambda r, p=path: p, max_per_client=s.fs_samples
                    )
                    rows.append((size, key, counts[key], res))
                if spied is not None:
                    self.keep_profile(
                        "fs", f"the three lists at {size} channels, 1 client", d, spied
                    )
        finally:
            http.close()
            d.stop()
            sw.stop()
        return rows

    def fs_compare(self) -> None:
        s = self.s
        rows = self.fs_measure()
        self.data["fs"] = rows
        lines = [
            "### 3. Lists against FreeSWITCH's own `show channels as json`",
            "",
            "FreeSWITCH figures: `show channels as json` on a real switch of this machine type "
            "(3.2 ms at 100 channels, 15 ms at 500, 42 ms at 980 with 837 KB of JSON); a Kazoo "
            "list has to run it whatever the account. channelsd: the same channel counts "
            "(synthetic Kazoo-style channels, one account holding every tenth channel and 99 "
            f"sharing the rest), one client, {s.fs_samples} sequential requests per row, "
            "latency through HTTP including the envelope.",
            "",
            "| channels | request | rows | p50 ms | p99 ms | FreeSWITCH ms | faster |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for size, key, n, res in rows:
            fs = FS_SHOW_CHANNELS_MS[size] / 1000
            lines.append(
                f"| {size} | {FS_TITLES[key]} | {n} | {bc.ms(res.p50)} | {bc.ms(res.p99)} | "
                f"{fs * 1000:g} | {fs / res.p50:.1f}x |"
            )
        # Issue #16 replaced this scenario's targets: its figures stay, as information.
        self.report.add("fs", *lines, "")

    # 4. memory ----------------------------------------------------------------------------------

    def memory(self) -> None:
        s = self.s
        accounts = [bc.kazoo_id(f"account{i}") for i in range(100)]
        gen = bc.SyntheticChannels(accounts)
        sw = self.switch()
        # The ended-calls store's bound is the daemon's default (10,000) in full runs; quick
        # runs set it to their smaller count, so that the row is "store full" there too.
        api = {} if s.memory_ended == 10_000 else {"ended_calls_max": s.memory_ended}
        d = self.daemon("memory", sw, api=api)
        http = bc.Http(d.http_port)
        rows = []
        try:
            # Warm-up, so that the baseline already holds buffers, parsers and HTTP: one burst
            # repetition and one cut repetition (its 100 channels stay up in the baseline).
            jr = bc.CaptureReplay("json")
            warm = jr.stream(1)
            expected = bc.final_uuids(warm[-jr.cut :])
            sw.send_frames(warm)
            bc.wait_until(
                lambda: {i["uuid"] for i in http.get_json("/v2/channels")["data"]} == expected,
                60,
                "warm-up ingested",
                0.05,
            )
            gevent.sleep(1.0)
            base = d.rss_kib()
            made: list[tuple[str, str]] = []
            for count in s.memory_counts:
                made += self.populate(sw, http, gen, count - len(made), batch=1000)
                gevent.sleep(1.0)
                rss = d.rss_kib()
                rows.append((f"{count:,}", count, rss, (rss - base) * 1024 / count))
            # checked, not trusted: every account holds what was sent to it
            held = sum(len(http.get_json(f"/v2/accounts/{a}/channels")["data"]) for a in accounts)
            if held != len(made):
                raise RuntimeError(f"accounts hold {held} channels, {len(made)} were sent")
            # The ended-calls store full: as many calls as it keeps come and hang up (the live
            # set stays as it is), then the same per-live-channel figure with the store in it.
            ended = s.memory_ended
            for start in range(0, ended, 1000):
                frames = []
                for i in range(start, min(ended, start + 1000)):
                    frames += gen.channel(gen.account_of(i), ended=True)[1]
                sw.send_frames(frames)
                bc.wait_until(lambda: drained(sw), 60, "ended calls written")
            listed = wait_until_count(http, "/v2/channels?ended=true", ended, 60)
            count = len(made)
            # 1 s after, and again once the daemon has given back what the burst and the
            # answers above left freed but resident (channelsd.memory: malloc_trim at most
            # every TRIM_EVERY s, at the first quiet tick: nothing happens meanwhile).
            for wait, label in ((1.0, ""), (TRIM_EVERY + 1.0, f", {TRIM_EVERY + 1:.0f} s later")):
                gevent.sleep(wait)
                rss = d.rss_kib()
                per = (rss - base) * 1024 / count
                rows.append((f"{count:,} + {listed:,} ended calls kept{label}", count, rss, per))
            live_now = len(http.get_json("/v2/channels")["data"])
            if live_now != count + len(expected):
                raise RuntimeError(f"live channels {live_now}, wanted {count + len(expected)}")
        finally:
            http.close()
            d.stop()
            sw.stop()
        full = rows[-2]
        without = rows[-3]
        settled = rows[-1]
        # Settled, as the target's row: 1 s after, RSS still holds what the burst and the
        # listing that counted the store left freed (malloc_trim has not run yet).
        per_ended = (settled[2] - without[2]) * 1024 / max(1, listed)
        self.data["memory"] = {
            "per_channel": without[3],
            "per_channel_with_store": full[3],
            "per_channel_settled": settled[3],
            "per_ended_call": per_ended,
            "base_kib": base,
            "ended": listed,
            "count": full[1],
        }
        lines = [
            "### 4. Memory per live channel",
            "",
            "One daemon; RSS (`VmRSS`) after a warm-up (one burst repetition, 100 capture "
            f"channels up) = {base / 1024:.1f} MiB, then after each population of synthetic "
            "Kazoo-style channels (CHANNEL_CREATE + CHANNEL_ANSWER carrying every variable, ten "
            "custom channel variables, sent in batches of 1,000, each confirmed through the API; "
            "all counted through the account lists at the end); per channel = (RSS − baseline) "
            f"/ live channels. Last row: then {listed:,} more calls came and hung up "
            "(CHANNEL_HANGUP_COMPLETE + CHANNEL_DESTROY), filling the ended-calls store "
            f"(`api.ended_calls_max` = {ended:,}; counted through `?ended=true`), the live set "
            "unchanged: the store (and the calls' tombstones) are counted in the figure; "
            "and the same once more after the daemon's next release of freed memory "
            f"(`malloc_trim`, every {TRIM_EVERY:g} s while the daemon is quiet), what "
            "it holds while nothing happens: the row the target is judged on.",
            "",
            "| live channels | RSS MiB | per live channel |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {label} | {rss / 1024:.1f} | {per / 1024:.2f} KiB |" for label, _, rss, per in rows
        ]
        lines += [
            "",
            f"The store full costs {(settled[2] - without[2]) / 1024:.1f} MiB once settled, "
            f"{per_ended:,.0f} B per ended call kept ({(full[2] - without[2]) / 1024:.1f} MiB "
            "1 s after the calls and the listing that counted them).",
            "",
        ]
        self.report.add("memory", *lines)
        self.report.target(
            "memory",
            f"≤ 2 KiB resident per live Kazoo-style channel at {full[1]:,}, ended-calls "
            f"store full ({ended:,}), settled",
            f"{settled[3] / 1024:.2f} KiB ({settled[3]:,.0f} B; "
            f"{full[3] / 1024:.2f} KiB 1 s after the burst)",
            settled[3] <= 2048,
        )

    def memory_breakdown(self) -> None:
        """Where a channel's bytes go: tracemalloc over channelsd's own parse + table.apply."""
        n = 20_000
        accounts = [bc.kazoo_id(f"account{i}") for i in range(100)]
        gen = bc.SyntheticChannels(accounts)
        bodies = []
        for i in range(n):
            _, frames = gen.channel(gen.account_of(i))
            bodies += [f.raw.partition(b"\n\n")[2] for f in frames]
        table = ChannelTable()
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        for body in bodies:
            table.apply("fs1", parse_json(body))
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = after.compare_to(before, "lineno")
        total = sum(st.size_diff for st in stats)
        lines = [
            "**Where the bytes go** (tracemalloc over channelsd's `parse_json` + "
            f"`ChannelTable.apply` in the bench process, {n:,} of the same channels): "
            f"{total / n:,.0f} B per channel allocated and still held, by allocating line:",
            "",
            "| line | B per channel |",
            "|---|---:|",
        ]
        for st in stats[:8]:
            frame = st.traceback[0]
            where = bc._short(f"x ({frame.filename}:{frame.lineno})")[3:-1]
            try:
                code = Path(frame.filename).read_text().splitlines()[frame.lineno - 1].strip()
            except (OSError, IndexError):
                code = ""
            lines.append(f"| `{where}` `{code[:60]}` | {st.size_diff / n:,.0f} |")
        ch = table.all()[0]
        strs = [getattr(ch, a) for a in type(ch).__slots__ if isinstance(getattr(ch, a), str)]
        ccv = ch.ccvs or {}
        ccv_bytes = sys.getsizeof(ccv) + sum(
            sys.getsizeof(k) + sys.getsizeof(v) for k, v in ccv.items()
        )
        lines += [
            "",
            f"One channel by hand: the `Channel` object {sys.getsizeof(ch)} B, its "
            f"{len(strs)} string attributes {sum(sys.getsizeof(x) for x in strs):,} B, its "
            f"`ccvs` dict with {len(ccv)} keys and values {ccv_bytes:,} B; the rest is the "
            "index dicts' entries and their `(node, uuid)` key tuples.",
            "",
        ]
        self.report.profiles.setdefault("memory", []).extend(lines)

    # 5. reconcile -------------------------------------------------------------------------------

    def reconcile_measure(self, nocache: bool = False, spy: bool = False) -> dict[str, Any]:
        n = self.s.reconcile_channels
        accounts = [bc.kazoo_id(f"account{i}") for i in range(100)]
        sw = self.switch()
        d = self.daemon("reconcile", sw, nocache)
        try:
            sw.pause_accept(True)
            sw.drop_connections()
            d.wait_log(r"node=fs1 down", 0, 10)
            t = perf()
            for i in range(n // 2):
                sw.originate("9003", {"account_id": accounts[i % len(accounts)]})
                if i % 500 == 0:
                    gevent.sleep(0)
            build_s = perf() - t
            live = set(sw.channels)
            if len(live) != n:
                raise RuntimeError(f"stand-in holds {len(live)} channels, wanted {n}")
            uuids = list(live)
            pos = len(d.log_text())
            lat: list[tuple[float, float]] = []  # (sent at, seconds)
            statuses: dict[int, int] = {}
            probing = [True]

            cpu0, lcpu0 = d.cpu_seconds(), load_cpu()
            sw.pause_accept(False)
            t_resume = perf()
            bc.wait_until(lambda: len(sw.connections) > 0, 10, "reconnect", 0.001)
            t_conn = perf()
            probers = [
                gevent.spawn(
                    load.probe_channels, d.http_port, accounts, uuids, k, probing, lat, statuses
                )
                for k in range(2)
            ]
            spied = self.spy(d, "reconcile") if spy else None
            m = d.wait_log(
                r"node=fs1 reconciled listed=(\d+) added=(\d+) removed=(\d+)"
                r"(?: refreshed=\d+)? seconds=([\d.]+)",
                pos,
                300,
            )
            t_done = perf()
            probing[0] = False
            gevent.joinall(probers, timeout=30)
            cpu, lcpu = d.cpu_seconds() - cpu0, load_cpu() - lcpu0
            if spied is not None:
                self.keep_profile("reconcile", f"reconcile of {n:,} channels", d, spied)
            http = bc.Http(d.http_port)
            held = {i["uuid"] for i in http.get_json("/v2/channels")["data"]}
            http.close()
            if held != live:
                raise RuntimeError(f"after reconcile the API shows {len(held)} of {n} channels")
        finally:
            d.stop()
            sw.stop()
        during = [x for t, x in lat if t < t_done]
        worst = max(lat, key=lambda tx: tx[1]) if lat else (t_conn, float("nan"))
        listed, added, _, seconds = m.groups()
        return {
            "n": n,
            "build_s": build_s,
            "listed": int(listed),
            "added": int(added),
            "logged": float(seconds),
            "wall": t_done - t_conn,
            "backoff": t_conn - t_resume,
            "cpu": cpu / (t_done - t_conn),
            "load_cpu": lcpu / (t_done - t_conn),
            "n_api": len(during),
            "statuses": statuses,
            "p50": bc.percentile(during, 50),
            "p99": bc.percentile(during, 99),
            "max": max(during) if during else float("nan"),
            "worst_at": worst[0] - t_conn,
        }

    def reconcile(self) -> None:
        r = self.reconcile_measure()
        self.data["reconcile"] = r
        n = r["n"]
        self.report.add(
            "reconcile",
            "### 5. Reconcile after a reconnect",
            "",
            "The stand-in's connections are dropped and new ones refused while it starts "
            f"{n // 2:,} calls ({n:,} channels in 100 accounts, built in {r['build_s']:.1f} s; "
            "no client sees their events); then it accepts again. The daemon reconnects, lists "
            "(`show channels as json`) and hydrates every unknown channel with `uuid_dump` (16 "
            "in flight). Meanwhile two clients each ask for an account list or a single channel "
            "and pause 10 ms between requests. Checked afterwards: the system-wide list holds "
            "exactly the stand-in's channels. The end is the daemon's `reconciled` log line. "
            "(Issue #16 replaced this scenario's targets with the many-nodes blip below; its "
            "figures stay for the capacity model.)",
            "",
            "| what | value |",
            "|---|---:|",
            f"| channels listed / added | {r['listed']:,} / {r['added']:,} |",
            f"| reconnect accepted → reconciled (wall) | {r['wall']:.2f} s |",
            f"| reconcile, as the daemon logs it | {r['logged']:.2f} s |",
            "| refused → reconnect accepted (backoff ≤ 0.2 s in the bench config) | "
            f"{r['backoff']:.2f} s |",
            f"| daemon CPU / stand-in process CPU meanwhile | {r['cpu']:.0%} / "
            f"{r['load_cpu']:.0%} of a core |",
            f"| API requests meanwhile (statuses of all sent) | {r['n_api']} ({r['statuses']}) |",
            f"| API p50 / p99 / max meanwhile | {bc.ms(r['p50'])} / {bc.ms(r['p99'])} / "
            f"{bc.ms(r['max'])} ms |",
            f"| the slowest request was sent at | +{r['worst_at']:.2f} s after the reconnect |",
            "",
        )

    # 6. actions ---------------------------------------------------------------------------------

    def actions_measure(self, nocache: bool = False, spy: bool = False) -> dict[str, float]:
        n = self.s.action_samples
        acc = bc.kazoo_id("actions-account")
        sw = self.switch()
        d = self.daemon("actions", sw, nocache)
        http = bc.Http(d.http_port)
        esl = RawEsl(sw.port)
        try:
            pairs = [sw.originate("9003", {"account_id": acc}) for _ in range(4 * n)]
            last = pairs[-1][0]
            bc.wait_until(
                lambda: http.request("GET", f"/v2/accounts/{acc}/channels/{last}")[0] == 200,
                60,
                "originated channels",
            )
            spied = self.spy(d, "actions") if spy else None
            # Each path measured twice: from a client in its own process (as every real
            # client is: the judged figures), and from a client in this process, which is the
            # stand-in's, so that its bare round trip never leaves the process (the figures
            # of earlier reports, kept beside them).
            inner, outer = pairs[: 2 * n], pairs[2 * n :]
            work = [
                (kind, u)
                for i in range(len(outer) // 2)
                for kind, u in (
                    (("api", outer[2 * i][0]), ("bare", outer[2 * i + 1][0]))
                    if i % 2 == 0
                    else (("bare", outer[2 * i + 1][0]), ("api", outer[2 * i][0]))
                )
            ]
            child = bc.spawn(
                [
                    bc.PYTHON,
                    str(Path(__file__).with_name("action_client.py")),
                    str(d.http_port),
                    str(sw.port),
                    acc,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            out, _ = child.communicate(json.dumps(work).encode(), timeout=600)
            if child.returncode != 0:
                raise RuntimeError(f"action_client.py failed ({child.returncode})")
            apart: dict[str, list[float]] = {"api": [], "bare": []}
            for kind, took in json.loads(out):
                apart[kind].append(took)
            api_lat: list[float] = []
            bare_lat: list[float] = []
            body = b'{"action":"hangup"}'
            for i in range(len(inner) // 2):
                via_api, bare = inner[2 * i][0], inner[2 * i + 1][0]
                for kind in ("api", "bare") if i % 2 == 0 else ("bare", "api"):
                    gevent.sleep(0.005)  # let the hang-up events of the last one settle
                    t = perf()
                    if kind == "api":
                        status, data = http.request(
                            "POST", f"/v2/accounts/{acc}/channels/{via_api}", body
                        )
                        api_lat.append(perf() - t)
                        if status != 200:
                            raise RuntimeError(f"POST hangup: {status} {data[:200]!r}")
                    else:
                        reply = esl.api(f"uuid_kill {bare}")
                        bare_lat.append(perf() - t)
                        if not reply.startswith("+OK"):
                            raise RuntimeError(f"uuid_kill: {reply!r}")
            if spied is not None:
                self.keep_profile("actions", "POST hangup loop", d, spied)
            gevent.sleep(0.5)
            gone = http.request("GET", f"/v2/accounts/{acc}/channels/{pairs[0][0]}")[0]
            up = [u for u, _ in pairs if u in sw.channels and sw.channels[u].alive]
            if gone != 404 or up:
                raise RuntimeError("hung-up channels are still up")
        finally:
            esl.close()
            http.close()
            d.stop()
            sw.stop()
        return {
            "a50": bc.percentile(apart["api"], 50),
            "a99": bc.percentile(apart["api"], 99),
            "b50": bc.percentile(apart["bare"], 50),
            "b99": bc.percentile(apart["bare"], 99),
            "in_a50": bc.percentile(api_lat, 50),
            "in_a99": bc.percentile(api_lat, 99),
            "in_b50": bc.percentile(bare_lat, 50),
            "in_b99": bc.percentile(bare_lat, 99),
        }

    def actions(self) -> None:
        n = self.s.action_samples
        r = self.actions_measure()
        self.data["actions"] = r
        self.report.add(
            "actions",
            "### 6. Actions",
            "",
            f'{n} `POST /v2/accounts/{{acc}}/channels/{{uuid}}` `{{"action":"hangup"}}` '
            "through the API (answered only after FreeSWITCH's `+OK`), interleaved with "
            f"{n} bare ESL round trips `api uuid_kill <uuid>` from a raw socket client on the "
            "same stand-in, each on its own live channel, 5 ms apart. Judged: both clients in "
            "a process of their own (`bench/action_client.py`), as every real client is. "
            "Beside it, the same from the bench's own process, which is also the stand-in's: "
            "there the bare round trip never leaves the process, while the POST crosses to "
            "channelsd and back twice, so the difference there also holds two process "
            "wake-ups that a real ESL client pays too.",
            "",
            "| path | clients in their own process: p50 ms | p99 ms "
            "| in the stand-in's process: p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            f"| bare ESL `api uuid_kill` | {bc.ms(r['b50'])} | {bc.ms(r['b99'])} | "
            f"{bc.ms(r['in_b50'])} | {bc.ms(r['in_b99'])} |",
            f"| POST hangup through channelsd | {bc.ms(r['a50'])} | {bc.ms(r['a99'])} | "
            f"{bc.ms(r['in_a50'])} | {bc.ms(r['in_a99'])} |",
            f"| added by channelsd | {bc.ms(r['a50'] - r['b50'])} | {bc.ms(r['a99'] - r['b99'])} | "
            f"{bc.ms(r['in_a50'] - r['in_b50'])} | {bc.ms(r['in_a99'] - r['in_b99'])} |",
            "",
        )
        self.report.target(
            "actions",
            "POST hangup ≤ +1 ms p50 over the bare ESL round trip (clients in their own process)",
            f"+{bc.ms(r['a50'] - r['b50'])} ms",
            r["a50"] - r["b50"] <= 0.001,
        )

    # what-if: Nagle off on the API's sockets ------------------------------------------------

    def whatif(self) -> None:
        """The list cases again with the per-second list cache switched off."""
        rows: list[tuple[str, str, str, str]] = []
        if "reads" in self.data:
            cases = ("account-1-idle", "account-16-idle", "account-16-loaded")
            alt = self.reads_measure(cases=cases, nocache=True)
            for key in cases:
                ep, clients, state = key.split("-")
                a, b = self.data["reads"][key]["res"], alt[key]["res"]
                what = f"{self.read_title(ep)}, {clients} client(s), {state}"
                rows.append((what, "req/s", f"{a.rps:,.0f}", f"{b.rps:,.0f}"))
                rows.append((what, "p50 ms", bc.ms(a.p50), bc.ms(b.p50)))
                rows.append((what, "p99 ms", bc.ms(a.p99), bc.ms(b.p99)))
        if "fs" in self.data:
            alt_fs = {k: r for size, k, _, r in self.fs_measure(sizes=(980,), nocache=True)}
            fs = FS_SHOW_CHANNELS_MS[980] / 1000
            for size, key, _, res in self.data["fs"]:
                if size == 980:
                    rows.append(
                        (
                            f"{FS_TITLES[key]} at 980, vs show channels",
                            "faster",
                            f"{fs / res.p50:.1f}x",
                            f"{fs / alt_fs[key].p50:.1f}x",
                        )
                    )
        if not rows:
            return
        lines = [
            "### What-if: every list built afresh",
            "",
            "channelsd keeps a list's JSON for the rest of the wall-clock second while nothing "
            "in it changes (`channelsd.listing.ListCache`; `elapsed_s` counts whole seconds, as "
            "Kazoo does, so the answer is the same). In the scenarios above the listed accounts "
            "do not change during a row (the replayed burst capture has no Kazoo accounts), so "
            "most answers come from it; when the ingested events keep touching the listed "
            "accounts, every answer is built afresh. The same cases again against channelsd's "
            "`Daemon` started by `bench/launch_daemon.py --no-list-cache`, measured in this run "
            "with the sizes and load of the scenarios above.",
            "",
            "| measurement | figure | `channelsd run` | list cache off |",
            "|---|---|---:|---:|",
        ]
        lines += [f"| {w} | {f} | {a} | {b} |" for w, f, a, b in rows]
        self.report.add("whatif", *lines, "")

    # profiles of what missed ------------------------------------------------------------------

    # 7-10. the scenarios of issues #16 and #17 (their own modules) -----------------------

    def fanout(self) -> None:
        fanout.fanout(self)

    def nodes(self) -> None:
        nodes.many_nodes(self)

    def startup(self) -> None:
        nodes.startup(self)

    def soak(self) -> None:
        soak.suite_scenario(self)

    # profiles of what missed ------------------------------------------------------------------

    def profile_missed(self, missed: list[Target]) -> None:
        keys = {t.scenario for t in missed}
        if "ingest" in keys:
            self.ingest(spy=True)
        if "reads" in keys:
            cases = []
            for t in missed:
                if t.scenario == "reads":
                    if "single" in t.what:
                        cases.append("single-1-idle")
                    elif "system" in t.what:
                        cases.append("system-16-idle" if "16" in t.what else "system-1-idle")
                    else:
                        cases.append("account-16-loaded")
            self.reads_measure(cases=tuple(dict.fromkeys(cases)), spy=True)
        if "memory" in keys:
            self.memory_breakdown()
        if "actions" in keys:
            self.actions_measure(spy=True)
        # fan-out, many nodes and start-up have no profiled re-run yet: their sections give
        # the daemon's CPU share, which says whether a profile would find Python at work.


def wait_until_count(http: bc.Http, path: str, count: int, timeout: float) -> int:
    """Wait for the list at `path` to hold `count` items; returns how many it holds."""
    held = [0]

    def enough() -> bool:
        held[0] = len(http.get_json(path)["data"])
        return held[0] >= count

    bc.wait_until(enough, timeout, f"{count} items in {path}", 0.2)
    return held[0]


READ_TITLES = {
    "account": "account list ({per} of {total})",
    "single": "single-channel GET",
    "system": "system-wide list ({total})",
}
FS_TITLES = {
    "system": "system-wide list",
    "big": "account list, 10 % account",
    "small": "account list, ~1 % account",
}

# -- report -----------------------------------------------------------------------------------

RUNNERS = {
    "ingest": "ingest",
    "reads": "reads",
    "fs": "fs_compare",
    "memory": "memory",
    "reconcile": "reconcile",
    "actions": "actions",
    "fanout": "fanout",
    "nodes": "nodes",
    "startup": "startup",
    "soak": "soak",
}


def run_once(sizes: Sizes, quick: bool, workdir: Path, only: list[str], whatif: bool) -> Any:
    """One pass over the scenarios; returns (RunResult, the Suite)."""
    suite = Suite(sizes, quick, workdir)
    started = perf()
    failed: list[str] = []
    for key in only:
        t = perf()
        print(f"bench: {key} ...", file=sys.stderr, flush=True)
        if not suite.attempt(key, getattr(suite, RUNNERS[key])):
            failed.append(key)
        print(f"bench: {key} done in {perf() - t:.0f} s", file=sys.stderr, flush=True)
    if whatif and {"reads", "fs"} & set(only):
        print("bench: what-if (list cache off) ...", file=sys.stderr, flush=True)
        suite.attempt("whatif", suite.whatif)
    result = RunResult(suite.report, suite.data, suite.noise, perf() - started, failed, suite.pace)
    return result, suite


def _non_default_sync() -> str:
    """The `[sync]` keys the bench's daemons set away from a default install's."""
    default = SyncConfig()
    return ", ".join(
        f"`{key} = {value:g}` (default {getattr(default, key):g})"
        for key, value in bc.DaemonProcess.SYNC.items()
        if value != getattr(default, key)
    )


def render(
    runs: list[RunResult], command: str, seconds: float, order: list[str], quick: bool
) -> str:
    out = [
        MARK_BEGIN,
        "## End-to-end suite (issues #4, #16)",
        "",
        f"Command: `{command}` — {time.strftime('%Y-%m-%d')}, {seconds / 60:.1f} min in all.  ",
        f"Machine: {machine()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}.  ",
        f"Code: {bc.code_version()}.  ",
        bc.compiled_parts()[1] + "  ",
        "Set-up: the daemon under test runs as `python -m channelsd run -c <generated toml>` in "
        "its own process; the stand-ins FreeSWITCH (`channelsd/standin`, real ESL over TCP), "
        "the baseline readers' sender and the HTTP clients of the other scenarios run in the "
        "bench process; the read and action clients (raw-socket keep-alive HTTP/1.1, their CPU "
        "measured beside every read figure), the baseline readers and the fan-out's "
        "subscribers are processes of their own. The bench process's cyclic garbage "
        "collector is off while a scenario runs (its full collections paused the stand-ins "
        "and clients for up to 200 ms). All traffic is on "
        "127.0.0.1. Every comparison is measured side by side in the same run. The daemon's "
        "settings that differ from a default install (`[sync]`): "
        + _non_default_sync()
        + " (reconnects after a blip begin at once, and no periodic full reconcile lands in"
        " a timed round; the blip's and the reconcile's own figures measure that work)."
        + (" **Quick run: smaller sizes, targets not comparable.**" if quick else ""),
        "",
        "### Targets" + (f" ({len(runs)} consecutive runs)" if len(runs) > 1 else ""),
        "",
    ]
    if len(runs) > 1:
        out += [
            "A target counts as met only when it held in every run; each run's figure is "
            "shown, with its sections below.",
            "",
        ]
    ran = [owned for key in order for owned in OWNS.get(key, (key,))]
    out += targets_table(runs, ran)
    out += ["", _noise_text(runs), ""]
    if paced := pace_text(runs):
        out += [paced, ""]
    out += capacity.section(runs)
    for i, run in enumerate(runs):
        body: list[str] = []
        for key in [*order, "whatif"]:
            body += run.report.sections.get(key, [])
            for owned in OWNS.get(key, ())[1:]:
                if owned not in order:
                    body += run.report.sections.get(owned, [])
            body += run.report.profiles.get(key, [])
        if run.failed:
            body += [f"Scenarios that failed in this run: {', '.join(run.failed)}.", ""]
        if len(runs) > 1:
            out += [f"### Run {i + 1} of {len(runs)} ({run.seconds / 60:.1f} min)", ""]
            out += demote(body)
        else:
            out += body
    out.append(MARK_END)
    return "\n".join(out) + "\n"


def _noise_text(runs: list[RunResult]) -> str:
    seen = per_run(
        runs, lambda run: ", ".join(f"{k} {c:.2f} ({n})" for k, (_, c, n) in run.noise.items())
    )
    return (
        "The machine is shared: before each scenario the suite waits (up to 60 s) for a quiet "
        "second, measures what other processes use meanwhile, and runs a scenario again (twice "
        f"at most) when that exceeds {NOISY} of a core, keeping the quietest run. Other "
        "processes' CPU during the runs kept, in cores of 2 (runs made): " + seen + "."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    ap.add_argument("--runs", type=int, default=1, help="run the suite N times in a row")
    ap.add_argument("--only", default="", help="comma list of: " + ",".join(ORDER))
    ap.add_argument("--no-profile", action="store_true", help="no profiled re-runs")
    ap.add_argument("--no-whatif", action="store_true", help="no list-cache-off what-if rows")
    ap.add_argument("--write", action="store_true", help="put the report into BENCHMARKS.md")
    ap.add_argument("--out", default="", help="also write the report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = ap.parse_args()
    only = [x for x in args.only.split(",") if x] or list(DEFAULT)
    unknown = set(only) - set(ORDER)
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.runs < 1 or args.runs > 10:
        ap.error("--runs takes 1 to 10")
    only = [k for k in ORDER if k in only]
    for key, owned in OWNS.items():  # a scenario that includes others runs them once
        if key in only:
            only = [k for k in only if k == key or k not in owned]
    sizes = QUICK if args.quick else FULL
    # The daemon under test loads its modules' bytecode as an installed one does (`pip
    # install` compiles it): with PYTHONDONTWRITEBYTECODE set, as on the bench machines, an
    # editable checkout compiled every module at each start (~0.1 s of the start-up figure).
    compileall.compile_dir(str(bc.ROOT / "channelsd"), quiet=1)
    built, said = bc.compiled_parts()
    if not built:  # measured anyway (the report says so first): a figure, not a refusal
        print(f"bench: warning: {said}", file=sys.stderr, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="channelsd-bench-"))
    limit = (900 if args.quick else 2400) * args.runs + (1200 if "soak" in only else 0)
    suites: list[Suite] = []

    def overrun() -> None:
        print(f"bench: still running after {limit} s, stopping", file=sys.stderr, flush=True)
        for suite in suites:
            suite.cleanup()
        os._exit(3)

    watchdog = gevent.spawn_later(limit, overrun)
    shown = [a for a in sys.argv[1:] if a in ("--quick", "--no-profile", "--no-whatif")]
    if args.runs > 1:
        shown.append(f"--runs {args.runs}")
    if args.only:
        shown.append(f"--only {args.only}")
    command = " ".join([".venv/bin/python bench/run.py", *shown])
    started = perf()
    runs: list[RunResult] = []
    try:
        for i in range(args.runs):
            if args.runs > 1:
                print(f"bench: run {i + 1} of {args.runs}", file=sys.stderr, flush=True)
            result, suite = run_once(sizes, args.quick, workdir, only, not args.no_whatif)
            suites.append(suite)
            runs.append(result)
        if not args.no_profile:
            missed = {t.key: t for run in runs for t in run.report.targets if not t.met}
            if missed:
                print("bench: profiling what missed ...", file=sys.stderr, flush=True)
                bc.wait_quiet(60)
                profiler = suites[-1]  # its profiles land in the last run's report
                try:
                    profiler.profile_missed(list(missed.values()))
                except Exception:  # a failed profile must not lose the runs' figures
                    traceback.print_exc()
                finally:
                    profiler.cleanup()
    finally:
        for suite in suites:
            suite.cleanup()
        watchdog.kill(block=False)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"bench: work directory kept: {workdir}", file=sys.stderr)
    text = render(runs, command, perf() - started, only, args.quick)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.write:
        write_benchmarks(bc.ROOT / "BENCHMARKS.md", text)
    return 1 if any(run.failed for run in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
