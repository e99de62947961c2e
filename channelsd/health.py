"""Is the process healthy, is it ready, and what should systemd be told.

Everything runs on one gevent hub, so "alive" means "the hub still turns": a ticker greenlet
measures how late it wakes up. A blocked hub stops the ticker, which stops the systemd
watchdog pings, which gets the service restarted.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent

log = logging.getLogger("channelsd.health")

TICK = 0.25
# The hub is called stuck when a 0.25 s sleep came back this late.
MAX_LAG = 2.0


class LoopMonitor:
    """Measures hub lag; calls `on_tick` each time the hub proves it turns."""

    def __init__(self, on_tick: Callable[[], None] | None = None) -> None:
        self.lag = 0.0
        self.last_tick = time.monotonic()
        self.on_tick = on_tick
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.link_exception(lambda g: log.error("loop monitor died: %r", g.exception))

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        while True:
            before = time.monotonic()
            gevent.sleep(TICK)
            now = time.monotonic()
            self.lag = max(0.0, now - before - TICK)
            self.last_tick = now
            if self.on_tick is not None:
                self.on_tick()

    @property
    def healthy(self) -> bool:
        return time.monotonic() - self.last_tick < TICK + MAX_LAG and self.lag < MAX_LAG


def readiness(nodes: Mapping[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """Ready when every node is connected and reconciled; per-node detail, nothing secret."""
    detail = [
        {"node": name, "state": n.state, "connected": n.connected, "synced": n.synced}
        for name, n in nodes.items()
    ]
    return all(d["connected"] and d["synced"] for d in detail), detail


class SystemdNotifier:
    """sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET, a no-op without it."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 1_000_000 if usec.isdigit() and mine else None
        self._sock: socket.socket | None = None
        self._last_watchdog = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # systemd gone or not listening: never fatal
            log.warning("sd_notify failed: %s", exc)

    def watchdog(self) -> None:
        """Ping at half the watchdog interval; call it only from a turning hub."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog >= self.watchdog_interval / 2:
            self._last_watchdog = now
            self.send("WATCHDOG=1")
