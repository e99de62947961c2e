"""Server-Sent Events, read line by line (the WHATWG event-stream format).

The daemon's frames are simple (`id:`, `event:`, `data:`, comment keepalives), but a stream
is read as the format says so that a proxy's re-chunking or a multi-line `data` cannot
confuse it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None  # the id to resume from: the last one the stream set, if any


def messages(lines: Iterable[str]) -> Iterator[Message]:
    """The messages of a stream, from its lines (line endings already removed or not)."""
    event = ""
    data: list[str] = []
    last_id: str | None = None
    for raw in lines:
        line = raw.rstrip("\r\n") if raw.endswith(("\r", "\n")) else raw
        if not line:
            if data:
                yield Message(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment: the daemon's keepalive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
    # A message without its blank line was cut off: it is not dispatched (the format's rule).
