"""`channelsd ls --watch`: the live calls redrawn in place as the event stream changes them.

A reader thread follows the stream (`/v2/.../channel_events`) and hands its messages to the
main thread, which alone keeps the board and redraws it (rich's Live) when something changed
and once a second for the durations. A dropped stream is reopened with Last-Event-ID, so the
daemon replays what was missed (or sends a fresh snapshot when too much was).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from channelsd.channel import GREGORIAN_OFFSET
from channelsd.terminal import calls, safe, tables
from channelsd.terminal.client import EXIT_OK, EXIT_UNREACHABLE, ApiFailure, Client
from channelsd.terminal.sse import Message, messages

ENDED_SHOWN = 5
RETRY_FIRST = 0.5
RETRY_MAX = 10.0
REDRAW_EVERY = 0.2  # at most this often for bursts of changes
TICK = 1.0  # durations move once a second


class Board:
    """The channels as the stream has said they are, and the last few that ended; keyed by
    node and uuid (calls.key), as the stream's messages name them."""

    def __init__(self) -> None:
        self.items: dict[calls.Key, dict[str, Any]] = {}
        self.ended: deque[dict[str, Any]] = deque(maxlen=ENDED_SHOWN)
        self.clock = calls.Clock()

    def apply(self, kind: str, data: Any) -> bool:
        """One stream message; whether the board changed."""
        if kind == "snapshot" and isinstance(data, list):
            self.items = {
                k: i for i in data if isinstance(i, dict) and (k := calls.key(i)) is not None
            }
            self.clock.learn(self.items.values())
            return True
        k = calls.key(data) if isinstance(data, dict) else None
        if k is None:
            return False
        if kind == "create":
            self.items[k] = data
            self.clock.learn([data])
            return True
        if kind == "update":
            old = self.items.get(k)
            changed = data.get("changed")
            if old is None or not isinstance(changed, dict):
                return False
            item = {**old, **changed}
            for name in data.get("removed") or ():
                if isinstance(name, str):
                    item.pop(name, None)
            self.items[k] = item
            return True
        if kind == "destroy":
            old = self.items.pop(k, None)
            # A destroy that says how the call ended is a hang-up (not a move out of scope).
            if "hangup_cause" in data or "duration_seconds" in data:
                ended = {**(old or {}), **data}
                ended.setdefault("ended_timestamp", self.now() + GREGORIAN_OFFSET)
                self.ended.appendleft(ended)
            return old is not None
        return False

    def now(self) -> float:
        return time.time() + (self.clock.skew or 0.0)

    def remember_ended(self, items: Sequence[dict[str, Any]]) -> None:
        """The calls that ended before the watch began (newest first, as the API lists)."""
        for item in reversed(items[:ENDED_SHOWN]):
            self.ended.appendleft(item)


class Reader(threading.Thread):
    """Follows the stream; puts ("message", Message), ("down", ApiFailure) or
    ("fatal", ApiFailure) on the queue, reconnecting with Last-Event-ID after a drop."""

    def __init__(self, client: Client, path: str, params: Sequence[tuple[str, str]]) -> None:
        super().__init__(daemon=True, name="channelsd-ls-stream")
        self.client = client
        self.path = path
        self.params = list(params)
        self.out: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.last_id: str | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        delay = RETRY_FIRST
        connected = False
        while not self.stopped.is_set():
            try:
                for msg in messages(self.client.stream(self.path, self.params, self.last_id)):
                    connected = True
                    delay = RETRY_FIRST
                    if msg.id is not None:
                        self.last_id = msg.id
                    self.out.put(("message", msg))
                failure = ApiFailure("the daemon closed the stream", EXIT_UNREACHABLE)
            except ApiFailure as exc:
                failure = exc
            # Before the first message, any failure ends the watch: a wrong URL or token is
            # better said at once. After it, only a refused token does; the rest is retried.
            if not connected or failure.status in (401, 403):
                self.out.put(("fatal", failure))
                return
            self.out.put(("down", failure))
            self.stopped.wait(delay)
            delay = min(RETRY_MAX, delay * 2)


def _decode(msg: Message) -> Any:
    try:
        return json.loads(msg.data)
    except ValueError:
        return None


def watch(
    client: Client,
    list_path: str,
    events_path: str,
    params: Sequence[tuple[str, str]],
    wide: bool,
) -> int:
    """Follow the calls until Ctrl-C; the exit status."""
    console = safe.console()
    board = Board()
    try:
        board.remember_ended(client.items(list_path, [*params, ("ended", "true")]))
    except ApiFailure as exc:
        if exc.status != 503:  # 503: this daemon keeps no ended calls; the rest is fatal
            raise
    reader = Reader(client, events_path, params)
    reader.start()
    status = "connecting…"
    try:
        with Live(console=console, screen=True, auto_refresh=False) as live:
            drawn_at = 0.0
            dirty = True
            while True:
                timeout = REDRAW_EVERY if dirty else TICK
                try:
                    kind, value = reader.out.get(timeout=timeout)
                except queue.Empty:
                    kind, value = "tick", None
                if kind == "fatal":
                    raise value
                if kind == "down":
                    status = f"reconnecting: {value}"
                    dirty = True
                elif kind == "message":
                    status = "live"
                    dirty = board.apply(value.event, _decode(value)) or dirty
                now = time.monotonic()
                if (dirty and now - drawn_at >= REDRAW_EVERY) or now - drawn_at >= TICK:
                    live.update(frame(board, client, status, console, wide), refresh=True)
                    drawn_at, dirty = now, False
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        reader.stopped.set()


def frame(board: Board, client: Client, status: str, console: Console, wide: bool) -> Group:
    groups = calls.group(board.items.values())
    head = Text()
    head.append("channelsd ls --watch", style="bold")
    head.append_text(safe.cell(f"  {client.base}  {tables.summary(groups)}  "))
    # The status may quote the daemon's error message.
    head.append_text(safe.cell(status, style="green" if status == "live" else "yellow"))
    head.append("  (Ctrl-C stops)", style="dim")
    parts: list[Any] = [head]
    if groups:
        parts.append(tables.live_table(groups, console, board.clock.seconds, wide))
    else:
        parts.append(Text("No live calls.", style="dim"))
    if board.ended:
        parts.append(tables.ended_table(list(board.ended), console, wide, title="Recently ended"))
    return Group(*parts)
