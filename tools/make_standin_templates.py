#!/usr/bin/env python3
"""Extract header-order templates for the stand-in switch from real FreeSWITCH captures.

Usage: python tools/make_standin_templates.py CAPTURE_DIR [OUTPUT]

CAPTURE_DIR is the folder holding ``json/*.events.raw`` and ``json/outputs/`` (the recordings
described in its README.txt).  OUTPUT defaults to ``channelsd/standin/templates.json.gz``.

The stand-in builds every event from a live channel model, but the *shape* of each event --
which headers exist, in which order, with which Event-Calling-* values -- is taken from what a
real FreeSWITCH 1.11 put on the wire.  FreeSWITCH serialises a channel event as

    core headers | event-specific "pre" headers | basic channel data | Caller-* profile |
    Other-Type + Other-Leg-* profile | variable_* | event-specific "post" headers

so the script records, per event type, the pre/post header names and the calling location,
plus global orders for the basic, caller and other-leg blocks (union over all captures, since
FreeSWITCH omits empty fields).  JSON is parsed with duplicate keys preserved: FreeSWITCH emits
a repeated Hangup-Cause on CHANNEL_HANGUP_COMPLETE and repeated codec headers on CODEC.

Run by hand whenever the captures change; the output is committed.
"""

from __future__ import annotations

import collections
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from channelsd.standin.protocol import parse_frames  # noqa: E402

CORE = [
    "Event-Name",
    "Core-UUID",
    "FreeSWITCH-Hostname",
    "FreeSWITCH-Switchname",
    "FreeSWITCH-IPv4",
    "FreeSWITCH-IPv6",
    "Event-Date-Local",
    "Event-Date-GMT",
    "Event-Date-Timestamp",
    "Event-Calling-File",
    "Event-Calling-Function",
    "Event-Calling-Line-Number",
    "Event-Sequence",
]

# Event types a channel goes through, plus the non-channel events the stand-in emits.
TARGETS = [
    "CHANNEL_CREATE",
    "CHANNEL_ORIGINATE",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "CHANNEL_UUID",
    "CHANNEL_OUTGOING",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CALL_UPDATE",
    "CODEC",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "PRESENCE_IN",
    "API",
    "HEARTBEAT",
    "RE_SCHEDULE",
    "BACKGROUND_JOB",
]

# Not present in any capture (the capture runs used loopback legs only, which never report hold).
# FreeSWITCH fires them with switch_channel_event_set_data, exactly like CHANNEL_PARK: basic data,
# caller profile, variables, no extra headers.  So they are derived from the PARK shape, and the
# calling location names the hold code path without a line number we could not observe.
HOLD_LOCATION = ["switch_channel.c", "switch_channel_perform_mark_hold", "0"]
# uuid_record's RECORD_START/RECORD_STOP are not captured either; like PLAYBACK_START/STOP they
# carry the channel data, variables and trailing Record-* headers.
RECORD_LOCATION = ["switch_ivr_async.c", "record_callback", "0"]
DERIVED = {
    "CHANNEL_HOLD": ("CHANNEL_PARK", HOLD_LOCATION),
    "CHANNEL_UNHOLD": ("CHANNEL_PARK", HOLD_LOCATION),
    "RECORD_START": ("PLAYBACK_START", RECORD_LOCATION),
    "RECORD_STOP": ("PLAYBACK_STOP", RECORD_LOCATION),
}
CALLING = ("Event-Calling-File", "Event-Calling-Function", "Event-Calling-Line-Number")


def json_events(path: Path) -> list[list[tuple[str, object]]]:
    """Events of one capture as ordered (name, value) pairs, duplicate keys kept."""
    out = []
    for headers, body, _raw in parse_frames(path.read_bytes()):
        if headers.get("Content-Type") != "text/event-json":
            continue
        out.append(json.loads(body, object_pairs_hook=list))
    return out


def section(name: str) -> str:
    if name in CORE:
        return "core"
    if name.startswith("variable_"):
        return "vars"
    if name.startswith("Caller-"):
        return "caller"
    if name == "Other-Type" or name.startswith("Other-Leg-"):
        return "other"
    return "basic" if name in BASIC_SET else "extra"


BASIC_SET = {
    "Channel-State",
    "Channel-Call-State",
    "Channel-State-Number",
    "Channel-Name",
    "Unique-ID",
    "Call-Direction",
    "Presence-Call-Direction",
    "Channel-HIT-Dialplan",
    "Channel-Presence-ID",
    "Channel-Presence-Data",
    "Channel-Call-UUID",
    "Answer-State",
    "Hangup-Cause",
    "Channel-Read-Codec-Name",
    "Channel-Read-Codec-Rate",
    "Channel-Read-Codec-Bit-Rate",
    "Channel-Write-Codec-Name",
    "Channel-Write-Codec-Rate",
    "Channel-Write-Codec-Bit-Rate",
}


def merge_order(order: list[str], names: list[str]) -> None:
    """Insert unseen names into ``order`` right after their predecessor in ``names``."""
    for i, name in enumerate(names):
        if name in order:
            continue
        prev = names[i - 1] if i else None
        order.insert(order.index(prev) + 1 if prev in order else len(order), name)


def split_event(pairs: list[tuple[str, object]]) -> dict:
    """Cut one channel event into its pre / post header names around the channel blocks.

    The channel blocks always come in the order basic, caller, other-leg, variables; the first
    header that breaks that order (or repeats a name already seen, as CODEC does) starts "post".
    """
    names = [k for k, _ in pairs]
    first_chan = next((i for i, k in enumerate(names) if k == "Channel-State"), None)
    core_end = names.index("Event-Sequence") + 1
    if first_chan is None:
        return {"pre": names[core_end:], "post": [], "channel": False}
    rank = {"basic": 0, "caller": 1, "other": 2, "vars": 3}
    seen: set[str] = set()
    current = 0
    post_start = len(names)
    for i in range(first_chan, len(names)):
        k = names[i]
        r = rank.get(section(k))
        if r is None or r < current or k in seen:
            post_start = i
            break
        current = r
        seen.add(k)
    return {
        "pre": names[core_end:first_chan],
        "post": names[post_start:],
        "channel": True,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cap = Path(argv[1])
    out = (
        Path(argv[2])
        if len(argv) > 2
        else Path(__file__).resolve().parents[1] / ("channelsd/standin/templates.json.gz")
    )
    jdir = cap / "json"
    scenarios = sorted(p.name[: -len(".events.raw")] for p in jdir.glob("*.events.raw"))

    basic_order: list[str] = []
    caller_order: list[str] = []
    other_order: list[str] = []
    per_event: dict[str, dict] = {}
    calling: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    values: dict[str, dict[str, set]] = collections.defaultdict(
        lambda: collections.defaultdict(set)
    )
    cdr_order: list[str] = []
    variant_posts: dict[str, dict[str, list[str]]] = collections.defaultdict(dict)

    for sid in scenarios:
        events = json_events(jdir / f"{sid}.events.raw")
        last_hangup_vars: dict[str, list[str]] = {}
        for idx, pairs in enumerate(events):
            d = dict(pairs)
            name = d["Event-Name"]
            names = [k for k, _ in pairs]
            merge_order(basic_order, [k for k in names if section(k) == "basic"])
            merge_order(caller_order, [k for k in names if section(k) == "caller"])
            merge_order(other_order, [k for k in names if section(k) == "other"])
            calling[name][tuple(d[k] for k in CALLING)] += 1
            shape = split_event(pairs)
            for k, v in pairs:
                if k not in CORE and section(k) == "extra":
                    values[name][k].add(json.dumps(v))
            entry = per_event.get(name)
            has_vars = any(k.startswith("variable_") for k in names)
            if entry is None:
                per_event[name] = entry = {
                    "pre": list(shape["pre"]),
                    "post": list(shape["post"]),
                    "channel": shape["channel"],
                    "variables": has_vars,
                    "example": names,
                    "example_source": f"json/{sid}.events.raw event #{idx}",
                    "post_variants": [list(shape["post"])],
                }
            else:
                entry["variables"] = entry["variables"] or has_vars
                if shape["post"] not in entry["post_variants"]:
                    entry["post_variants"].append(shape["post"])
                # optional post headers are omitted when empty: keep the union, in order
                merge_order(entry["post"], shape["post"])
            variant_posts[name].setdefault(d["Event-Calling-Function"], list(shape["post"]))
            uid = d.get("Unique-ID")
            # CDR variables are the ones HANGUP_COMPLETE adds over the previous event carrying
            # variables; comparing with CHANNEL_HANGUP would also pick up playback_* and
            # application variables set by apps that finished in between.
            if name == "CHANNEL_HANGUP_COMPLETE" and uid in last_hangup_vars:
                before = set(last_hangup_vars[uid])
                merge_order(
                    cdr_order,
                    [k[9:] for k in names if k.startswith("variable_") and k not in before],
                )
            if uid and has_vars:
                last_hangup_vars[uid] = [k for k in names if k.startswith("variable_")]

    templates: dict = {
        "source": "FreeSWITCH 1.11.3-dev captures (json runs), extracted by "
        "tools/make_standin_templates.py",
        "core": CORE,
        "basic": basic_order,
        "caller": caller_order,
        "other_leg": other_order,
        "cdr_variables": cdr_order,
        "events": {},
    }
    for name in TARGETS:
        entry = per_event.get(name)
        if entry is None:
            print(f"warning: {name} not found in captures", file=sys.stderr)
            continue
        (loc, _count), *rest = calling[name].most_common()
        constants = {
            k: json.loads(next(iter(vals))) for k, vals in values[name].items() if len(vals) == 1
        }
        templates["events"][name] = {
            "calling": list(loc),
            "calling_variants": [list(x) for x, _ in rest],
            "pre": entry["pre"],
            "post": entry["post"],
            "post_by_function": variant_posts[name],
            "channel": entry["channel"],
            "variables": entry["variables"],
            "constants": constants,
            "example": entry["example"],
            "example_source": entry["example_source"],
        }
    for name, (base, loc) in DERIVED.items():
        if name in per_event:
            continue  # a future capture has the real thing; TARGETS should then list it
        src = dict(templates["events"][base])
        post = {"RECORD_START": ["Record-File-Path"]}.get(
            name, ["Record-File-Path", "Record-Completion-Cause"] if name == "RECORD_STOP" else []
        )
        src.update(
            calling=loc,
            calling_variants=[],
            post=post if name.startswith("RECORD") else src["post"],
            post_by_function={},
            constants={},
            example=[],
            example_source="",
            derived_from=base,
        )
        templates["events"][name] = src

    # uuid_dump <uuid> json answers a CHANNEL_DATA event; keep its header order and location.
    dump = json.loads(
        (jdir / "outputs/json_s5_uuid_dump_aleg.json").read_text(), object_pairs_hook=list
    )
    dd = dict(dump)
    shape = split_event(dump)
    templates["events"]["CHANNEL_DATA"] = {
        "calling": [dd[k] for k in CALLING],
        "calling_variants": [],
        "pre": shape["pre"],
        "post": shape["post"],
        "channel": True,
        "variables": True,
        "constants": {},
        "example": [k for k, _ in dump],
        "example_source": "json/outputs/json_s5_uuid_dump_aleg.json",
    }

    # Column orders of the SQL-backed listings.
    chans = json.loads((jdir / "outputs/json_s5_show_channels.json").read_text())
    calls = json.loads((jdir / "outputs/json_s5_show_calls.json").read_text())
    templates["show_channels_columns"] = list(chans["rows"][0])
    templates["show_calls_columns"] = list(calls["rows"][0])
    detailed = json.loads((jdir / "outputs/json_s5_show_detailed_calls.json").read_text())
    templates["show_detailed_calls_columns"] = list(detailed["rows"][0])

    out.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(templates, indent=1, sort_keys=False).encode()
    # mtime=0 keeps the committed file byte-stable across regenerations
    with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(raw)
    print(f"wrote {out} ({len(templates['events'])} event templates)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
