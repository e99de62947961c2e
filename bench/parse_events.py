"""Event parsing and table ingest, side by side, on the real 50-call burst capture.

Run by hand:  .venv/bin/python bench/parse_events.py
Prints a Markdown table for BENCHMARKS.md. Every figure is measured in the same run.

A second table weighs other ways of reading what the table needs from an event without
parsing all of it (issue #16's ingest target): a byte search for a state event's few headers,
and two compiled libraries that are not channelsd dependencies, measured only where they are
installed (`.venv/bin/pip install msgspec pysimdjson`): msgspec decoding into a struct of the
headers the table reads (unknown keys skipped), and simdjson's lazy parse with lookups.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from channelsd.channel import DETAIL_CHAINS  # noqa: E402
from channelsd.eventpick import parser_for, picker_for  # noqa: E402
from channelsd.events import parse_plain  # noqa: E402
from channelsd.standin.replay import load_frames  # noqa: E402
from channelsd.table import _FIXED_CHAINS, _STATE_EVENTS, ChannelTable, Identity  # noqa: E402

CAPTURES = ROOT / "tests" / "fixtures" / "captures"


def bodies(fmt: str) -> list[bytes]:
    frames = load_frames(CAPTURES / fmt / "s7_burst50.events.raw.gz")
    return [f.raw.split(b"\n\n", 1)[1] for f in frames if f.event_name]


def greenswitch_style(body: bytes) -> dict[str, str]:
    """greenswitch 0.0.19's parse_data algorithm (decode first, then split), for comparison."""
    headers: dict[str, str] = {}
    last = None
    value = ""
    for line in unquote(body.decode()).strip().splitlines():
        if ": " in line:
            key, value = line.split(": ", 1)
            last = key
        else:
            key = last
            value += "\n" + line
        headers[key.strip()] = value.strip()
    return headers


def rate(fn, items, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


def main() -> None:
    js, plain = bodies("json"), bodies("plain")
    rows = [
        ("json.loads (stdlib), json events", rate(json.loads, js)),
        ("orjson.loads, json events", rate(orjson.loads, js)),
        ("channelsd parse_plain (split, then decode), plain events", rate(parse_plain, plain)),
        ("greenswitch parse_data algorithm, plain events", rate(greenswitch_style, plain)),
    ]
    events = [orjson.loads(b) for b in js]

    def ingest(_: object) -> None:
        table = ChannelTable()
        for e, b in zip(events, js, strict=True):
            table.apply("fs1", e, b)  # with the body, as the daemon does

    per_run = rate(ingest, [None], repeat=5)
    rows.append(("ChannelTable.apply, parsed json events", per_run * len(events)))
    picker = picker_for(ChannelTable())
    if picker is None:
        rows.append(("channelsd_picker: not built", 0.0))
    else:
        rows.append(("channelsd_picker: the table's headers, json events", rate(picker.pick, js)))
        parse = parser_for(ChannelTable())
        picked = [parse(b) for b in js]

        def ingest_picked(_: object) -> None:
            table = ChannelTable()
            for e, b in zip(picked, js, strict=True):
                table.apply("fs1", e, b)

        per_run = rate(ingest_picked, [None], repeat=5)
        rows.append(("ChannelTable.apply, picked json events", per_run * len(events)))
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(f"machine: {machine}, Python {platform.python_version()}")
    print(f"input: s7_burst50 capture, {len(js)} json / {len(plain)} plain events")
    print()
    print("| what | events/s | vs stdlib json |")
    print("|---|---:|---:|")
    base = rows[0][1]
    for name, r in rows:
        print(f"| {name} | {r:,.0f} | {r / base:.2f}x |" if r else f"| {name} | | |")
    print()
    print("| reading less (issue #16) | events/s | µs an event |")
    print("|---|---:|---:|")
    for name, r in partial_reads(js):
        print(f"| {name} | {r:,.0f} | {1e6 / r:.2f} |" if r else f"| {name} | | |")


# What a CHANNEL_STATE / CHANNEL_CALLSTATE of a known channel is read for.
STATE_HEADERS = (
    "Event-Name",
    "Unique-ID",
    "Channel-State",
    "Channel-Call-State",
    "Caller-Destination-Number",
    "Answer-State",
)


def table_headers() -> list[str]:
    """The headers the table's chains read (its fixed, identity and detail chains)."""
    chains = _FIXED_CHAINS + Identity().chains + DETAIL_CHAINS
    found = dict.fromkeys(STATE_HEADERS)
    for _, chain in chains:
        found.update(dict.fromkeys(chain))
    return list(found)


def byte_search(keys: tuple[str, ...]):
    needles = [b'"%s":"' % k.encode() for k in keys]

    def read(body: bytes) -> list[bytes | None]:
        out = []
        for n in needles:
            i = body.find(n)
            if i < 0:
                out.append(None)
                continue
            i += len(n)
            out.append(body[i : body.find(b'"', i)])
        return out

    return read


def partial_reads(js: list[bytes]) -> list[tuple[str, float | None]]:
    states = [b for b in js if orjson.loads(b)["Event-Name"] in _STATE_EVENTS]
    heads = table_headers()
    rows: list[tuple[str, float | None]] = [
        ("orjson.loads, state events", rate(orjson.loads, states)),
        (
            f"{len(STATE_HEADERS)} byte searches (`bytes.find`), state events",
            rate(byte_search(STATE_HEADERS), states),
        ),
    ]
    try:
        import msgspec
    except ImportError:
        rows.append(("msgspec: not installed", None))
    else:
        fields = [(f"f{i}", str | None, None) for i in range(len(heads))]
        struct = msgspec.defstruct(
            "Headers", fields, rename={f"f{i}": h for i, h in enumerate(heads)}
        )
        decode = msgspec.json.Decoder(struct).decode
        rows.append(
            (f"msgspec: decode into a struct of {len(heads)} headers, json", rate(decode, js))
        )
    try:
        import simdjson
    except ImportError:
        rows.append(("simdjson: not installed", None))
    else:
        parser = simdjson.Parser()

        def lookups(keys: list[str] | tuple[str, ...]):
            def read(body: bytes) -> None:
                get = parser.parse(body).get
                for k in keys:
                    get(k)

            return read

        rows.append(("simdjson: lazy parse only, json", rate(lookups(()), js)))
        rows.append(
            (
                f"simdjson: lazy parse and {len(STATE_HEADERS)} lookups, state events",
                rate(lookups(STATE_HEADERS), states),
            )
        )
        rows.append(
            (
                f"simdjson: lazy parse and the table's {len(heads)} lookups, json",
                rate(lookups(heads), js),
            )
        )
    return rows


if __name__ == "__main__":
    main()
