"""Event parsing and table ingest, side by side, on the real 50-call burst capture.

Run by hand:  .venv/bin/python bench/parse_events.py
Prints a Markdown table for BENCHMARKS.md. Every figure is measured in the same run.
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

from channelsd.events import parse_plain  # noqa: E402
from channelsd.standin.replay import load_frames  # noqa: E402
from channelsd.table import ChannelTable  # noqa: E402

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
        for e in events:
            table.apply("fs1", e)

    per_run = rate(ingest, [None], repeat=5)
    rows.append(("ChannelTable.apply, parsed json events", per_run * len(events)))
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    print(f"machine: {machine}, Python {platform.python_version()}")
    print(f"input: s7_burst50 capture, {len(js)} json / {len(plain)} plain events")
    print()
    print("| what | events/s | vs stdlib json |")
    print("|---|---:|---:|")
    base = rows[0][1]
    for name, r in rows:
        print(f"| {name} | {r:,.0f} | {r / base:.2f}x |")


if __name__ == "__main__":
    main()
