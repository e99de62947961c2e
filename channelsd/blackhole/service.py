"""The websocket endpoint: the HTTP upgrade, the sockets' limit, and what they share.

Served on the API's own port at websocket.path (default /websocket) and, with websocket.port,
on a port of its own at any path, as Kazoo's blackhole serves `ws://host:5555`. The handshake
carries no token (monster-ui sends it inside each subscribe), and a browser sends its portal's
Origin, so neither is checked here: nothing is granted to a socket until a subscribe presents
a token, and no cookie or other ambient credential is ever read. The framing and the
handshake's checks are wsproto's.

Since a socket costs nothing to open, the places are guarded (README, "Kazoo's websocket"):

* one client address holds at most websocket.max_sockets_per_client (429 beyond): the
  address http.trusted_proxies resolves, so behind a proxy each client counts, not the proxy;
* one token subscribes on at most websocket.max_sockets_per_token sockets (channelsd.blackhole.
  session refuses the subscribe);
* a socket that holds no subscription is closed after websocket.subscribe_grace, and while
  the server is full a new socket takes the place of the one that has gone longest without a
  subscription: idle sockets, a token-less attacker's included, never lock out a client
  that subscribes. Only when every socket is subscribed is a new one refused (503).

One greenlet keeps time for every socket (keep_time): pings, token expiry, the grace, Kazoo's
grants asked again. It runs while any socket is open, about once a second.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import gevent
import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.utilities import ProtocolError

from channelsd import envelope
from channelsd.blackhole.events import EVENTS
from channelsd.blackhole.hub import Hub
from channelsd.blackhole.session import GOING_AWAY, Session
from channelsd.envelope import ApiError
from channelsd.subscriptions import Subscriptions

if TYPE_CHECKING:
    from channelsd.config import WebsocketConfig
    from channelsd.metrics import Metrics
    from channelsd.peers import Peers
    from channelsd.tokens import Authenticator

log = logging.getLogger("channelsd.websocket")


def available_bindings() -> dict[str, list[str]]:
    """`GET /v2/websockets`, as Kazoo lists them (blackhole's bindings.call)."""
    return {"call": [f"call.{event}.{{CALL_ID}}" for event in EVENTS]}


class Websockets:
    """Every open websocket, and how a new one is admitted."""

    def __init__(
        self,
        cfg: WebsocketConfig,
        hub: Hub,
        auth: Callable[[], Authenticator],
        metrics: Metrics | None = None,
        peers: Peers | None = None,
    ) -> None:
        self.cfg = cfg
        self.path = cfg.path
        self.hub = hub
        self.auth = auth  # the current authenticator: a reload swaps it
        self.metrics = metrics
        self.peers = peers
        self.sessions: set[Session] = set()
        self._clients: Counter[str] = Counter()  # client address -> its open sockets
        self._tokens: Counter[str] = Counter()  # token hash -> sockets subscribed with it
        # By token, for revoking at a reload; bounded by the sockets' own limits.
        self.subscriptions = Subscriptions(cfg.max_sockets * cfg.max_bindings)
        self.dropped_slow = 0
        self.evicted = 0
        self._clock: gevent.Greenlet | None = None
        # Often enough for the shortest of the intervals kept; a second at most.
        self.tick_seconds = max(0.05, min(1.0, cfg.ping_interval / 4, cfg.subscribe_grace / 4))

    def __len__(self) -> int:
        return len(self.sessions)

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI application of the endpoint: a websocket, or an error in the envelope."""
        began = time.perf_counter()
        try:
            ws, takeover, client = self._handshake(environ)
        except ApiError as err:
            rid, body = envelope.failure_json(err)
            start_response(
                f"{err.status} {_REASONS.get(err.status, 'Error')}",
                [
                    ("Content-Type", envelope.JSON_TYPE),
                    ("Content-Length", str(len(body))),
                    ("X-Request-ID", rid),
                    *err.headers.items(),
                ],
            )
            self._measure(environ, err.status, began)
            return [body]
        sock, leftover = takeover()
        session = Session(self, sock, ws, leftover, client)
        try:
            sock.sendall(ws.send(AcceptConnection()))
        except OSError:
            return []
        self._measure(environ, 101, began)
        self._admit(session)
        log.debug("websocket open client=%s sockets=%d", client, len(self.sessions))
        try:
            session.run()
        finally:
            self._forget(session)
            log.debug("websocket closed client=%s why=%s", client, session.closing)
        return []

    # -- places ------------------------------------------------------------------------------

    def _admit(self, session: Session) -> None:
        self.sessions.add(session)
        self._clients[session.client] += 1
        if self._clock is None:
            self._clock = gevent.spawn(self.keep_time)

    def _forget(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self._clients[session.client] -= 1
            if self._clients[session.client] <= 0:
                del self._clients[session.client]

    def _make_room(self) -> bool:
        """The server is full: a socket on its way out, or else the one that has gone longest
        without a subscription, gives its place, if there is one."""
        idle = [(since, s) for s in self.sessions if (since := _idle_since(s)) is not None]
        if not idle:
            return False
        oldest = min(idle, key=_first)[1]
        self.evicted += 1
        self._forget(oldest)
        oldest.evict()
        return True

    def sockets_of(self, token_hash: str) -> int:
        """How many sockets hold subscriptions made with this token."""
        return self._tokens.get(token_hash, 0)

    def claim(self, token_hash: str) -> None:
        self._tokens[token_hash] += 1

    def unclaim(self, token_hash: str) -> None:
        self._tokens[token_hash] -= 1
        if self._tokens[token_hash] <= 0:
            del self._tokens[token_hash]

    def keep_time(self) -> None:
        """Every socket's clock (Session.tick), while any is open."""
        try:
            while self.sessions:
                gevent.sleep(self.tick_seconds)
                now, wall = time.monotonic(), time.time()
                for session in list(self.sessions):
                    try:
                        session.tick(now, wall)
                    except Exception:  # one socket's bug must not stop every clock
                        log.exception("websocket clock failed client=%s", session.client)
                        session.abort("failed")
        finally:
            self._clock = None

    def _handshake(self, environ: dict[str, Any]) -> tuple[WSConnection, Any, str]:
        method = environ.get("REQUEST_METHOD")
        if method != "GET":
            # Only the upgrade: no HEAD, and no CORS preflight (browsers send none for a
            # websocket), so the Allow header names GET alone.
            raise ApiError(
                405,
                "invalid_method",
                {"message": "method not allowed", "allowed": ["GET"]},
                headers={"Allow": "GET"},
            )
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            raise ApiError(
                426,
                "upgrade required",
                {"message": "this is Kazoo's websocket for call events: connect with ws://"},
                headers={"Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
            )
        headers = [
            (key[5:].replace("_", "-").lower().encode("latin-1"), str(value).encode("latin-1"))
            for key, value in environ.items()
            if key.startswith("HTTP_")
        ]
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.initiate_upgrade_connection(headers, environ.get("PATH_INFO") or "/")
            request = next(ws.events())
        except (ProtocolError, h11.ProtocolError, ValueError, StopIteration) as exc:
            status = 426 if environ.get("HTTP_SEC_WEBSOCKET_VERSION", "13") != "13" else 400
            raise ApiError(
                status,
                "bad websocket handshake",
                {"message": str(exc)[:200] or "not a websocket handshake"},
                headers={"Sec-WebSocket-Version": "13"} if status == 426 else None,
            ) from None
        if not isinstance(request, Request) or not _good_key(environ):
            raise ApiError(
                400,
                "bad websocket handshake",
                {"message": "Sec-WebSocket-Key must be 16 bytes in base64"},
            )
        takeover = environ.get("channelsd.takeover")
        if takeover is None:
            raise ApiError(
                503, "websocket unavailable", {"message": "this server cannot hand sockets over"}
            )
        client = self.peers.client(environ) if self.peers is not None else "-"
        if self._clients[client] >= self.cfg.max_sockets_per_client:
            if self.metrics is not None:
                self.metrics.http_refused.labels("stream_limit").inc()
            log.info("websocket refused client=%s: too many from it", client)
            raise ApiError(
                429,
                "too many websockets",
                {
                    "message": f"{self.cfg.max_sockets_per_client} websockets of this client "
                    "are open, the limit (websocket.max_sockets_per_client); retry"
                },
                headers={"Retry-After": "5"},
            )
        if len(self.sessions) >= self.cfg.max_sockets and not self._make_room():
            if self.metrics is not None:
                self.metrics.http_refused.labels("stream_limit").inc()
            raise ApiError(
                503,
                "too many websockets",
                {
                    "message": f"{self.cfg.max_sockets} websockets are open and subscribed, "
                    "the limit (websocket.max_sockets); retry"
                },
                headers={"Retry-After": "5"},
            )
        return ws, takeover, client

    def _measure(self, environ: dict[str, Any], status: int, began: float) -> None:
        if self.metrics is not None:
            method = environ.get("REQUEST_METHOD", "")
            self.metrics.http(self.path, method, status, time.perf_counter() - began)

    def close_all(self) -> None:
        """The daemon is stopping: every socket gets a 1001 close."""
        self.hub.close()
        for session in list(self.sessions):
            session.close(GOING_AWAY, "server stopping")
        if self._clock is not None:
            self._clock.kill(block=False)


def _first(pair: tuple[float, Session]) -> float:
    return pair[0]


def _idle_since(session: Session) -> float | None:
    """Since when a socket gets nothing (0 for a closing one), None when it is subscribed."""
    if session.aborted:
        return None
    if session.closing is not None:
        return 0.0
    return session.bare_since


def _good_key(environ: dict[str, Any]) -> bool:
    try:
        key = base64.b64decode(environ.get("HTTP_SEC_WEBSOCKET_KEY", ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) == 16


_REASONS = {
    400: "Bad Request",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
