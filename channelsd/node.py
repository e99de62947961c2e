"""One FreeSWITCH node: its two ESL connections, their reconnects, and table re-synchronisation.

A supervisor greenlet owns the node's life cycle, as panoramisk's manager owns its
reconnects: connect → subscribe → learn Core-UUID → reconcile → watch → on any failure tear
down, back off with jitter, start again with fresh connections (greenswitch objects are never
reused). Events and commands use separate connections because an `api` command blocks event
delivery on the connection it runs on.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any

import gevent
import gevent.event

from channelsd import turns
from channelsd.channel import Channel
from channelsd.config import NodeConfig, SyncConfig
from channelsd.esl import ConnectionLost, ESLConnection, ESLError
from channelsd.eventpick import TableReader
from channelsd.events import EventParseError, parse_json
from channelsd.jobs import JobResults
from channelsd.metrics import Metrics
from channelsd.showchannels import ListingError, listed_uuids
from channelsd.table import ChannelTable
from channelsd.validate import is_uuid, whole_number

log = logging.getLogger("channelsd.node")

# Exactly what the table needs (not ALL): channel life cycle, identity-bearing events,
# API (uuid_setvar changes identity without a channel event), RECORD_START/STOP (whoever
# records), HEARTBEAT (liveness) and BACKGROUND_JOB (bgapi results). CHANNEL_EXECUTE is left
# out: the heaviest events, and nothing in the API reads them.
SUBSCRIBED_EVENTS = (
    "CHANNEL_CREATE",
    "CHANNEL_DESTROY",
    "CHANNEL_UUID",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ORIGINATE",
    "CHANNEL_ANSWER",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CALL_UPDATE",
    "RECORD_START",
    "RECORD_STOP",
    "API",
    "HEARTBEAT",
    "BACKGROUND_JOB",
)

_SUBSCRIBED = frozenset(SUBSCRIBED_EVENTS)
_EVENT_NAME = itemgetter("Event-Name")

# uuid_dumps written at once in a reconcile (two batches are out at a time).
HYDRATE_BATCH = 16
# How long a hung-up channel's last events may take after its HANGUP (the captures: 80 ms at
# most), before a reconcile's "No such channel" removes its row without them.
TEARDOWN = 5.0
# A count can differ for one beat while a call is being set up or torn down.
DRIFT_BEATS = 2


class NodeUnavailable(Exception):
    """The node is not connected, so nothing can be asked of it."""


class ReconcileUnknown(Exception):
    """FreeSWITCH could not list its channels: the truth is unknown, not empty."""


@dataclass
class ReconcileResult:
    listed: int
    added: int
    removed: int
    seconds: float
    refreshed: int = 0


_GONE = object()  # what uuid_dump's "No such channel" means


class NodeLink:
    """Keeps one FreeSWITCH node connected and its channels in the table."""

    def __init__(
        self, cfg: NodeConfig, table: ChannelTable, sync: SyncConfig, metrics: Metrics | None = None
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        # Events by name, bumped on the ingest path; exported at scrape time.
        self._event_counts: dict[str, int] = metrics.event_counter(cfg.name) if metrics else {}
        self.name = cfg.name
        self.table = table
        self.sync = sync
        self.state = "idle"
        self.core_uuid: str | None = None
        self.last_error = ""
        self.synced = False
        self.heartbeat: dict[str, Any] = {}
        self.reconnects = 0
        self.last_reconcile: ReconcileResult | None = None
        self._events: ESLConnection | None = None
        self._commands: ESLConnection | None = None
        self._subscribed_at = 0.0
        self._stopping = False
        self._greenlet: gevent.Greenlet | None = None
        self._kick = gevent.event.Event()
        self._drift = 0  # consecutive HEARTBEATs whose Session-Count disagreed with the table
        self._generation = 0
        # Set on every (re)connect: events may have been lost while down, so the next
        # reconcile asks about every row not heard of since (see reconcile()).
        self._unverified = True
        self.ready_event = gevent.event.Event()
        # bgapi results an action waits for (channelsd.jobs): fed by BACKGROUND_JOB below.
        self.jobs = JobResults()
        # What feeds the table is parsed for it alone: the events, and the uuid_dump answers
        # a reconcile hydrates it from (~80 headers each; 10,000 of them at start-up).
        self._reader = TableReader(table)

    # -- public ------------------------------------------------------------------------------

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._supervise)
        self._greenlet.link_exception(self._supervisor_died)

    def stop(self) -> None:
        self._stopping = True
        for conn in (self._events, self._commands):
            if conn is not None:
                conn.goodbye(timeout=1.0)
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=3)
        self.state = "stopped"

    @property
    def connected(self) -> bool:
        return bool(self._commands and self._commands.alive and self._events and self._events.alive)

    def api(self, cmd: str, timeout: float | None = None) -> str:
        """Run an api command on this node's command connection."""
        return str(self._command("api", cmd, timeout).data)

    def bgapi(self, cmd: str, timeout: float | None = None) -> str:
        """Start `bgapi <cmd>`; returns FreeSWITCH's Reply-Text (`+OK Job-UUID: …`)."""
        return str(self._command("bgapi", cmd, timeout).data)

    def _command(self, kind: str, cmd: str, timeout: float | None) -> Any:
        conn = self._commands
        if conn is None or not conn.alive or self.state not in ("syncing", "ready"):
            raise NodeUnavailable(self.name)
        return self._timed(conn, f"{kind} {cmd}", timeout)

    def _timed(self, conn: ESLConnection, text: str, timeout: float | None = None) -> Any:
        """One command on `conn`, timed and counted by its name (never its arguments)."""
        words = text.split(" ", 2)
        name = words[1] if words[0] in ("api", "bgapi") and len(words) > 1 else words[0]
        began = time.monotonic()
        try:
            reply = conn.command(text, self.sync.command_timeout if timeout is None else timeout)
        except ESLError as exc:
            raise self._lost(conn, name, exc) from None
        if self.metrics is not None:
            turns.after_answer(self.metrics.command, self.name, name, time.monotonic() - began)
        return reply

    def _count_error(self, command: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.command_errors.labels(self.name, command, reason).inc()

    def request_reconcile(self) -> None:
        self._kick.set()

    # -- supervisor --------------------------------------------------------------------------

    def _parse_error(self, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.parse_errors.labels(self.name).inc()

    def _supervisor_died(self, g: gevent.Greenlet) -> None:
        log.error("node=%s supervisor crashed: %r", self.name, g.exception)

    def _supervise(self) -> None:
        backoff = self.sync.backoff_initial
        while not self._stopping:
            began = time.monotonic()
            try:
                self._session()
            except (ESLError, ReconcileUnknown, NodeUnavailable) as exc:
                if self._stopping:
                    break
                self.last_error = str(exc)
                log.warning("node=%s down reason=%r", self.name, self.last_error)
            except Exception as exc:  # a bug must not end the node's supervision
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("node=%s session failed", self.name)
            finally:
                self._teardown()
            if self._stopping:
                break
            if time.monotonic() - began > 60:  # it had been up a while: start gently again
                backoff = self.sync.backoff_initial
            delay = backoff / 2 + random.uniform(0, backoff / 2)
            backoff = min(backoff * 2, self.sync.backoff_max)
            self.reconnects += 1
            if self.metrics is not None:
                self.metrics.reconnects.labels(self.name).inc()
            gevent.sleep(delay)

    def _connection(self, role: str, on_event: Any = None) -> ESLConnection:
        feeds_table = on_event is not None
        conn = ESLConnection(
            self.cfg.host,
            self.cfg.port,
            self.cfg.password,
            label=f"{self.name}/{role}",
            timeout=self.sync.connect_timeout,
            on_event=on_event,
            on_parse_error=self._parse_error,
            parse_json=self._reader.parse if feeds_table else parse_json,
            cut=self._reader.cut if feeds_table else None,
            on_picked=partial(self.table.apply, self.name) if feeds_table else None,
            on_delivered=self._count_picks if feeds_table else None,
        )
        conn.connect()
        return conn

    def _session(self) -> None:
        self.state = "connecting"
        self._events = self._connection("events", self._on_event)
        self._commands = self._connection("commands")
        self.state = "syncing"
        reply = self._events.command(
            "event json " + " ".join(SUBSCRIBED_EVENTS), self.sync.command_timeout
        )
        if not str(reply.data).startswith("+OK"):
            raise ESLError(f"subscription refused: {reply.data}")
        self._subscribed_at = time.monotonic()
        self._unverified = True
        self._kick.clear()  # this session's first reconcile is about to run anyway
        core = str(self._timed(self._commands, "api global_getvar core_uuid").data).strip()
        # A uuid or nothing: the answer is the switch's text, and it reaches log lines.
        if is_uuid(core):
            if self.core_uuid and core != self.core_uuid:
                # (what this connection has told already belongs to the new run)
                dropped = self.table.purge_node(self.name, before=self._subscribed_at)
                log.warning("node=%s restarted core_uuid=%s purged=%d", self.name, core, dropped)
            self.core_uuid = core
        log.info("node=%s connected core_uuid=%s", self.name, self.core_uuid)
        self._reconcile_logged()
        self.state = "ready"
        self.ready_event.set()
        self._watch()

    def _watch(self) -> None:
        interval = self.sync.reconcile_interval
        next_reconcile = time.monotonic() + interval
        events, commands = self._events, self._commands
        assert events is not None and commands is not None
        while not self._stopping:
            wake = next_reconcile
            if self.sync.heartbeat_timeout:
                wake = min(wake, events.last_rx + self.sync.heartbeat_timeout)
            timeout = max(0.05, min(wake - time.monotonic(), 5.0))
            gevent.wait([events.closed, commands.closed, self._kick], timeout=timeout, count=1)
            for conn in (events, commands):
                if conn.closed.is_set():
                    raise ConnectionLost(f"{conn.label}: {conn.close_reason}")
            quiet = time.monotonic() - events.last_rx
            if self.sync.heartbeat_timeout and quiet > self.sync.heartbeat_timeout:
                raise ESLError(f"nothing received for {quiet:.0f}s (no HEARTBEAT)")
            if self._kick.is_set() or time.monotonic() >= next_reconcile:
                self._kick.clear()
                self._reconcile_logged()
                next_reconcile = time.monotonic() + interval

    def _reconcile_logged(self) -> None:
        try:
            result = self.reconcile()
        except ReconcileUnknown as exc:
            # The listing failed but the connection works: keep what events tell us,
            # and try again at the next interval.
            self.synced = False
            self.last_error = str(exc)
            log.warning("node=%s reconcile unknown reason=%r", self.name, str(exc))
            if self.metrics is not None:
                self.metrics.reconciles.labels(self.name, "unknown").inc()
            return
        if self.metrics is not None:
            self.metrics.reconciles.labels(self.name, "ok").inc()
            self.metrics.reconcile_added.labels(self.name).inc(result.added)
            self.metrics.reconcile_removed.labels(self.name).inc(result.removed)
        log.info(
            "node=%s reconciled listed=%d added=%d removed=%d refreshed=%d seconds=%.3f",
            self.name,
            result.listed,
            result.added,
            result.removed,
            result.refreshed,
            result.seconds,
        )

    def _teardown(self) -> None:
        for conn in (self._events, self._commands):
            if conn is not None:
                conn.close("reconnecting" if not self._stopping else "stopping")
        self._events = self._commands = None
        self.synced = False
        self.ready_event.clear()
        if self._stopping:
            return
        self.state = "down"
        # One stale period from the first drop until the rows in doubt have been asked about:
        # a node that keeps dropping before that does not restart its grace each time.
        if not self.table.is_node_stale(self.name):
            self.table.mark_stale(self.name)
            self._generation += 1
            gevent.spawn_later(self.sync.stale_grace, self._expire_stale, self._generation)

    def _expire_stale(self, generation: int) -> None:
        # The grace is over and the rows in doubt were never asked about (the node is away,
        # or keeps dropping before its first reconcile gets that far): forget them. Once a
        # reconcile has asked about each of them, the period ended (generation moved on), even
        # if the listing failed: "unknown" is never "empty".
        if generation != self._generation or self._stopping:
            return
        dropped = self.table.drop_stale(self.name)
        if dropped:
            log.warning("node=%s stale grace over dropped=%d", self.name, dropped)

    # -- table sync --------------------------------------------------------------------------

    def _count_picks(self, picks: list[dict[str, Any] | None]) -> None:
        """The picks of a cut (eventpick.TableReader.cut) the connection delivered, counted
        here, once a cut: they go to the table straight from the connection (on_picked), not
        through _on_event, which would cost every event a Python call of its own. (Counted
        once delivered, not when cut: a cut's rest after a close is never ingested.) A None
        is an event parsed whole, which _on_event counted."""
        counts = self._event_counts
        # (a pick's Event-Name is a str the picker checked; the switch chooses which)
        for name, n in Counter(map(_EVENT_NAME, filter(None, picks))).items():
            counted = name if name in _SUBSCRIBED else "other"
            counts[counted] = counts.get(counted, 0) + n

    def _on_event(self, event: dict[str, Any], body: bytes | None = None) -> None:
        name = event.get("Event-Name")
        # (a hostile switch may name an event with a list: a set's `in` would raise on it)
        counted = name if name.__class__ is str and name in _SUBSCRIBED else "other"
        counts = self._event_counts
        counts[counted] = counts.get(counted, 0) + 1
        if name == "HEARTBEAT":
            self._heartbeat(event)
            return
        if name == "BACKGROUND_JOB":
            self.jobs.complete(event)
            return
        self.table.apply(self.name, event, body)

    def _heartbeat(self, event: dict[str, Any]) -> None:
        """FreeSWITCH says how many sessions it has: a table that disagrees twice in a row has
        missed events, so reconcile now instead of at the next interval."""
        self.heartbeat = {
            k: event.get(k) for k in ("Session-Count", "Max-Sessions", "FreeSWITCH-Version")
        }
        count = whole_number(event.get("Session-Count"))
        if count is None:
            return
        if count != self.table.count(self.name):
            self._drift += 1
            if self._drift >= DRIFT_BEATS:
                log.warning(
                    "node=%s session count drift freeswitch=%s table=%d: reconciling",
                    self.name,
                    count,
                    self.table.count(self.name),
                )
                self._drift = 0
                self.request_reconcile()
        else:
            self._drift = 0

    def reconcile(self) -> ReconcileResult:
        """Make the table agree with FreeSWITCH about this node's channels.

        Nothing is ever taken as gone for its absence. A row in doubt is asked about with
        `uuid_dump`, which reads the live session: "No such channel" removes it (without a
        tombstone, but for a row that heard its hang-up: see _gone(); otherwise only a DESTROY
        from the switch makes one), an answer refreshes it, and an answer older than what the
        row has heard since the question is dropped (but for a "gone" after the row heard its
        hang-up: a hung-up call does not come back). In doubt are rows not heard of since the
        last reconnect (events were lost meanwhile) and rows whose variables were never heard
        (their account is unknown, not absent): they are asked about first, so that neither a
        slow nor a failing listing keeps them in doubt. Then the listing (`show channels`,
        FreeSWITCH's SQL view, which lags) says what to add and which known rows it omits, and
        those are asked about too. A failed listing raises ReconcileUnknown once the rows in
        doubt have been asked about."""
        conn = self._commands
        if conn is None or not conn.alive:
            raise NodeUnavailable(self.name)
        started = time.monotonic()
        counts = {"added": 0, "removed": 0, "refreshed": 0}
        doubtful = [
            ch.uuid
            for ch in self.table.node_rows(self.name)
            if not ch.vars_seen or (self._unverified and ch.last_seen < self._subscribed_at)
        ]
        self._ask(conn, [(u, True) for u in doubtful], counts)
        if self._unverified:
            # Every row in doubt since the reconnect was asked about: the stale period is over
            # (a row whose answer was unknown is kept: unknown is never gone).
            self._unverified = False
            self._generation += 1
            self.table.clear_stale(self.name)
        try:
            listed = listed_uuids(self._timed(conn, "api show channels as json").raw)
        except ListingError as exc:
            raise ReconcileUnknown(str(exc)) from None
        known = self.table.node_uuids(self.name)
        asked = set(doubtful)
        jobs = [(u, False) for u in listed - known if is_uuid(u)]
        jobs += [(u, True) for u in known - listed if u not in asked]
        self._ask(conn, jobs, counts)
        self.table.clear_stale(self.name)
        self.synced = True
        result = ReconcileResult(
            len(listed),
            counts["added"],
            counts["removed"],
            time.monotonic() - started,
            counts["refreshed"],
        )
        self.last_reconcile = result
        return result

    def _ask(
        self, conn: ESLConnection, jobs: list[tuple[str, bool]], counts: dict[str, int]
    ) -> None:
        """uuid_dump each (uuid, known) job and apply each answer. The questions go in
        batches written at once (one system call each), the next batch written before this
        one's answers are applied, so that the switch is answering while the table works."""
        batches = [jobs[i : i + HYDRATE_BATCH] for i in range(0, len(jobs), HYDRATE_BATCH)]
        waiting: tuple[list[tuple[str, bool]], float, float, Iterator[Any]] | None = None
        for batch in [*batches, None]:
            asked = None
            if batch is not None:
                asked_at, began = self.table.now(), time.monotonic()
                commands = [f"api uuid_dump {uuid} json" for uuid, _ in batch]
                asked = (batch, asked_at, began, self._pipeline(conn, commands))
            if waiting is not None:
                self._apply_answers(conn, *waiting, counts)
            waiting = asked

    def _pipeline(self, conn: ESLConnection, commands: list[str]) -> Iterator[Any]:
        try:
            return conn.pipeline(commands, self.sync.command_timeout)
        except ESLError as exc:
            raise self._lost(conn, "uuid_dump", exc) from None

    def _lost(self, conn: ESLConnection, command: str, exc: ESLError) -> Exception:
        """What a failed command raises: a lost connection names why it was lost (a reply over
        the frame limit, the switch closing...) in the node's down line and /readyz."""
        if isinstance(exc, ConnectionLost):
            self._count_error(command, "connection lost")
            return NodeUnavailable(f"{self.name}: {conn.close_reason or 'connection lost'}")
        self._count_error(command, type(exc).__name__)
        return exc

    def _apply_answers(
        self,
        conn: ESLConnection,
        batch: list[tuple[str, bool]],
        asked_at: float,
        began: float,
        replies: Iterator[Any],
        counts: dict[str, int],
    ) -> None:
        for uuid, was_known in batch:
            # The answers of a batch are usually all there: without a visit to the hub the
            # whole reconcile would run in one go (500 channels, ~50 ms; 20 nodes' worth held
            # API requests for 250 ms in the blip benchmark). A turn after each answer, which
            # waits for the hub's next poll once this loop iteration's bulk budget is spent.
            turns.pause()
            try:
                body = next(replies).raw
            except ESLError as exc:
                raise self._lost(conn, "uuid_dump", exc) from None
            if self.metrics is not None:
                self.metrics.command(self.name, "uuid_dump", time.monotonic() - began)
            row = self.table.row(self.name, uuid)
            # Heard of since the question was sent: an event (or a uuid_setvar's API event)
            # newer than this answer, which would turn the row back. Except a "gone" for a row
            # that has heard its hang-up: nothing brings a hung-up channel back (_gone()).
            heard_since = row is not None and row.last_seen >= asked_at
            if heard_since and row.ending is None:
                continue
            data = self._answer(uuid, body)
            if data is _GONE:
                if self._gone(uuid, row, asked_at):
                    counts["removed"] += 1
            elif data is None or heard_since:
                continue
            elif data.get("Unique-ID") != uuid:
                # FreeSWITCH dumps the channel it was asked about. An answer about another is
                # out of step with the questions (or a lie): hydrating it would write a row
                # whose own freshness was never checked, and every answer after it may be out
                # of step too, "-ERR No such channel" ones included (they name no channel).
                reason = "a uuid_dump answered about another channel than the one asked"
                conn.close(reason)
                self._count_error("uuid_dump", "out of step")
                raise NodeUnavailable(f"{self.name}: {reason}")
            elif self.table.hydrate(self.name, data) is not None:
                counts["refreshed" if was_known else "added"] += 1

    def _gone(self, uuid: str, row: Channel | None, asked_at: float) -> bool:
        """The switch said "No such channel" about `uuid`: remove its row, unless it is tearing
        down. True when a row was removed.

        FreeSWITCH answers "No such channel" once a channel is down, and its HANGUP_COMPLETE,
        which carries how the call ended (billing seconds, disposition, quality), comes 20 to
        80 ms after its HANGUP (the captures): a row that heard its HANGUP but not that, lately,
        is left to its own events, or its ended call would be recorded without them. A later
        reconcile removes it if they were lost. A row that heard its hang-up is removed with a
        tombstone: its own late events must not make it a row again (a new call reusing the
        uuid, created later, is not held back by it)."""
        ending = row.ending if row is not None else None
        if ending is not None and not ending.complete and row.last_seen > asked_at - TEARDOWN:
            return False
        return self.table.remove(self.name, uuid, tombstone=ending is not None) is not None

    def _answer(self, uuid: str, body: bytes) -> Any:
        """A uuid_dump's answer: the channel's variables, _GONE, or None when unknown."""
        if not body.lstrip().startswith(b"{"):
            # "-ERR No such channel!": gone since (or a zombie, hung up and about to go)
            return _GONE if body.startswith(b"-ERR No such channel") else None
        try:
            return self._reader.parse(body)
        except EventParseError:
            log.warning("node=%s uuid_dump %s answered malformed JSON", self.name, uuid)
            return None
