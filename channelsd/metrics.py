"""Prometheus metrics, one registry per daemon (so tests can run several in one process).

Counters on the event-ingest path are resolved once per label set and cached: a label lookup
per event would cost more than the table update itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from channelsd.table import ChannelTable
from channelsd.validate import whole_number

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _StateCollector(Collector):
    """Gauges read from the live state at scrape time instead of being kept up to date."""

    def __init__(
        self,
        table: ChannelTable,
        nodes: Callable[[], Mapping[str, Any]],
        event_counts: Mapping[str, Mapping[str, int]],
    ) -> None:
        self.table = table
        self.nodes = nodes
        self.event_counts = event_counts

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


class Metrics:
    """Every metric channelsd exports."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # Counted in a plain dict and exported at scrape time: a prometheus Counter takes a
        # lock per increment, which shows on the ingest path at 30k events/s.
        self.event_counts: dict[str, dict[str, int]] = {}
        self.parse_errors = Counter(
            "channelsd_esl_event_parse_errors",
            "Event bodies that did not parse",
            ["node"],
            registry=r,
        )
        self.reconnects = Counter(
            "channelsd_esl_reconnects",
            "ESL sessions that ended and were retried",
            ["node"],
            registry=r,
        )
        self.reconciles = Counter(
            "channelsd_reconciles", "Reconciles by result", ["node", "result"], registry=r
        )
        self.reconcile_added = Counter(
            "channelsd_reconcile_added_channels",
            "Channels added by reconciles",
            ["node"],
            registry=r,
        )
        self.reconcile_removed = Counter(
            "channelsd_reconcile_removed_channels",
            "Channels removed by reconciles",
            ["node"],
            registry=r,
        )
        self.command_seconds = Histogram(
            "channelsd_esl_command_duration_seconds",
            "ESL command round trip",
            ["node", "command"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.command_errors = Counter(
            "channelsd_esl_command_errors",
            "ESL commands that failed",
            ["node", "command", "reason"],
            registry=r,
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
        self._command_children: dict[tuple[str, str], Any] = {}
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def watch(self, table: ChannelTable, nodes: Callable[[], Mapping[str, Any]]) -> None:
        self.registry.register(_StateCollector(table, nodes, self.event_counts))

    def event_counter(self, node: str) -> dict[str, int]:
        """The node's event name → count dict, for its reader to bump directly."""
        return self.event_counts.setdefault(node, {})

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        # Label children looked up once: prometheus_client takes a lock for every lookup.
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self.http_requests.labels(route, method, str(status)),
                self.http_seconds.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def command(self, node: str, name: str, seconds: float) -> None:
        child = self._command_children.get((node, name))
        if child is None:
            child = self._command_children[(node, name)] = self.command_seconds.labels(node, name)
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
