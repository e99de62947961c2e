"""Replay of recorded ESL captures, frame by frame and byte for byte.

``load_frames`` cuts a ``*.events.raw`` (or ``.raw.gz``) recording into its event frames;
``StandinSwitch.send_frames`` then writes each frame's exact bytes to subscribed clients.  The
recorded format is kept: a plain capture is replayed as text/event-plain even to a client that
asked for json, which is the point -- replay tests the client against real bytes.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import orjson

from .protocol import parse_frames

EVENT_TYPES = ("text/event-json", "text/event-plain")


@dataclass(frozen=True, slots=True)
class Frame:
    ctype: str
    event_name: str | None
    unique_id: str | None
    raw: bytes


def _plain_header(body: bytes, name: bytes) -> str | None:
    """Value of one header in a text/event-plain body (values are URL-encoded)."""
    from urllib.parse import unquote

    head = body.split(b"\n\n", 1)[0]
    prefix = name + b": "
    for line in head.split(b"\n"):
        if line.startswith(prefix):
            return unquote(line[len(prefix) :].decode("utf-8", "replace"))
    return None


def read_capture(path: str | Path) -> bytes:
    p = Path(path)
    data = p.read_bytes()
    if p.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def load_frames(path: str | Path) -> list[Frame]:
    """Event frames of a recorded events.raw (gzip accepted), in recorded order."""
    frames: list[Frame] = []
    for headers, body, raw in parse_frames(read_capture(path)):
        ctype = headers.get("Content-Type", "")
        if ctype not in EVENT_TYPES:
            continue
        if ctype == "text/event-json":
            obj = orjson.loads(body)
            name, uid = obj.get("Event-Name"), obj.get("Unique-ID")
        else:
            name, uid = _plain_header(body, b"Event-Name"), _plain_header(body, b"Unique-ID")
        frames.append(Frame(ctype, name, uid, raw))
    return frames
