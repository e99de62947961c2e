"""``show channels|calls ...`` and ``uuid_dump`` bodies, byte-compatible with the captures.

FreeSWITCH serves ``show`` from its core SQL database: every value is a string, rows are ordered
by created_epoch, the JSON is unformatted cJSON, and an empty result is the odd literal
``{"row_count": 0}`` plus a newline with no ``rows`` key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson

from . import templates
from .channels import Channel
from .events import EventBuilder

_TPL = templates.load()
CHANNEL_COLUMNS: tuple[str, ...] = tuple(_TPL["show_channels_columns"])
CALL_COLUMNS: tuple[str, ...] = tuple(_TPL["show_calls_columns"])
DETAILED_COLUMNS: tuple[str, ...] = tuple(_TPL["show_detailed_calls_columns"])
EMPTY_JSON = b'{"row_count": 0}\n'


def channel_row(ch: Channel, hostname: str) -> dict[str, str]:
    """One row of the core ``channels`` table, filled the way the SQL handler fills it."""
    p = ch.profile
    init = ch.initial
    created = ch.created_us // 1_000_000
    row = {
        "uuid": ch.uuid,
        "direction": ch.direction,
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)),
        "created_epoch": str(created),
        "name": ch.name,
        "state": ch.state,
        "cid_name": p.get("Caller-ID-Name", ""),
        "cid_num": p.get("Caller-ID-Number", ""),
        "ip_addr": p.get("Network-Addr", ""),
        "dest": p.get("Destination-Number", ""),
        "application": ch.sql_app,
        "application_data": ch.sql_app_data,
        "dialplan": p.get("Dialplan", ""),
        "context": p.get("Context", ""),
        "read_codec": ch.codec_name,
        "read_rate": str(ch.codec_rate),
        "read_bit_rate": str(ch.codec_bit_rate),
        "write_codec": ch.codec_name,
        "write_rate": str(ch.codec_rate),
        "write_bit_rate": str(ch.codec_bit_rate),
        "secure": "",
        "hostname": hostname,
        "presence_id": str(ch.variables.get("presence_id", "")),
        "presence_data": "",
        "accountcode": str(ch.variables.get("accountcode", "")),
        "callstate": ch.call_state,
        "callee_name": p.get("Callee-ID-Name", ""),
        "callee_num": p.get("Callee-ID-Number", ""),
        "callee_direction": ch.callee_direction,
        "call_uuid": ch.sql_call_uuid,
        "sent_callee_name": "",
        "sent_callee_num": "",
        "initial_cid_name": init.get("cid_name", ""),
        "initial_cid_num": init.get("cid_num", ""),
        "initial_ip_addr": init.get("ip_addr", ""),
        "initial_dest": init.get("dest", ""),
        "initial_dialplan": init.get("dialplan", ""),
        "initial_context": init.get("context", ""),
    }
    return {k: row[k] for k in CHANNEL_COLUMNS}


def _sorted(channels: Iterable[Channel]) -> list[Channel]:
    # SQL "order by created_epoch"; equal epochs keep insertion order (rowid)
    return sorted(channels, key=lambda ch: ch.created_us // 1_000_000)


def _json(rows: list[dict[str, str]]) -> bytes:
    if not rows:
        return EMPTY_JSON
    return orjson.dumps({"row_count": len(rows), "rows": rows})


def _csv(columns: Iterable[str], rows: list[dict[str, str]]) -> bytes:
    if not rows:
        return b"\n0 total.\n"
    lines = [",".join(columns)]
    lines.extend(",".join(r.values()) for r in rows)
    return ("\n".join(lines) + f"\n\n{len(rows)} total.\n").encode()


def count(n: int) -> bytes:
    return f"\n{n} total.\n".encode()


def show_channels(channels: Iterable[Channel], hostname: str, fmt: str) -> bytes:
    rows = [channel_row(ch, hostname) for ch in _sorted(channels)]
    return _render(CHANNEL_COLUMNS, rows, fmt)


def _call_pairs(channels: list[Channel]) -> list[tuple[Channel, Channel | None]]:
    """The basic_calls view: a channel heads a call unless it belongs to another leg's call;
    its b-legs are the channels whose call_uuid names it."""
    by_call: dict[str, list[Channel]] = {}
    for ch in channels:
        if ch.sql_call_uuid and ch.sql_call_uuid != ch.uuid:
            by_call.setdefault(ch.sql_call_uuid, []).append(ch)
    heads = [ch for ch in channels if not ch.sql_call_uuid or ch.sql_call_uuid == ch.uuid]
    # a transferor consulting its target heads two calls (reference §2.2: show bridged_calls
    # lists it with the transferee and with the target)
    pairs: list[tuple[Channel, Channel | None]] = [
        (ch, b) for ch in heads for b in (by_call.get(ch.uuid) or [None])
    ]
    # "order by call_created_epoch": calls without a bridge (empty string) sort first
    pairs.sort(key=lambda p: (p[0].bridge_created_epoch if p[1] else "", p[0].created_us))
    return pairs


def _call_row(a: Channel, b: Channel | None, hostname: str, columns: tuple[str, ...]):
    ra = channel_row(a, hostname)
    rb = channel_row(b, hostname) if b is not None else dict.fromkeys(CHANNEL_COLUMNS, "")
    merged = dict(ra)
    merged.update({f"b_{k}": v for k, v in rb.items()})
    merged["call_created_epoch"] = a.bridge_created_epoch if b is not None else ""
    return {k: merged.get(k, "") for k in columns}


def show_calls(
    channels: Iterable[Channel], hostname: str, fmt: str, detailed: bool, bridged: bool
) -> bytes:
    live = _sorted(channels)
    pairs = _call_pairs(live)
    if bridged:
        pairs = [p for p in pairs if p[1] is not None]
    columns = DETAILED_COLUMNS if detailed else CALL_COLUMNS
    rows = [_call_row(a, b, hostname, columns) for a, b in pairs]
    return _render(columns, rows, fmt)


def _render(columns: tuple[str, ...], rows: list[dict[str, str]], fmt: str) -> bytes:
    """A ``show`` body: ``count``, ``json`` or the default CSV-like text."""
    if fmt == "count":
        return count(len(rows))
    if fmt == "json":
        return _json(rows)
    return _csv(columns, rows)


def uuid_dump_json(builder: EventBuilder, ch: Channel) -> bytes:
    """``uuid_dump <uuid> json``: the CHANNEL_DATA event as one unformatted JSON object."""
    return builder.channel(ch, "CHANNEL_DATA").json_body()


def uuid_dump_text(builder: EventBuilder, ch: Channel) -> bytes:
    """``uuid_dump <uuid>`` (txt): URL-encoded ``Name: value`` lines, like event-plain."""
    return builder.channel(ch, "CHANNEL_DATA").plain_body()
