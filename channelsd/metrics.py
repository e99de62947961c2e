"""Prometheus metrics, one registry per daemon (so tests can run several in one process).

Counters on the event-ingest path are resolved once per label set and cached: a label lookup
per event would cost more than the table update itself.

Every label value is bounded: a fixed set (HTTP methods, close reasons), the routes the
application registered, or, for names our own code chooses (ESL commands, error reasons,
nodes), a pattern and a cap on how many distinct values are kept. Anything else is counted
as "other", so no client, and no switch, can grow /metrics or the process by sending new
names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from channelsd.table import ChannelTable
from channelsd.validate import whole_number

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

OTHER = "other"
HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
)
CLOSE_REASONS = frozenset(
    ("header_timeout", "idle_timeout", "body_timeout", "send_timeout", "evicted")
)
REFUSE_REASONS = frozenset(
    ("connection_limit", "stream_limit", "stream_token_limit", "stream_account_limit")
)
ACCEPT_ERRORS = frozenset(("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"))


class Bounded:
    """One label's values: those in `allowed`, or (without a set) the first `cap` distinct
    values that match `pattern`; everything else is "other"."""

    def __init__(
        self,
        allowed: Iterable[str] | None = None,
        cap: int = 64,
        pattern: str = r"[A-Za-z0-9_.:-]{1,64}",
    ) -> None:
        self.allowed = frozenset(allowed) if allowed is not None else None
        self.cap = cap
        self.pattern = re.compile(pattern)
        self.seen: set[str] = set()

    def __call__(self, value: Any) -> str:
        text = str(value)
        if self.allowed is not None:
            return text if text in self.allowed else OTHER
        if text in self.seen:
            return text
        if len(self.seen) < self.cap and self.pattern.fullmatch(text):
            self.seen.add(text)
            return text
        return OTHER


class _Guarded:
    """A labelled metric whose .labels() passes each value through its label's Bounded."""

    def __init__(self, metric: Any, *guards: Bounded) -> None:
        self.metric = metric
        self.guards = guards

    def labels(self, *values: Any) -> Any:
        return self.metric.labels(*(g(v) for g, v in zip(self.guards, values, strict=True)))


class _StateCollector(Collector):
    """Gauges read from the live state at scrape time instead of being kept up to date."""

    def __init__(
        self,
        table: ChannelTable,
        nodes: Callable[[], Mapping[str, Any]],
        event_counts: Mapping[str, Mapping[str, int]],
        ended: Sized | None = None,
    ) -> None:
        self.table = table
        self.nodes = nodes
        self.event_counts = event_counts
        self.ended = ended

    def collect(self) -> Iterable[GaugeMetricFamily]:
        channels = GaugeMetricFamily("channelsd_channels", "Live channels", labels=["node"])
        connected = GaugeMetricFamily(
            "channelsd_node_connected", "1 while both ESL connections are up", labels=["node"]
        )
        synced = GaugeMetricFamily(
            "channelsd_node_synced", "1 once the node's channels were reconciled", labels=["node"]
        )
        sessions = GaugeMetricFamily(
            "freeswitch_sessions", "Session-Count of the node's last HEARTBEAT", labels=["node"]
        )
        for name, node in self.nodes().items():
            channels.add_metric([name], self.table.count(name))
            connected.add_metric([name], 1 if node.connected else 0)
            synced.add_metric([name], 1 if node.synced else 0)
            count = whole_number(node.heartbeat.get("Session-Count"))
            if count is not None:
                sessions.add_metric([name], count)
        events = CounterMetricFamily(
            "channelsd_esl_events", "ESL events ingested", labels=["node", "event"]
        )
        for node, counts in list(self.event_counts.items()):
            for name, count in list(counts.items()):
                events.add_metric([node, name], count)
        refused = CounterMetricFamily(
            "channelsd_esl_values_refused",
            "Values from the switch refused at ingest (a Unique-ID that is not a uuid, an "
            "object or an absurdly long text where a field's text belongs), by field",
            labels=["field"],
        )
        for field, count in list(self.table.refused.items()):
            refused.add_metric([field], count)
        yield refused
        yield GaugeMetricFamily(
            "channelsd_tombstones",
            "Destroyed channels remembered so that their late events cannot revive them",
            value=self.table.tombstone_count(),
        )
        yield events
        yield channels
        yield connected
        yield synced
        yield sessions
        yield GaugeMetricFamily(
            "channelsd_accounts",
            "Accounts with at least one live channel",
            value=self.table.account_count(),
        )
        if self.ended is not None:
            yield GaugeMetricFamily(
                "channelsd_ended_calls",
                "Ended calls kept for ?ended=true (bounded by api.ended_calls_max and "
                "api.ended_calls_minutes)",
                value=len(self.ended),
            )


class Metrics:
    """Every metric channelsd exports."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        node = Bounded(cap=256)  # configured names; the cap only guards against a bug
        command = Bounded(pattern=r"[a-z][a-z0-9_]{0,31}")  # ESL command names we send
        reason = Bounded(cap=32)
        self._node, self._command = node, command
        # The application's own route rules, set once it is built; None until then.
        self.routes: frozenset[str] | None = None
        # Counted in a plain dict and exported at scrape time: a prometheus Counter takes a
        # lock per increment, which shows on the ingest path at 30k events/s.
        self.event_counts: dict[str, dict[str, int]] = {}
        self.parse_errors = _Guarded(
            Counter(
                "channelsd_esl_event_parse_errors",
                "Event bodies that did not parse",
                ["node"],
                registry=r,
            ),
            node,
        )
        self.reconnects = _Guarded(
            Counter(
                "channelsd_esl_reconnects",
                "ESL sessions that ended and were retried",
                ["node"],
                registry=r,
            ),
            node,
        )
        self.reconciles = _Guarded(
            Counter("channelsd_reconciles", "Reconciles by result", ["node", "result"], registry=r),
            node,
            Bounded(("ok", "unknown")),
        )
        self.reconcile_added = _Guarded(
            Counter(
                "channelsd_reconcile_added_channels",
                "Channels added by reconciles",
                ["node"],
                registry=r,
            ),
            node,
        )
        self.reconcile_removed = _Guarded(
            Counter(
                "channelsd_reconcile_removed_channels",
                "Channels removed by reconciles",
                ["node"],
                registry=r,
            ),
            node,
        )
        self.command_seconds = Histogram(
            "channelsd_esl_command_duration_seconds",
            "ESL command round trip",
            ["node", "command"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.command_errors = _Guarded(
            Counter(
                "channelsd_esl_command_errors",
                "ESL commands that failed",
                ["node", "command", "reason"],
                registry=r,
            ),
            node,
            command,
            reason,
        )
        self.http_requests = Counter(
            "channelsd_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.http_seconds = Histogram(
            "channelsd_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_closed = _Guarded(
            Counter(
                "channelsd_http_connections_closed",
                "HTTP connections the server closed: a timeout, or evicted at the limit",
                ["reason"],
                registry=r,
            ),
            Bounded(CLOSE_REASONS),
        )
        self.http_refused = _Guarded(
            Counter(
                "channelsd_http_refused",
                "Connections or streams answered 503 at their limit",
                ["reason"],
                registry=r,
            ),
            Bounded(REFUSE_REASONS),
        )
        self.accept_errors = _Guarded(
            Counter(
                "channelsd_http_accept_errors",
                "accept() failures for lack of descriptors or memory",
                ["error"],
                registry=r,
            ),
            Bounded(ACCEPT_ERRORS),
        )
        self.streams_revoked = Counter(
            "channelsd_streams_revoked",
            "Live streams closed because their token was removed or changed by a reload",
            registry=r,
        )
        self._command_children: dict[tuple[str, str], Any] = {}
        self._http_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def watch(
        self,
        table: ChannelTable,
        nodes: Callable[[], Mapping[str, Any]],
        ended: Sized | None = None,
    ) -> None:
        self.registry.register(_StateCollector(table, nodes, self.event_counts, ended))

    def watch_http(self, connections: Callable[[], int], streams: Callable[[], int]) -> None:
        """Gauges of open HTTP connections and live streams, read at scrape time."""
        Gauge(
            "channelsd_http_connections", "Open HTTP connections", registry=self.registry
        ).set_function(connections)
        Gauge(
            "channelsd_http_streams", "Open live event streams", registry=self.registry
        ).set_function(streams)

    def event_counter(self, node: str) -> dict[str, int]:
        """The node's event name → count dict, for its reader to bump directly."""
        return self.event_counts.setdefault(node, {})

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        # The method and the route come from the client: bounded before they are a key.
        if method not in HTTP_METHODS:
            method = OTHER
        if self.routes is not None and route not in self.routes:
            route = "unmatched"
        code = str(status) if 100 <= status <= 599 else OTHER
        # Label children looked up once: prometheus_client takes a lock for every lookup.
        key = (route, method, code)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self.http_requests.labels(route, method, code),
                self.http_seconds.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def command(self, node: str, name: str, seconds: float) -> None:
        child = self._command_children.get((node, name))
        if child is None:
            labels = (self._node(node), self._command(name))
            child = self.command_seconds.labels(*labels)
            if OTHER not in labels:  # the cache stays as bounded as the labels
                self._command_children[(node, name)] = child
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
