"""Putting it together: the table, one NodeLink per FreeSWITCH node, and the HTTP server.

Everything runs on one gevent hub: greenswitch's greenlets, the node supervisors and
pywsgi's request greenlets. The WSGI server runs in its own greenlet, as locust's web UI
does; a greenlet that dies is logged, never swallowed.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import gevent
import gevent.event
from gevent.pywsgi import WSGIServer

from channelsd.actions import Actions
from channelsd.api import ApiContext, create_app
from channelsd.config import Config
from channelsd.node import NodeLink
from channelsd.table import ChannelTable, Identity
from channelsd.tokens import TokenStore

log = logging.getLogger("channelsd")


class _AccessLog:
    """pywsgi writes one access line per request to this; route it into logging."""

    def write(self, line: str) -> None:
        log.debug("http %s", line.rstrip())


class Daemon:
    """The running service: build it from a Config, start(), then wait()."""

    def __init__(self, config: Config) -> None:
        self.config = config
        ident = config.identity
        self.table = ChannelTable(
            Identity(ident.chains, ident.ccv_prefix, ident.device_owners),
            tombstone_ttl=config.sync.tombstone_ttl,
        )
        self.nodes = {n.name: NodeLink(n, self.table, config.sync) for n in config.nodes}
        self.ctx = ApiContext(
            table=self.table,
            tokens=TokenStore(config.tokens),
            system_wide_channels_list=config.system_wide_channels_list,
            max_body_bytes=config.max_body_bytes,
            nodes=self.nodes,
            actions=Actions(self.table, self.nodes, config.actions),
        )
        self.app = create_app(self.ctx)
        self.http: WSGIServer | None = None
        self._http_greenlet: gevent.Greenlet | None = None
        self._stopped = gevent.event.Event()

    @property
    def http_address(self) -> tuple[str, int]:
        assert self.http is not None
        host, port = self.http.server_host, self.http.server_port
        return host, port

    def start(self) -> None:
        self.http = WSGIServer(
            (self.config.http_host, self.config.http_port),
            self.app,
            log=_AccessLog(),
            error_log=logging.getLogger("channelsd.http"),
        )
        self.http.init_socket()  # bind now, so a taken port fails start-up, not later
        self._http_greenlet = gevent.spawn(self.http.serve_forever)
        self._http_greenlet.link_exception(self._crashed)
        for node in self.nodes.values():
            node.start()
        host, port = self.http_address
        log.info("listening on http://%s:%d nodes=%d", host, port, len(self.nodes))

    def _crashed(self, g: gevent.Greenlet) -> None:
        log.error("http server greenlet died: %r", g.exception)
        self._stopped.set()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self.http is not None:
            self.http.stop(timeout=3)
        self._stopped.set()

    def wait(self) -> None:
        """Serve until SIGTERM/SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self._on_signal, sig)
        self._stopped.wait()

    def _on_signal(self, sig: Any) -> None:
        log.info("signal=%s stopping", signal.Signals(sig).name)
        gevent.spawn(self.stop)
