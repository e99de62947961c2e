"""The capacity model's inputs (issue #16), from the run's own figures and the captures.

BENCHMARKS.md's capacity prose is written from this table: what one event, one request, one
channel, one node and one subscriber message cost the daemon, and what the real captures say
a call sends over an event socket. Every input is the median over the runs (each run's value
is shown), and the derived figures say how they were computed, so that a reader can redo them
with another headroom or budget.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import common as bc
import orjson

from channelsd.node import SUBSCRIBED_EVENTS
from channelsd.standin.replay import load_frames

HEADROOM = 0.5  # of one core: what the daemon may use in steady state, the rest for bursts
MEMORY_BUDGET = 1 << 30  # bytes of RSS, for the concurrent-calls example
CAPTURES = (
    ("s7_burst50", "50 loopback calls set up and hung up (`originate` + `hupall`)"),
    ("s8_sip_call", "one SIP call between two sofia profiles: hold, record, transfer, hangup"),
)


def capture_rates() -> list[dict[str, Any]]:
    """Per capture: calls, events, json bytes, all and subscribed (a call = two legs)."""
    out = []
    wanted = frozenset(SUBSCRIBED_EVENTS)
    for name, what in CAPTURES:
        frames = load_frames(bc.CAPTURES / "json" / f"{name}.events.raw.gz")
        events = [orjson.loads(f.raw.partition(b"\n\n")[2]) for f in frames]
        legs = sum(1 for e in events if e.get("Event-Name") == "CHANNEL_CREATE")
        sub = [f for f in frames if f.event_name in wanted]
        stamps = [int(e["Event-Date-Timestamp"]) for e in events if "Event-Date-Timestamp" in e]
        began = time.perf_counter()
        for e in events:  # what serialising them costs (a proxy for the switch: see below)
            orjson.dumps(e)
        dump_us = (time.perf_counter() - began) / len(events) * 1e6
        calls = legs / 2
        out.append(
            {
                "name": name,
                "what": what,
                "calls": calls,
                "events": len(frames) / calls,
                "subscribed": len(sub) / calls,
                "bytes": sum(len(f.raw) for f in frames) / calls,
                "sub_bytes": sum(len(f.raw) for f in sub) / calls,
                "span": (max(stamps) - min(stamps)) / 1e6,
                "dump_us": dump_us,
            }
        )
    return out


def _median(runs: list[Any], get: Callable[[dict[str, Any]], Any]) -> tuple[float, str]:
    values = []
    for run in runs:
        try:
            v = get(run.data)
        except (KeyError, TypeError, ZeroDivisionError):
            continue
        if v is not None and v == v:
            values.append(float(v))
    if not values:
        return float("nan"), "not measured"
    shown = " / ".join(_num(v) for v in values)
    return statistics.median(values), shown


def _num(v: float) -> str:
    if v != v:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _per_request(key: str) -> Callable[[dict[str, Any]], float]:
    def get(data: dict[str, Any]) -> float:
        row = data["reads"][key]
        res = row["res"]
        return row["cpu"] * res.seconds / res.n * 1e6

    return get


def _per_node(what: str) -> Callable[[dict[str, Any]], float]:
    def get(data: dict[str, Any]) -> float:
        nodes = data["nodes"]
        idle = nodes["idle"]
        extra = nodes["n"] - 1
        if what == "rss":
            return (idle["many"]["rss"] - idle["one"]["rss"]) / extra
        return (idle["many"]["cpu"] - idle["one"]["cpu"]) / extra * 100

    return get


def _reconcile_us(data: dict[str, Any]) -> float:
    b = data["nodes"]["blip"]
    return b["cpu"] * b["wall"] / b["channels"] * 1e6


def section(runs: list[Any]) -> list[str]:
    """The capacity model's inputs and worked examples, as Markdown."""
    rows: list[tuple[str, str, float, str]] = []

    def add(what: str, unit: str, get: Callable[[dict[str, Any]], Any]) -> float:
        value, shown = _median(runs, get)
        rows.append((what, unit, value, shown))
        return value

    ev_capture = add(
        "daemon CPU per event, the capture's mix at full ingest speed",
        "µs",
        lambda d: d["ingest"]["cpu_us_per_event"],
    )
    ev_kazoo = add(
        "daemon CPU per event, Kazoo-style events carrying every variable (population)",
        "µs",
        lambda d: d["reads"]["populate_cpu_us_per_event"],
    )
    add(
        "per request: account list (100 channels), 1 client",
        "µs CPU",
        _per_request("account-1-idle"),
    )
    add("per request: single-channel GET, 1 client", "µs CPU", _per_request("single-1-idle"))
    add(
        "per request: system-wide list (all channels), 1 client",
        "µs CPU",
        _per_request("system-1-idle"),
    )
    per_channel = add(
        "resident memory per live Kazoo-style channel (ended-calls store full, settled)",
        "B",
        lambda d: d["memory"].get("per_channel_settled", d["memory"]["per_channel_with_store"]),
    )
    add(
        "resident memory per ended call kept (settled)",
        "B",
        lambda d: d["memory"]["per_ended_call"],
    )
    add("resident memory per connected node (idle, beside its channels)", "KiB", _per_node("rss"))
    add("CPU per connected node, idle", "% of a core", _per_node("cpu"))
    add("daemon CPU per channel reconciled after a blip (list + uuid_dump)", "µs", _reconcile_us)
    lines = [
        "### Capacity model: the measured inputs",
        "",
        "Medians over the runs (each run's value after it). Events are ESL events as the "
        "daemon subscribes to them; a call is two legs (channels).",
        "",
        "| input | unit | median | runs |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {w} | {u} | {_num(v)} | {shown} |" for w, u, v, shown in rows]
    caps = capture_rates()
    lines += [
        "",
        "What a call sends, from the real captures (`tests/fixtures/captures/json`; json "
        "frames as an `event json ALL` listener received them, and the part channelsd "
        "subscribes to):",
        "",
        "| capture | what | calls | events per call (all / subscribed) | KB per call "
        "(all / subscribed) | orjson.dumps per event |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for c in caps:
        lines.append(
            f"| `{c['name']}` | {c['what']} | {c['calls']:g} | {c['events']:.0f} / "
            f"{c['subscribed']:.0f} | {c['bytes'] / 1000:.0f} / {c['sub_bytes'] / 1000:.0f} | "
            f"{c['dump_us']:.1f} µs |"
        )
    lines += [
        "",
        "Worked examples (the figures above, one core's headroom of "
        f"{HEADROOM:.0%} and a {MEMORY_BUDGET >> 30} GiB memory budget):",
        "",
    ]
    for c in caps:
        for label, cost in (("capture mix", ev_capture), ("Kazoo-style", ev_kazoo)):
            if cost == cost and cost > 0:
                cps = HEADROOM / (c["subscribed"] * cost * 1e-6)
                lines.append(
                    f"- `{c['name']}` calls, {label} events ({cost:.1f} µs): "
                    f"{HEADROOM:.0%} of a core / ({c['subscribed']:.0f} events per call × "
                    f"{cost:.1f} µs) = **{cps:,.0f} calls/s** set up and torn down."
                )
    if per_channel == per_channel and per_channel > 0:
        lines.append(
            f"- Concurrent calls in {MEMORY_BUDGET >> 30} GiB: {MEMORY_BUDGET:,} B / (2 legs × "
            f"{per_channel:,.0f} B) = **{MEMORY_BUDGET / (2 * per_channel):,.0f} calls**."
        )
    s7 = caps[0]
    lines += [
        "- A second event-socket listener on FreeSWITCH (another channelsd, for availability) "
        "is *estimated*, not measured (no real switch here): mod_event_socket duplicates each "
        "event for every listener that subscribed to it, and the listener's thread serialises "
        f"and writes it. Per call that is {s7['subscribed']:.0f} events and "
        f"{s7['sub_bytes'] / 1000:.0f} KB of json (`s7_burst50`), i.e. "
        f"{s7['sub_bytes'] * 100 / 1e6:.1f} MB/s of socket writes at 100 calls/s; the "
        f"serialisation, by proxy, ~{s7['dump_us']:.0f} µs per event with orjson in this "
        "process (FreeSWITCH's cJSON is slower: a lower bound), i.e. "
        f"~{s7['subscribed'] * s7['dump_us'] * 100 / 1e4:.1f} % of a core at 100 calls/s.",
        "",
    ]
    return lines
