"""Putting it together: the table, one NodeLink per FreeSWITCH node, and the HTTP server.

Everything runs on one gevent hub: greenswitch's greenlets, the node supervisors and
pywsgi's request greenlets. The WSGI server runs in its own greenlet, as locust's web UI
does; a greenlet that dies is logged, never swallowed.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from typing import Any

import gevent
import gevent.event

from channelsd import config as config_module
from channelsd import fastactions, fastlists
from channelsd.actions import Actions
from channelsd.api import CORS_HEADERS, ApiContext, crashed, create_app
from channelsd.blackhole.hub import Hub
from channelsd.blackhole.service import Websockets
from channelsd.config import Config, ConfigError
from channelsd.ended import EndedCalls
from channelsd.health import LoopMonitor, SystemdNotifier, readiness
from channelsd.httpserver import HttpServer, connection_budget
from channelsd.kazoo_accounts import KazooAccounts
from channelsd.kazoo_auth import KazooTokens
from channelsd.logs import mask
from channelsd.memory import Trimmer
from channelsd.metrics import Metrics
from channelsd.node import NodeLink
from channelsd.peers import Peers
from channelsd.sendmany import Courier
from channelsd.stream import Broker
from channelsd.subscriptions import Subscriptions
from channelsd.table import ChannelTable, Identity
from channelsd.tokens import Authenticator, TokenStore

log = logging.getLogger("channelsd")

STATUS_EVERY = 5.0


class _AccessLog:
    """pywsgi writes one access line per request to this; route it into logging, with any
    token in the URL (EventSource clients must put it there) masked."""

    def write(self, line: str) -> None:
        log.debug("http %s", mask(line.rstrip()))


def authenticator(cfg: Config) -> Authenticator:
    """Who the config's tokens are: [[tokens]], and Kazoo's JWTs when [kazoo] is set."""
    kazoo = cfg.kazoo
    if kazoo is None:
        return Authenticator(TokenStore(cfg.tokens))
    accounts = None
    if kazoo.crossbar_url:
        accounts = KazooAccounts(
            kazoo.crossbar_url,
            kazoo.crossbar_timeout,
            kazoo.descendants_cache_seconds,
            kazoo.descendants_cache_size,
        )
    return Authenticator(TokenStore(cfg.tokens), KazooTokens(kazoo), accounts)


def _identity(cfg: Config) -> Identity:
    ident = cfg.identity
    return Identity(ident.chains, ident.ccv_prefix, ident.device_owners)


class Daemon:
    """The running service: build it from a Config, start(), then wait()."""

    def __init__(self, config: Config, notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.table = ChannelTable(_identity(config), tombstone_ttl=config.sync.tombstone_ttl)
        self.nodes = {
            n.name: NodeLink(n, self.table, config.sync, self.metrics) for n in config.nodes
        }
        ended = self._ended_calls(config)
        self.metrics.watch(self.table, lambda: self.nodes, ended)
        self.notifier = notifier or SystemdNotifier()
        self.loop = LoopMonitor(on_tick=self._tick)
        # One native thread writes the live events of both kinds of subscriber (SSE and
        # websocket) to their sockets: channelsd.sendmany.
        self.courier = courier = Courier()
        self.ctx = ApiContext(
            table=self.table,
            auth=authenticator(config),
            system_wide_channels_list=config.system_wide_channels_list,
            max_body_bytes=config.max_body_bytes,
            nodes=self.nodes,
            actions=Actions(self.table, self.nodes, config.actions),
            broker=Broker(self.table, config.event_buffer, courier=courier),
            ended=ended,
            metrics=self.metrics,
            loop=self.loop,
            subscriptions=Subscriptions.from_limits(config.http_limits),
            peers=Peers(config.trusted_proxies),
        )
        if config.websocket.enabled:
            self.ctx.websockets = Websockets(
                config.websocket,
                Hub(self.table, courier=courier),
                lambda: self.ctx.auth,
                self.metrics,
                self.ctx.peers,
            )
        self.app = create_app(self.ctx)
        self.http: HttpServer | None = None
        # websocket.port: the websocket alone, on a port of its own (Kazoo's blackhole: 5555).
        self.ws_http: HttpServer | None = None
        self._http_greenlet: gevent.Greenlet | None = None
        self._stopped = gevent.event.Event()
        self._last_status = 0.0
        self.trimmer = Trimmer()  # freed memory back to the system, off the hub

    def _ended_calls(self, config: Config) -> EndedCalls:
        ended = EndedCalls(config.ended_calls_minutes * 60, config.ended_calls_max)
        self.table.listen(ended.on_change, destroys_only=True)
        return ended

    @property
    def http_address(self) -> tuple[str, int]:
        assert self.http is not None
        host, port = self.http.server_host, self.http.server_port
        return host, port

    @property
    def websocket_address(self) -> tuple[str, int] | None:
        """Where websocket.port listens (None without one)."""
        if self.ws_http is None:
            return None
        return self.ws_http.server_host, self.ws_http.server_port

    def start(self) -> None:
        limits = self.config.http_limits
        ws = self.config.websocket
        # Every websocket and event stream may hold a second descriptor (the courier's).
        pushed = limits.max_streams + (ws.max_sockets if ws.enabled else 0)
        budget = connection_budget(limits.max_connections, len(self.nodes), pushed)
        if budget < limits.max_connections:
            log.warning(
                "http.max_connections=%d does not fit the open-file limit: serving at most %d "
                "connections (raise LimitNOFILE)",
                limits.max_connections,
                budget,
            )
        self.http = HttpServer(
            (self.config.http_host, self.config.http_port),
            self.app,
            limits,
            self.metrics,
            access_log=_AccessLog() if log.isEnabledFor(logging.DEBUG) else None,
            extra_headers=CORS_HEADERS.items(),
            max_connections=budget,
            lane=fastlists.lane(self.ctx) if self.ctx.fast_lists else None,
            action_lane=fastactions.lane(self.ctx, crashed) if self.ctx.fast_actions else None,
        )
        http = self.http
        self.metrics.watch_http(lambda: len(http.connections), lambda: len(self.ctx.subscriptions))
        self.http.init_socket()  # bind now, so a taken port fails start-up, not later
        # pywsgi writes headers and body separately: without TCP_NODELAY (inherited by the
        # accepted sockets) Nagle and delayed ACKs add ~40 ms to every small answer.
        self.http.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._http_greenlet = gevent.spawn(self.http.serve_forever)
        self._http_greenlet.link_exception(self._crashed)
        self._start_websocket_port(budget)
        for node in self.nodes.values():
            node.start()
        self.loop.start()
        gevent.spawn(self._announce_ready).link_exception(self._crashed)
        host, port = self.http_address
        log.info("listening on http://%s:%d nodes=%d", host, port, len(self.nodes))
        if self.ctx.websockets is not None:
            ws_host, ws_port = self.websocket_address or (host, port)
            path = "/" if self.ws_http is not None else self.config.websocket.path
            log.info("websocket on ws://%s:%d%s", ws_host, ws_port, path)

    def _start_websocket_port(self, budget: int) -> None:
        sockets = self.ctx.websockets
        ws = self.config.websocket
        if sockets is None or ws.port is None:
            return
        self.ws_http = HttpServer(
            (ws.host or self.config.http_host, ws.port),
            sockets.app,
            self.config.http_limits,
            self.metrics,
            access_log=_AccessLog() if log.isEnabledFor(logging.DEBUG) else None,
            extra_headers=CORS_HEADERS.items(),
            max_connections=min(budget, ws.max_sockets),
        )
        self.ws_http.init_socket()
        self.ws_http.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        gevent.spawn(self.ws_http.serve_forever).link_exception(self._crashed)

    def _announce_ready(self) -> None:
        """READY=1 once every node connected and reconciled, or at the start timeout."""
        deadline = time.monotonic() + self.config.ready_timeout
        for node in self.nodes.values():
            node.ready_event.wait(max(0.0, deadline - time.monotonic()))
        ready, detail = readiness(self.nodes)
        missing = [d["node"] for d in detail if not (d["connected"] and d["synced"])]
        if missing:
            log.warning("start timeout: not ready nodes=%s", ",".join(missing))
        self.notifier.send("READY=1", self._status(missing))

    def _status(self, missing: list[str] | None = None) -> str:
        _, detail = readiness(self.nodes)
        up = sum(1 for d in detail if d["connected"] and d["synced"])
        text = f"STATUS={up}/{len(detail)} nodes ready, {len(self.table)} channels"
        if missing:
            text += ", waiting for " + ", ".join(missing)
        return text

    def _tick(self) -> None:
        # Runs in the loop monitor's greenlet: only a turning hub gets here.
        self.notifier.watchdog()
        self._let_go()
        self.trimmer.tick()
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY:
            self._last_status = now
            self.notifier.send(self._status())

    def _let_go(self) -> None:
        """What outlived its use is dropped on time, not at the next call or request: after a
        busy hour, expired tombstones, the last second's list answers and, once nobody
        listens, the event ring (issue #17: memory returns to its floor when the calls stop)."""
        self.table.expire_tombstones()
        self.ctx.lists.expire(time.time())
        if self.ctx.broker is not None:
            self.ctx.broker.release_idle()

    def _crashed(self, g: gevent.Greenlet) -> None:
        log.error("greenlet died: %r", g.exception)
        self._stopped.set()

    def reload(self) -> bool:
        """Re-read tokens and the identity mapping (SIGHUP); connections stay up, except the
        live streams of tokens that were removed or now grant something else."""
        try:
            fresh = config_module.load(self.config.path)
            warnings = config_module.service_warnings(fresh)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            return False
        for warning in warnings:
            log.warning("%s", warning)
        auth = authenticator(fresh)
        self.ctx.auth = auth
        # On the same hub turn as the swap: no stream or websocket of an old token outlives
        # it (a Kazoo token whose key was removed or replaced included).
        revoked = self.ctx.subscriptions.revoke_changed(auth)
        if self.ctx.websockets is not None:
            revoked += self.ctx.websockets.subscriptions.revoke_changed(auth)
        if revoked:
            self.metrics.streams_revoked.inc(revoked)
        self.table.set_identity(_identity(fresh))
        self.config = fresh
        log.info("reloaded tokens=%d streams_revoked=%d", len(fresh.tokens), revoked)
        return True

    def stop(self) -> None:
        self.notifier.send("STOPPING=1")
        self.loop.stop()
        self.ctx.broker.close()
        self.ctx.lists.close()
        if self.ctx.websockets is not None:
            self.ctx.websockets.close_all()
        self.courier.close()  # (a send on its way ends first; later ones go from the hub)
        for node in self.nodes.values():
            node.stop()
        if self.ws_http is not None:
            self.ws_http.stop(timeout=3)
        if self.http is not None:
            self.http.stop(timeout=3)
        self._stopped.set()

    def wait(self) -> None:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self._on_signal, sig)
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self.reload))
        self._stopped.wait()

    def _on_signal(self, sig: Any) -> None:
        log.info("signal=%s stopping", signal.Signals(sig).name)
        gevent.spawn(self.stop)
