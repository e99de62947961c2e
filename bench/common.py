"""Shared pieces of the end-to-end suite (bench/run.py).

* `CaptureReplay`: the real 50-call burst capture, filtered to the events channelsd subscribes
  to, as frame templates whose uuids are made fresh for every repetition.
* `SyntheticChannels`: live Kazoo-style channels built from the capture's own CHANNEL_CREATE and
  CHANNEL_ANSWER events (new uuid, account, owner, device, custom channel variables).
* `DaemonProcess`: `python -m channelsd run -c <generated toml>` in its own process.
* `Http`: a minimal keep-alive HTTP/1.1 client on a raw socket, so that the load generator
  costs far less CPU per request than the daemon under test.
* `Spy`: py-spy attached to the daemon, summarised as top functions.

Everything talks over 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import gzip
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from channelsd.node import SUBSCRIBED_EVENTS  # noqa: E402
from channelsd.standin.replay import Frame, load_frames  # noqa: E402
from channelsd.table import ChannelTable  # noqa: E402
from channelsd.tokens import digest  # noqa: E402

LOOPBACK = "127.0.0.1"
CAPTURES = ROOT / "tests" / "fixtures" / "captures"
BURST = "s7_burst50.events.raw.gz"
PYTHON = sys.executable
SUPER_TOKEN = "bench-superduper-token-0123456789"
PASSWORD = "ClueCon"

# What the replays send: the events channelsd subscribes to, less HEARTBEAT. The capture has
# one per repetition; replayed dozens of times a second (a switch sends one per 20 s), their
# Session-Count would trip channelsd's drift check into reconciling many times a second, and
# a reconcile drops the synthetic channels the stand-in does not hold itself.
REPLAYED_EVENTS = tuple(n for n in SUBSCRIBED_EVENTS if n != "HEARTBEAT")

_UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CORE_RE = re.compile(rb'Core-UUID"?: ?"?([0-9a-f-]{36})')


def new_uuid() -> str:
    return str(uuidlib.uuid4())


# -- capture replay ------------------------------------------------------------------------


class CaptureReplay:
    """The burst capture's subscribed events, replayable with fresh uuids per repetition.

    Every uuid in a frame's bytes (Unique-ID, Other-Leg-Unique-ID, call uuids, Job-UUIDs, the
    uuids inside variables and bodies) is replaced by a fresh one; the switch's Core-UUID is
    kept. uuids are all 36 bytes, but Content-Length is recomputed anyway.
    """

    def __init__(
        self,
        fmt: str,
        names: Iterable[str] = REPLAYED_EVENTS,
        account_of: Callable[[int], str] | None = None,
    ) -> None:
        wanted = frozenset(names)
        self.fmt = fmt
        self.frames = [f for f in load_frames(CAPTURES / fmt / BURST) if f.event_name in wanted]
        # Kazoo-style accounts (json only): the capture's k-th channel (by first appearance)
        # is put in account_of(k), by a custom channel variable in every event that carries
        # the variables, as Kazoo's ecallmgr sets it.
        ordinal: dict[str, int] = {}
        for f in self.frames:
            if f.unique_id:
                ordinal.setdefault(f.unique_id, len(ordinal))
        self.accounts: dict[int, str] = {}
        core = None
        for f in self.frames:
            m = _CORE_RE.search(f.raw)
            if m:
                core = m.group(1)
                break
        index: dict[bytes, int] = {}
        self._templates: list[tuple[str, bytes, bytes, tuple[int, ...]]] = []
        for f in self.frames:
            head, _, body = f.raw.partition(b"\n\n")
            rest = b"\n".join(ln for ln in head.split(b"\n") if not ln.startswith(b"Content-Len"))
            if account_of is not None and f.unique_id and b'"variable_uuid"' in body:
                if fmt != "json":
                    raise ValueError("accounts are put into json events only")
                k = ordinal[f.unique_id]
                acc = self.accounts.setdefault(k, account_of(k))
                body = b'{"variable_ecallmgr_Account-ID":"%s",%s' % (acc.encode(), body[1:])
            parts = _UUID_RE.split(body)
            found = _UUID_RE.findall(body)
            tpl = parts[0].replace(b"%", b"%%")
            slots: list[int] = []
            for u, part in zip(found, parts[1:], strict=True):
                if u == core:
                    tpl += u
                else:
                    slots.append(index.setdefault(u, len(index)))
                    tpl += b"%s"
                tpl += part.replace(b"%", b"%%")
            self._templates.append((f.event_name or "", rest, tpl, tuple(slots)))
        self.n_uuids = len(index)
        # Where the capture has every one of its 100 channels up (all originated, hupall not
        # yet fired): the frame that first names the last channel to appear, plus one.
        first_seen: dict[str, int] = {}
        for i, f in enumerate(self.frames):
            if f.unique_id and (f.event_name or "").startswith("CHANNEL_"):
                first_seen.setdefault(f.unique_id, i)
        self.cut = max(first_seen.values()) + 1

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def channel_events(self) -> int:
        return sum(1 for f in self.frames if (f.event_name or "").startswith(("CHANNEL_", "CALL_")))

    def repetition(self, limit: int | None = None) -> list[Frame]:
        """One pass over the capture (its first `limit` frames) with fresh uuids."""
        fresh = [new_uuid().encode() for _ in range(self.n_uuids)]
        out = []
        for name, rest, tpl, slots in self._templates[:limit]:
            body = tpl % tuple([fresh[s] for s in slots])
            raw = b"Content-Length: %d\n%s\n\n%s" % (len(body), rest, body)
            out.append(Frame("text/event-" + self.fmt, name, None, raw))
        return out

    def stream(self, full_reps: int) -> list[Frame]:
        """`full_reps` repetitions, then one cut where all of its 100 channels are up."""
        frames: list[Frame] = []
        for _ in range(full_reps):
            frames.extend(self.repetition())
        frames.extend(self.repetition(self.cut))
        return frames


def final_uuids(frames: Iterable[Frame]) -> set[str]:
    """The channels a table holds after these json frames (channelsd's own table, offline)."""
    table = ChannelTable()
    for f in frames:
        table.apply("fs1", orjson.loads(f.raw.partition(b"\n\n")[2]))
    return {ch.uuid for ch in table.all()}


# -- synthetic live channels -----------------------------------------------------------------

_DROP_KEYS = (
    "variable_other_loopback_leg_uuid",
    "variable_loopback_leg",
    "variable_originate_early_media",
    "variable_originate_endpoint",
    "variable_origination_uuid",
    "variable_is_outbound",
)


def kazoo_id(seed: str) -> str:
    """A 32-hex id like Kazoo's account, user and device ids."""
    return uuidlib.uuid5(uuidlib.NAMESPACE_DNS, seed).hex


_TEMPLATE_EVENTS = (
    "CHANNEL_CREATE",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
)
# The headers the table reads a callee name from (first present wins): a probe sets them all.
_CALLEE_NAME_HEADERS = (
    "variable_origination_callee_id_name",
    "variable_effective_callee_id_name",
    "Caller-Callee-ID-Name",
)
_HOLD_CALL_STATES = {"CHANNEL_HOLD": "HELD", "CHANNEL_UNHOLD": "ACTIVE"}


class SyntheticChannels:
    """Answered SIP-like channels in Kazoo accounts, from the capture's own event templates.

    Each channel is two events: CHANNEL_CREATE and CHANNEL_ANSWER, both carrying every
    variable, as FreeSWITCH sends them, with ten ecallmgr_ custom channel variables as Kazoo
    sets them (account, owner, device, realm, username, interaction id, ...). An ended call
    adds the capture's CHANNEL_HANGUP_COMPLETE and CHANNEL_DESTROY of the same leg. A kept
    channel can be sent again as a CALL_UPDATE with changed headers (the fan-out's probes).
    """

    def __init__(self, accounts: list[str], users_per_account: int = 20) -> None:
        frames = load_frames(CAPTURES / "json" / BURST)
        uid = next(f.unique_id for f in frames if f.event_name == "CHANNEL_CREATE")
        by_name = {}
        for f in frames:
            if f.unique_id == uid and f.event_name in _TEMPLATE_EVENTS:
                by_name.setdefault(f.event_name, orjson.loads(f.raw.partition(b"\n\n")[2]))
        self.templates: dict[str, dict[str, Any]] = {}
        for name in _TEMPLATE_EVENTS:
            tpl = by_name[name]
            for k in _DROP_KEYS:
                tpl.pop(k, None)
            self.templates[name] = tpl
        self.accounts = accounts
        self.users = users_per_account
        self.seq = 1_000_000
        self.made = 0
        self.kept: dict[str, dict[str, str]] = {}  # uuid -> its headers, for update()

    def account_of(self, i: int) -> str:
        return self.accounts[i % len(self.accounts)]

    def _common(self, account: str, uid: str) -> dict[str, str]:
        n = self.made
        self.made += 1
        user = n % self.users
        realm = f"{account[:8]}.sip.example.net"
        owner = kazoo_id(f"{account}/user{user}")
        device = kazoo_id(f"{account}/device{user}")
        name = f"sofia/sipinterface_1/user{user}@{realm}"
        now_us = time.time_ns() // 1000
        return {
            "Unique-ID": uid,
            "Caller-Unique-ID": uid,
            "Channel-Call-UUID": uid,
            "variable_uuid": uid,
            "variable_call_uuid": uid,
            "Channel-Name": name,
            "Caller-Channel-Name": name,
            "variable_channel_name": name,
            "Call-Direction": "inbound",
            "Caller-Direction": "inbound",
            "variable_direction": "inbound",
            "Caller-Source": "mod_sofia",
            "Caller-Caller-ID-Name": f"User {user}",
            "Caller-Caller-ID-Number": f"{1000 + user}",
            "Caller-Destination-Number": f"+1415555{n % 10000:04d}",
            "Caller-Profile-Created-Time": str(now_us),
            "Caller-Channel-Created-Time": str(now_us),
            "variable_presence_id": f"user{user}@{realm}",
            "variable_ecallmgr_Account-ID": account,
            "variable_ecallmgr_Realm": realm,
            "variable_ecallmgr_Username": f"user{user}",
            "variable_ecallmgr_Owner-ID": owner,
            "variable_ecallmgr_Authorizing-ID": device,
            "variable_ecallmgr_Authorizing-Type": "device",
            "variable_ecallmgr_Channel-Authorized": "true",
            "variable_ecallmgr_Reseller-ID": kazoo_id("reseller"),
            "variable_ecallmgr_Application-Name": "callflow",
            "variable_ecallmgr_Call-Interaction-ID": f"63{n:09d}-{uid[:8]}",
        }

    def _frame(self, template: str, common: dict[str, str], name: str | None = None) -> Frame:
        self.seq += 1
        event = dict(self.templates[template])
        event.update(common)
        if name is not None:
            event["Event-Name"] = name
        event["Event-Sequence"] = str(self.seq)
        if template != "CHANNEL_CREATE":
            event["Answer-State"] = "answered"
            created = int(common["Caller-Channel-Created-Time"])
            event["Caller-Channel-Answered-Time"] = str(created + 1000)
        body = orjson.dumps(event)
        raw = b"Content-Length: %d\nContent-Type: text/event-json\n\n%s" % (len(body), body)
        return Frame("text/event-json", event["Event-Name"], common["Unique-ID"], raw)

    def channel(
        self, account: str, uid: str | None = None, ended: bool = False, keep: bool = False
    ) -> tuple[str, list[Frame]]:
        """(uuid, [CHANNEL_CREATE, CHANNEL_ANSWER]) of one new answered channel in `account`;
        `ended`: then hung up (+ CHANNEL_HANGUP_COMPLETE, CHANNEL_DESTROY); `keep`: its
        headers are kept for update()."""
        uid = uid or new_uuid()
        common = self._common(account, uid)
        if keep:
            self.kept[uid] = common
        names = _TEMPLATE_EVENTS if ended else _TEMPLATE_EVENTS[:2]
        return uid, [self._frame(name, common) for name in names]

    def update(self, uid: str, callee_name: str, event: str = "CALL_UPDATE") -> Frame:
        """A CALL_UPDATE of a kept channel carrying all its variables and a new callee name
        (every header the table reads the name from); or, with `event`, a CHANNEL_HOLD or
        CHANNEL_UNHOLD carrying the same (FreeSWITCH sends every variable with those too, and
        they say the call state they leave the channel in)."""
        common = dict(self.kept[uid])
        for header in _CALLEE_NAME_HEADERS:
            common[header] = callee_name
        if event in _HOLD_CALL_STATES:
            common["Channel-Call-State"] = _HOLD_CALL_STATES[event]
        return self._frame("CHANNEL_ANSWER", common, event)


# -- the daemon under test -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Child side of Popen: get SIGTERM if the bench process dies, so nothing is left behind."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


CHILDREN: list[subprocess.Popen] = []


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, preexec_fn=_die_with_parent, **kw)
    CHILDREN.append(proc)
    return proc


_COMPILED_CHECK = (
    "from channelsd.builds import COMPILED, source_state\n"
    "for name in COMPILED: print(name, source_state(name))"
)


def code_version() -> str:
    """The commit measured, and whether the work tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git work tree)"
    return f"commit {head}" + (", with uncommitted changes" if dirty else "")


def compiled_parts() -> tuple[bool, str]:
    """Whether the daemons this suite starts run the C parts built from this checkout's
    sources (asked of an interpreter started as they are: same Python, path and directory),
    and a line saying so for the report. Without them, or with a build of other sources,
    the suite measures another daemon than the checkout's, silently: pip skips the C parts
    where no compiler is found."""
    out = subprocess.run(
        [PYTHON, "-c", _COMPILED_CHECK],
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    states = dict(line.split(" ", 1) for line in out if line)
    if all(state == "current" for state in states.values()):
        return True, "C parts (`channelsd_picker`, `channelsd_fields`) built from these sources."
    wrong = ", ".join(f"`{name}` {state}" for name, state in states.items() if state != "current")
    return False, (
        f"**C parts not as in these sources ({wrong}): the daemon measured is not this "
        "checkout's** (build them: `.venv/bin/python setup.py build_ext --inplace`)."
    )


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_sched(pid: int) -> tuple[float, float]:
    """Seconds a process's main thread has run on a CPU and has waited, runnable, for one
    (the kernel's /proc/PID/task/PID/schedstat); (0, 0) once it is gone or where the kernel
    keeps no such figures. The wait is time the machine's other work took from it."""
    try:
        run, wait = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[:2]
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run) / 1e9, int(wait) / 1e9


def main_thread_since(pid: int, before: tuple[float, float]) -> tuple[float, float]:
    """main_thread_sched's two figures since `before` (an earlier reading of it)."""
    now = main_thread_sched(pid)
    return now[0] - before[0], now[1] - before[1]


def sched_text(figures: tuple[float, float]) -> str:
    """`ran / waited`, in seconds, as the reports print main_thread_since."""
    return f"{figures[0]:.2f} / {figures[1]:.2f}"


def paired_ratios_text(base: list[dict[str, Any]], other: list[dict[str, Any]]) -> str:
    """The other estimator, printed beside the judged one (best round of each kind): each
    round's rate over its interleaved neighbour's, and their median. Noise only slows a
    round, so the paired median sits below the true ratio more often than the best of each
    does (BENCHMARKS.md, 2026-12-06); it is shown, not judged, so that a reader can weigh both."""
    ratios = [o["rate"] / b["rate"] for b, o in zip(base, other, strict=True)]
    return (
        "Each round over its interleaved neighbour (shown, not judged): "
        + ", ".join(f"{r:.2f}×" for r in ratios)
        + f"; median {statistics.median(ratios):.2f}×."
    )


def machine_pace(seconds: float = 0.3, slice_s: float = 0.05) -> float:
    """How fast this machine runs Python now: a fixed loop's iterations per ms, the median of
    its `slice_s` slices over `seconds`. This VM's host slows it for spells without showing
    steal time (2.6x between scenarios of one suite, BENCHMARKS.md); a short sample shows how
    far the host moves, not the pace a scenario then meets over its seconds."""
    rates = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        stop, n = start + slice_s, 0
        while time.perf_counter() < stop:
            n += 1
        rates.append(n / (time.perf_counter() - start) / 1000)
    return statistics.median(rates)


def steadiness_text(kinds: dict[str, list[float]]) -> str:
    """How much the same work varied between rounds: each kind's fastest round over its
    slowest. The machine here is a VM whose host slows it without showing steal time (a busy
    loop's speed dips by 40 % for 100 ms at a time, steal 0), which the quiet check of the
    VM's own processes does not see; a kind that runs no channelsd (the floor reader) shows
    the machine alone, the others the machine and the code together. Shown, not judged."""
    parts = []
    for kind, rates in kinds.items():
        measured = [r for r in rates if r]  # (a zero rate has no ratio to take)
        if len(measured) > 1:
            parts.append(f"{kind} {max(measured) / min(measured):.2f}×")
        elif measured:
            parts.append(f"{kind} one round")
    if not parts:
        return ""
    return (
        "Fastest round over slowest, each kind (the same work repeated: how much it varied): "
        + ", ".join(parts)
        + "."
    )


def rounds_text(
    base_label: str, base: list[dict[str, Any]], other_label: str, other: list[dict[str, Any]]
) -> str:
    """Two kinds of interleaved rounds (each a dict with its "rate"): every round's events/s,
    each round over its neighbour, and how much each kind varied."""
    return (
        f"All rounds, events/s: {base_label} "
        + ", ".join(f"{r['rate']:,.0f}" for r in base)
        + f"; {other_label} "
        + ", ".join(f"{r['rate']:,.0f}" for r in other)
        + ". "
        + paired_ratios_text(base, other)
        + " "
        + steadiness_text(
            {base_label: [r["rate"] for r in base], other_label: [r["rate"] for r in other]}
        )
    )


def rss_kib(pid: int) -> int:
    """A process's resident set (VmRSS) in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class MachineMeter:
    """CPU the rest of the machine used: all busy CPU time less this process and its children.

    The machine is shared (other work may run tests meanwhile); the report says how much.
    """

    def __init__(self) -> None:
        self.t0, self.busy0, self.ours0 = time.monotonic(), self._busy(), self._ours()

    @staticmethod
    def _busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours() -> float:
        import resource

        me = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        live = sum(proc_cpu(p.pid) for p in CHILDREN if p.poll() is None)
        return me.ru_utime + me.ru_stime + reaped.ru_utime + reaped.ru_stime + live

    def foreign(self) -> float:
        """Cores' worth (0..ncpu) of CPU used by other processes since this meter started."""
        wall = max(1e-9, time.monotonic() - self.t0)
        other = (self._busy() - self.busy0) - (self._ours() - self.ours0)
        return max(0.0, other / wall)


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """This process's cyclic garbage collector off while a scenario runs, and run before and
    after it. This process holds the stand-ins, their replayed frames and the HTTP clients of
    some scenarios: by the many-nodes scenario its full collections took 150-200 ms, and one
    that fell inside a round stopped the stand-ins' writes or the final poll's read for that
    long, counted as the daemon's time (a 20-node ingest at 0.79x of one node instead of
    ~0.93x, seen with gc.callbacks on 2026-12-04). What a scenario leaves in cycles is freed
    when it ends."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def wait_quiet(limit: float = 60.0, below: float = 0.15) -> float:
    """Wait (at most `limit` s) for a second in which other processes used < `below` of a core;
    returns the foreign load of the last second looked at."""
    import gevent

    deadline = time.monotonic() + limit
    while True:
        meter = MachineMeter()
        gevent.sleep(1.0)
        load = meter.foreign()
        if load < below or time.monotonic() > deadline:
            return load


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class DaemonProcess:
    """`channelsd run -c <generated toml>` as a child process, logging to a file.

    `switch_ports` is one stand-in's port (node `fs1`) or a list of them (`fs1`, `fs2`, ...);
    `sync`, `api` and `websocket` override keys of those config sections (Kazoo's websocket
    is on by default, on the API's port at /websocket; with websocket `port` it also listens
    on a port of its own, as blackhole's 5555: `ws_port`). `started_at` is the
    perf_counter reading just before the process was spawned (start-up is timed from it).
    """

    SYNC = {
        "reconcile_interval": 3600,
        "stale_grace": 300,
        "command_timeout": 30,
        "connect_timeout": 5,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "heartbeat_timeout": 0,
        "tombstone_ttl": 120,
    }

    def __init__(
        self,
        workdir: Path,
        name: str,
        switch_ports: int | list[int],
        nocache: bool = False,
        sync: dict[str, Any] | None = None,
        api: dict[str, Any] | None = None,
        log_level: str = "info",
        http: dict[str, Any] | None = None,
        http_port: int | None = None,
        websocket: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.http_port = http_port or free_port()
        self.ws_port: int | None = (websocket or {}).get("port")
        self.config = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        ports = [switch_ports] if isinstance(switch_ports, int) else list(switch_ports)
        self.nodes = [f"fs{i + 1}" for i in range(len(ports))]
        lines = ["[http]", f'host = "{LOOPBACK}"', f"port = {self.http_port}"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in (http or {}).items()] + [""]
        for node, port in zip(self.nodes, ports, strict=True):
            lines += [
                "[[nodes]]",
                f'name = "{node}"',
                f'host = "{LOOPBACK}"',
                f"port = {port}",
                f'password = "{PASSWORD}"',
                "",
            ]
        api_keys = {"system_wide_channels_list": True, **(api or {})}
        sync_keys = {**self.SYNC, **(sync or {})}
        lines += [
            "[api]",
            *[f"{k} = {_toml_value(v)}" for k, v in api_keys.items()],
            "",
            "[sync]",
            *[f"{k} = {_toml_value(v)}" for k, v in sync_keys.items()],
            "",
            "[[tokens]]",
            'name = "bench"',
            f'sha256 = "{digest(SUPER_TOKEN)}"',
            'account_id = "bench-superduper"',
            'role = "superduper"',
            "",
            "[logging]",
            f'level = "{log_level}"',
            "",
        ]
        if websocket:
            lines += ["[websocket]", *[f"{k} = {_toml_value(v)}" for k, v in websocket.items()]]
            lines.append("")
        self.settings = {"sync": sync_keys, "api": api_keys}
        self.config.write_text("\n".join(lines))
        self._logf = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        if nocache:  # the what-if launcher: channelsd's Daemon with the list cache off
            argv = [str(Path(__file__).with_name("launch_daemon.py")), "--no-list-cache"]
        else:
            argv = ["-m", "channelsd", "run"]
        self.started_at = time.perf_counter()
        self.proc = spawn(
            [PYTHON, *argv, "-c", str(self.config)], stdout=self._logf, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")

    def wait_log(self, pattern: str, start: int = 0, timeout: float = 30.0) -> re.Match[str]:
        """Wait for a log line matching `pattern` at or after character `start`."""
        import gevent

        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), start)
            if m:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no log line /{pattern}/ within {timeout}s")
            gevent.sleep(0.005)

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_log(r"listening on http://", 0, timeout)
        for node in self.nodes:
            self.wait_log(rf"node={node} reconciled", 0, timeout)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return proc_cpu(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._logf.close()


# -- HTTP -------------------------------------------------------------------------------------


class HttpError(Exception):
    pass


class Http:
    """Keep-alive HTTP/1.1 on one raw socket; responses are read by Content-Length or chunks.

    A 10,000-channel list is ~11 MB of JSON: the body is read with `recv_into` straight into
    one buffer of its announced length (no growing `bytes` re-copied at every read, which
    cost ~40 ms per such answer and was the ceiling of the system-list rows), and returned
    as that `bytearray` (orjson, `len`, slicing and `decode` take it as they take bytes).
    """

    CHUNK = 262144

    def __init__(
        self, port: int, token: str = SUPER_TOKEN, timeout: float = 60.0, gzip: bool = False
    ) -> None:
        self.port = port
        self.token = token
        self.timeout = timeout
        # `gzip`: ask for it as browsers do (Accept-Encoding); request() returns the body as
        # it came, `encoding` says how (get_json decodes it).
        self.accept = "Accept-Encoding: gzip\r\n" if gzip else ""
        self.encoding = ""
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self._chunk = bytearray(self.CHUNK)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((LOOPBACK, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, bytearray()
        return sock

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None

    def _fill(self) -> None:
        assert self.sock is not None
        n = self.sock.recv_into(self._chunk)
        if not n:
            raise HttpError("connection closed")
        self.buf += memoryview(self._chunk)[:n]  # bytearray: amortised, not re-copied

    def _take(self, n: int) -> bytearray:
        """The next `n` bytes: what is buffered, then the rest read into place."""
        have = len(self.buf)
        if have >= n:
            out = self.buf[:n]
            del self.buf[:n]  # bytearray drops its head without moving the tail
            return out
        out = bytearray(n)
        out[:have] = self.buf
        self.buf = bytearray()
        view = memoryview(out)
        assert self.sock is not None
        while have < n:
            got = self.sock.recv_into(view[have:], n - have)
            if not got:
                raise HttpError("connection closed")
            have += got
        return out

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return out
            self._fill()

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytearray]:
        reused = self.sock is not None
        sock = self.sock or self._connect()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nX-Auth-Token: {self.token}\r\n"
            + self.accept
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            sock.sendall(head.encode() + b"\r\n" + (body or b""))
            start = 0
            while True:
                i = self.buf.find(b"\r\n\r\n", start)
                if i >= 0:
                    break
                start = max(0, len(self.buf) - 3)
                self._fill()
        except (HttpError, OSError):
            if not reused or method != "GET" or self.buf:
                raise
            # A kept-alive connection the server closed while it sat idle (its keepalive
            # timeout): nothing of this request was answered, so a GET is asked again anew.
            self.close()
            return self.request(method, path, body)
        lines = self.buf[:i].decode("latin-1").split("\r\n")
        del self.buf[: i + 4]
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            data = self._take(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    self._line()
                    break
                data += self._take(size)
                self._take(2)
        else:
            raise HttpError(f"response without a length: {headers}")
        if headers.get("connection", "").lower() == "close":
            self.close()
        self.encoding = headers.get("content-encoding", "")
        return status, data

    def get_json(self, path: str) -> Any:
        status, data = self.request("GET", path)
        if status != 200:
            raise HttpError(f"GET {path}: {status} {data[:200]!r}")
        return orjson.loads(gzip.decompress(data) if self.encoding == "gzip" else data)


def wait_until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.005) -> Any:
    import gevent

    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        gevent.sleep(every)


# -- statistics --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ms(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "n/a"
    v = seconds * 1000
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


# -- profiling ---------------------------------------------------------------------------------


class Spy:
    """py-spy sampling the daemon (without pausing it) until stop(); top functions."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.out = out
        exe = Path(PYTHON).with_name("py-spy")
        self.available = exe.exists()
        self.proc: subprocess.Popen | None = None
        if not self.available:  # profiles are then left out: `.venv/bin/pip install py-spy`
            return
        self.proc = spawn(
            [
                str(exe),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--function",
                "--nonblocking",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # let it attach

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _short(frame: str) -> str:
    """`func (path:line)` with the path made short."""
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    func, path, line = m.groups()
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    path = path.replace(str(ROOT) + "/", "")
    return f"{func} ({path}:{line})"


def summarise_profile(path: Path, top: int = 12) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function, self %, total %)]) from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    if not path.exists():
        return 0, []
    for line in path.read_text("utf-8", "replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        # drop the thread/process prefix frames py-spy may add
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return 0, []
    by_self = [f for f, _ in own.most_common(top)]
    # then channelsd's own callers that hold the most time, with what they call
    by_total = [
        f
        for f, _ in total.most_common()
        if f not in by_self and f.split(" (")[-1].startswith("channelsd/")
    ]
    rows = [(f, 100 * own[f] / samples, 100 * total[f] / samples) for f in by_self]
    rows += [(f, 100 * own[f] / samples, 100 * total[f] / samples) for f in by_total[: top // 2]]
    return samples, rows
