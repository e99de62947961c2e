"""The stand-in switch: an ESL (mod_event_socket, inbound mode) server over real TCP.

Everything runs in gevent greenlets inside the caller's process.  Per connection there is a
reader greenlet (parses and runs commands, strictly in order, like FreeSWITCH's listener
thread) and a writer greenlet draining an outbound queue, so a slow client never blocks the
code that fires events.  While an ``api`` command runs, events for that connection are held and
flushed after the ``api/response`` -- FreeSWITCH does the same, which is what makes a snapshot
taken with ``api show channels`` consistent with the events that follow it.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import gevent.queue
from gevent.server import StreamServer

from . import protocol, replies
from .channels import BROADCAST_APPS, GLOBAL_HOLD_MUSIC, CallModel, Channel, new_uuid
from .commands import VERSION, Api, uptime_text
from .events import EventBuilder, now_us
from .protocol import Event, Packet, PacketReader
from .replay import Frame

# switch_event.c EVENT_NAMES: names ``event``/``nixevent`` accept (others are ignored).
EVENT_NAMES = frozenset(
    """CUSTOM CLONE CHANNEL_CREATE CHANNEL_DESTROY CHANNEL_STATE CHANNEL_CALLSTATE
    CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_EXECUTE
    CHANNEL_EXECUTE_COMPLETE CHANNEL_HOLD CHANNEL_UNHOLD CHANNEL_BRIDGE CHANNEL_UNBRIDGE
    CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_OUTGOING CHANNEL_PARK CHANNEL_UNPARK
    CHANNEL_APPLICATION CHANNEL_ORIGINATE CHANNEL_UUID API LOG INBOUND_CHAN OUTBOUND_CHAN
    STARTUP SHUTDOWN PUBLISH UNPUBLISH TALK NOTALK SESSION_CRASH MODULE_LOAD MODULE_UNLOAD
    DTMF MESSAGE PRESENCE_IN NOTIFY_IN PRESENCE_OUT PRESENCE_PROBE MESSAGE_WAITING
    MESSAGE_QUERY ROSTER CODEC BACKGROUND_JOB DETECTED_SPEECH DETECTED_TONE PRIVATE_COMMAND
    HEARTBEAT TRAP ADD_SCHEDULE DEL_SCHEDULE EXE_SCHEDULE RE_SCHEDULE RELOADXML NOTIFY
    PHONE_FEATURE PHONE_FEATURE_SUBSCRIBE SEND_MESSAGE RECV_MESSAGE REQUEST_PARAMS
    CHANNEL_DATA GENERAL COMMAND SESSION_HEARTBEAT CLIENT_DISCONNECTED SERVER_DISCONNECTED
    SEND_INFO RECV_INFO RECV_RTCP_MESSAGE SEND_RTCP_MESSAGE CALL_SECURE NAT RECORD_START
    RECORD_STOP PLAYBACK_START PLAYBACK_STOP CALL_UPDATE FAILURE SOCKET_DATA MEDIA_BUG_START
    MEDIA_BUG_STOP CONFERENCE_DATA_QUERY CONFERENCE_DATA CALL_SETUP_REQ CALL_SETUP_RESULT
    CALL_DETAIL DEVICE_STATE TEXT SHUTDOWN_REQUESTED ALL""".split()
)
LOG_LEVELS = {
    "console": 0,
    "alert": 1,
    "crit": 2,
    "err": 3,
    "error": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
_CLOSE = object()


class Connection:
    """One ESL client: subscription state plus an ordered outbound queue."""

    def __init__(self, conn_id: int, sock: socket.socket, address: Any) -> None:
        self.id = conn_id
        self.sock = sock
        self.address = address
        self.authed = False
        self.fmt = "plain"
        self.all_events = False
        self.events: set[str] = set()
        self.log_level: int | None = None
        self.closed = False
        self.finished = False
        self._queue: gevent.queue.Queue = gevent.queue.Queue()
        self._held: list[bytes] | None = None
        self.writer = gevent.spawn(self._write_loop)

    def wants(self, name: str) -> bool:
        return self.authed and (self.all_events or name in self.events)

    @property
    def listening(self) -> bool:
        return self.all_events or bool(self.events)

    def send_event(self, data: bytes) -> None:
        if self.closed:
            return
        if self._held is not None:
            self._held.append(data)
        else:
            self._queue.put(data)

    def send(self, data: bytes) -> None:
        if not self.closed:
            self._queue.put(data)

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        for data in held or ():
            self._queue.put(data)

    def close_after_flush(self) -> None:
        self._queue.put(_CLOSE)

    def abort(self) -> None:
        """Close at once, nothing more is written (a crashed or restarted switch)."""
        if self.closed:
            return
        self.closed = True
        self._queue.put(_CLOSE)
        _close_socket(self.sock)

    def _write_loop(self) -> None:
        queue = self._queue
        while True:
            item = queue.get()
            chunks: list[bytes] = []
            stop = item is _CLOSE
            if not stop:
                chunks.append(item)
                # coalesce what is already queued into one send: bursts of small frames
                while len(chunks) < 512:
                    try:
                        nxt = queue.get_nowait()
                    except gevent.queue.Empty:
                        break
                    if nxt is _CLOSE:
                        stop = True
                        break
                    chunks.append(nxt)
            if chunks and not self.closed:
                try:
                    self.sock.sendall(b"".join(chunks))
                except OSError:
                    stop = True
            if stop:
                self.closed = True
                _close_socket(self.sock)
                return


def _close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class StandinSwitch:
    """A FreeSWITCH look-alike speaking ESL on a real TCP port.

    ``sw.channels`` maps uuid -> :class:`~channelsd.standin.channels.Channel`; the call-control
    methods emit exactly the events FreeSWITCH emits for the same transition, to every
    connected, subscribed client, in each client's format.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        password: str = "ClueCon",
        hostname: str = "standin1",
        core_uuid: str | None = None,
        *,
        ipv4: str | None = None,
        ipv6: str = "::1",
        seed: int = 0,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.hostname = hostname
        self.builder = EventBuilder(hostname, ipv4 or host, ipv6, core_uuid or new_uuid())
        self.model = CallModel(self.builder, self.emit)
        self.api = Api(self)
        # a digit binding's api: action runs an api command like any other (API event too)
        self.model.api_hook = lambda command, arg: self.api.execute(command, arg).decode(
            "utf-8", "replace"
        )
        self.crashes = 0
        self.started_us = now_us()
        self.heartbeat_interval = heartbeat_interval
        # misbehaviour controls
        self.reply_delay = 0.0
        self.hang_commands = False
        self.sql_disabled = False
        # uuids `show channels` leaves out, as FreeSWITCH's asynchronously written SQL table
        # does for a channel created a moment ago
        self.hide_from_listing: set[str] = set()
        self.drop_event_fraction = 0.0
        self.drop_event_names: set[str] = {"CHANNEL_DESTROY"}
        # events_held(): which events wait (None: none, empty: all), and those waiting
        self._held_names: frozenset[str] | None = None
        self._held_frames: list[tuple[Connection, bytes]] = []
        # Events fired while an `api` command runs: sent after its reply (see _cmd_api).
        self._after_reply: list[tuple[Connection, bytes]] | None = None
        self.seed = seed
        self._rng: random.Random | None = None
        self._rng_seed: int | None = None
        # recording
        self.received: list[tuple[int, str]] = []
        self.events_emitted = 0
        self.events_dropped = 0
        self.connections: list[Connection] = []
        self._ids = itertools.count(1)
        self._server: StreamServer | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._heartbeat_glet: gevent.Greenlet | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def core_uuid(self) -> str:
        return self.builder.core_uuid

    @property
    def channels(self) -> dict[str, Channel]:
        return self.model.channels

    def start(self) -> StandinSwitch:
        """Bind and serve in background greenlets; returns at once."""
        self._listen()
        if self.heartbeat_interval:
            self._heartbeat_glet = gevent.spawn(self._heartbeat_loop)
        return self

    def _listen(self) -> None:
        server = StreamServer((self.host, self.port), self._handle)
        server.start()
        self._server = server
        self.port = server.address[1]

    def stop(self) -> None:
        """Close the listener and every connection."""
        self.model.stop_timers()
        if self._heartbeat_glet is not None:
            self._heartbeat_glet.kill(block=False)
            self._heartbeat_glet = None
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_connections()
        gevent.killall(self._greenlets, block=False)
        self._greenlets.clear()

    def __enter__(self) -> StandinSwitch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pause_accept(self, paused: bool) -> None:
        """Refuse new connections (listener closed) or accept again on the same port."""
        if paused and self._server is not None:
            self._server.close()
            self._server = None
        elif not paused and self._server is None:
            self._listen()

    def drop_connections(self) -> None:
        """Abruptly close every client socket (no disconnect notice)."""
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()

    def restart(self, keep_channels: bool = False) -> None:
        """Simulate a switch restart: connections drop, Core-UUID changes, channels are
        forgotten (or kept, to model a fast restart that recovered them).  Listener stays."""
        self.drop_connections()
        self.builder.core_uuid = new_uuid()
        self.builder.reset_sequence()
        self.started_us = now_us()
        if not keep_channels:
            self.model.reset()

    def crash(self) -> None:
        """The switch crashed (reference §6.3: a segfault) and came back: connections drop
        with no reply, and it restarts with a new Core-UUID and no calls."""
        self.crashes += 1
        self.restart(keep_channels=False)

    # ------------------------------------------------------------------ event fan-out
    def _drop(self, name: str) -> bool:
        if self.drop_event_fraction <= 0 or name not in self.drop_event_names:
            return False
        if self._rng is None or self._rng_seed != self.seed:
            self._rng, self._rng_seed = random.Random(self.seed), self.seed
        return self._rng.random() < self.drop_event_fraction

    def emit(self, event: Event) -> None:
        """Deliver one fired event to every subscribed connection, in its format."""
        self.events_emitted += 1
        if self._drop(event.name):
            self.events_dropped += 1
            return
        name = event.name
        hold = self._held_names is not None and (not self._held_names or name in self._held_names)
        for conn in self.connections:
            if conn.wants(name):
                if hold:
                    self._held_frames.append((conn, event.frame(conn.fmt)))
                elif self._after_reply is not None:
                    self._after_reply.append((conn, event.frame(conn.fmt)))
                else:
                    conn.send_event(event.frame(conn.fmt))

    @contextmanager
    def events_held(self, names: Iterable[str] = ()) -> Iterator[None]:
        """Events fired meanwhile (only those named, if any are) reach the clients when the
        block ends, in order: a switch whose event connection lags its command connection
        (a client's command has been answered, the events it caused are still on their way).
        """
        self._held_names = frozenset(names)
        self._held_frames = []
        try:
            yield
        finally:
            held, self._held_frames, self._held_names = self._held_frames, [], None
            for conn, data in held:
                conn.send_event(data)

    def send_frames(self, frames: Iterable[Frame]) -> None:
        """Write recorded frames verbatim to every authenticated connection subscribed to the
        frame's Event-Name (whatever that connection's format)."""
        conns = self.connections
        for frame in frames:
            name = frame.event_name or ""
            for conn in conns:
                if conn.wants(name):
                    conn.send_event(frame.raw)

    def fire(
        self, name: str, headers: Iterable[tuple[str, str]] = (), body: str | None = None
    ) -> None:
        """Fire an arbitrary non-channel event (tests, demos)."""
        self.emit(self.builder.simple(name, list(headers), body))

    # ------------------------------------------------------------------ call control
    def originate(
        self,
        dest: str = "9000",
        variables: dict[str, Any] | None = None,
        answer: bool = True,
        app: str = "park",
        **kw: Any,
    ) -> tuple[str, str]:
        return self.model.originate(dest, variables, answer=answer, app=app, **kw)

    def bridged_call(
        self,
        variables_a: dict[str, Any] | None = None,
        variables_b: dict[str, Any] | None = None,
        caller: tuple[str, str] = ("Alice", "1001"),
        callee: tuple[str, str] = ("Bob", "1002"),
        answer: bool = True,
        **kw: Any,
    ) -> tuple[str, str]:
        return self.model.bridged_call(variables_a, variables_b, caller, callee, answer, **kw)

    def answer(self, uuid: str) -> None:
        self.model.answer(uuid)

    def hold(self, uuid: str) -> None:
        self.model.hold(uuid)

    def unhold(self, uuid: str) -> None:
        self.model.unhold(uuid)

    def park(self, uuid: str) -> None:
        self.model.park(uuid)

    def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING") -> None:
        self.model.hangup(uuid, cause)

    def broadcast(self, uuid: str, path: str, leg: str | None = "aleg") -> None:
        """Like ``uuid_broadcast`` (``leg=None`` is the form without a leg word)."""
        self.model.broadcast(uuid, path, leg)

    def recv_dtmf(self, uuid: str, digits: str) -> None:
        """Like ``uuid_recv_dtmf``: the leg's phone pressed ``digits``."""
        self.model.recv_dtmf(uuid, digits)

    def transfer(
        self, uuid: str, dest: str, dialplan: str = "XML", context: str = "default"
    ) -> None:
        self.model.transfer(uuid, dest, dialplan, context)

    def set_variable(self, uuid: str, name: str, value: Any) -> None:
        """Like ``uuid_setvar`` from another ESL client: only an API event, no channel event."""
        self.model.get(uuid)
        arg = f"{uuid} {name}" + ("" if value is None else f" {value}")
        self.emit(
            self.builder.simple(
                "API", [("API-Command", "uuid_setvar"), ("API-Command-Argument", arg)]
            )
        )
        self.model.set_variable(uuid, name, value)

    def heartbeat(self) -> None:
        """HEARTBEAT (Session-Count = live channels) followed by its RE_SCHEDULE, as captured."""
        up = now_us() - self.started_us
        m = self.model
        live = len(m.live())
        self.emit(
            self.builder.simple(
                "HEARTBEAT",
                [
                    ("Event-Info", "System Ready"),
                    ("Up-Time", uptime_text(up)),
                    ("FreeSWITCH-Version", VERSION),
                    ("Uptime-msec", str(up // 1000)),
                    ("Session-Count", str(live)),
                    ("Max-Sessions", "1000"),
                    ("Session-Per-Sec", "1000"),
                    ("Session-Per-Sec-Last", str(m.sessions_per_second())),
                    ("Session-Per-Sec-Max", str(max(1, m.peak))),
                    ("Session-Per-Sec-FiveMin", str(max(1, m.peak))),
                    ("Session-Since-Startup", str(m.sessions_since_startup)),
                    ("Session-Peak-Max", str(m.peak)),
                    ("Session-Peak-FiveMin", str(m.peak)),
                    ("Idle-CPU", "98.200000"),
                ],
            )
        )
        self.emit(
            self.builder.simple(
                "RE_SCHEDULE",
                [
                    ("Task-ID", "1"),
                    ("Task-Desc", "heartbeat"),
                    ("Task-Group", "core"),
                    ("Task-Runtime", str(int(time.time()) + 20)),
                ],
            )
        )

    def _heartbeat_loop(self) -> None:
        while True:
            gevent.sleep(self.heartbeat_interval or 20)
            self.heartbeat()

    def global_vars(self) -> dict[str, str]:
        # FreeSWITCH sets core_uuid (and hostname) as global variables at start (switch_core.c)
        return {
            "hostname": self.hostname,
            "switch_serial": "",
            "core_uuid": self.core_uuid,
            "local_ip_v4": self.builder.ipv4,
            "local_ip_v6": self.builder.ipv6,
            "hold_music": GLOBAL_HOLD_MUSIC,
        }

    # ------------------------------------------------------------------ connection handling
    def _handle(self, sock: socket.socket, address: Any) -> None:
        conn = Connection(next(self._ids), sock, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.append(conn)
        conn.send(protocol.AUTH_REQUEST)
        reader = PacketReader()
        try:
            while not conn.closed and not conn.finished:
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                for packet in reader.feed(data):
                    self.received.append((conn.id, packet.raw))
                    self._dispatch(conn, packet)
                    if conn.closed or conn.finished:
                        break
        finally:
            if conn in self.connections:
                self.connections.remove(conn)
            # gevent closes the socket when this handler returns: let the writer flush the
            # last replies (+OK bye, disconnect notice) first
            conn.close_after_flush()
            conn.writer.join(timeout=5)
            conn.closed = True

    def _dispatch(self, conn: Connection, packet: Packet) -> None:
        line = packet.command
        word, _, rest = line.partition(" ")
        cmd = word.lower()
        rest = rest.strip()
        if cmd == "exit" or line.startswith("..."):
            self._goodbye(conn)
            return
        if not conn.authed:
            if cmd == "auth":
                if rest == self.password:
                    conn.authed = True
                    conn.send(protocol.command_reply(replies.AUTH_ACCEPTED))
                else:
                    conn.send(protocol.command_reply(replies.AUTH_INVALID))
                    conn.send(protocol.disconnect_notice())
                    self._finish(conn)
            else:
                conn.send(protocol.command_reply(replies.COMMAND_NOT_FOUND))
            return
        handler = getattr(self, f"_cmd_{cmd}", None)
        if handler is None:
            conn.send(protocol.command_reply(replies.COMMAND_NOT_FOUND))
            return
        handler(conn, rest, packet)

    def _goodbye(self, conn: Connection) -> None:
        conn.send(protocol.command_reply(replies.BYE))
        conn.send(protocol.disconnect_notice())
        self._finish(conn)

    def _finish(self, conn: Connection) -> None:
        """No more commands or events for ``conn``; queued bytes still go out."""
        conn.finished = True
        if conn in self.connections:
            self.connections.remove(conn)
        conn.close_after_flush()

    def _wait_hung(self, conn: Connection) -> bool:
        """Block while ``hang_commands`` is set; False when the connection went away."""
        while self.hang_commands:
            if conn.closed or conn.finished:
                return False
            gevent.sleep(0.05)
        return not conn.closed

    # -- api / bgapi ----------------------------------------------------------------------------
    def _cmd_api(self, conn: Connection, rest: str, packet: Packet) -> None:
        if not rest:
            conn.send(protocol.command_reply(replies.COMMAND_NOT_FOUND))
            return
        command, _, arg = rest.partition(" ")
        # FreeSWITCH runs an api command in the connection's own thread and writes its reply
        # there; the events it fired go through the event dispatch thread and reach every
        # listener after it (the captures: uuid_kill's reply 19 ms before its hang-up events).
        conn.hold()
        try:
            if self.reply_delay:
                gevent.sleep(self.reply_delay)
            if not self._wait_hung(conn):
                return
            self._after_reply = fired = []
            try:
                conn.send(protocol.api_response(self.api.execute(command, arg.strip())))
            finally:  # the reply is queued first (if there is one), then what it fired
                self._after_reply = None
                for other, data in fired:
                    other.send_event(data)
        finally:
            conn.release()

    def _cmd_bgapi(self, conn: Connection, rest: str, packet: Packet) -> None:
        if not rest:
            conn.send(protocol.command_reply(replies.COMMAND_NOT_FOUND))
            return
        job = packet.headers.get("Job-UUID") or new_uuid()
        if self.reply_delay:
            gevent.sleep(self.reply_delay)
        if not self._wait_hung(conn):
            return
        conn.send(protocol.command_reply(replies.job_accepted(job), [("Job-UUID", job)]))
        command, _, arg = rest.partition(" ")
        glet = gevent.spawn(self._run_job, job, command, arg.strip())
        self._greenlets.append(glet)
        glet.link(lambda g: self._greenlets.remove(g) if g in self._greenlets else None)

    def _run_job(self, job: str, command: str, arg: str) -> None:
        crashes = self.crashes
        body = self.api.execute(command, arg).decode("utf-8", "replace")
        if self.crashes != crashes:
            return  # the switch died running it: no job result ever comes
        headers = [("Job-UUID", job), ("Job-Command", command)]
        if arg:
            headers.append(("Job-Command-Arg", arg))
        self.emit(self.builder.simple("BACKGROUND_JOB", headers, body))

    # -- subscriptions ----------------------------------------------------------------------
    def _parse_names(self, conn: Connection, rest: str, add: bool) -> int:
        count = 0
        custom = False
        for token in rest.split():
            low = token.lower()
            if low in ("plain", "json", "xml") and add:
                conn.fmt = low
                continue
            if custom:
                count += 1  # CUSTOM subclasses: accepted, never fired by the stand-in
                continue
            name = token.upper()
            if name.startswith("SWITCH_EVENT_"):
                name = name[len("SWITCH_EVENT_") :]
            if name not in EVENT_NAMES:
                continue
            count += 1
            if name == "CUSTOM":
                custom = True
            if name == "ALL":
                conn.all_events = add
                if not add:
                    conn.events.clear()
            elif add:
                conn.events.add(name)
            else:
                conn.events.discard(name)
        return count

    def _cmd_event(self, conn: Connection, rest: str, packet: Packet) -> None:
        if self._parse_names(conn, rest, add=True):
            conn.send(protocol.command_reply(replies.listener_enabled(conn.fmt)))
        else:
            conn.send(protocol.command_reply(replies.NO_KEYWORDS))

    def _cmd_nixevent(self, conn: Connection, rest: str, packet: Packet) -> None:
        if self._parse_names(conn, rest, add=False):
            conn.send(protocol.command_reply(replies.EVENTS_NIXED))
        else:
            conn.send(protocol.command_reply(replies.NO_KEYWORDS))

    def _cmd_noevents(self, conn: Connection, rest: str, packet: Packet) -> None:
        if conn.listening:
            conn.all_events = False
            conn.events.clear()
            conn.send(protocol.command_reply(replies.NO_LONGER_LISTENING))
        else:
            conn.send(protocol.command_reply(replies.NOT_LISTENING))

    def _cmd_filter(self, conn: Connection, rest: str, packet: Packet) -> None:
        # replies as captured; the stand-in does not apply filters (channelsd must not use them)
        parts = rest.split(None, 1)
        if len(parts) < 2:
            conn.send(protocol.command_reply(replies.INVALID_SYNTAX))
            return
        if parts[0] == "delete":
            conn.send(protocol.command_reply(replies.filter_deleted(parts[1])))
            return
        header, _, value = rest.partition(" ")
        conn.send(protocol.command_reply(replies.filter_added(header, value)))

    def _cmd_myevents(self, conn: Connection, rest: str, packet: Packet) -> None:
        conn.send(protocol.command_reply(replies.EVENTS_ENABLED))

    def _cmd_log(self, conn: Connection, rest: str, packet: Packet) -> None:
        level = rest.strip().lower() or "debug"
        num = int(level) if level.isdigit() else LOG_LEVELS.get(level)
        if num is None or not 0 <= num <= 7:
            conn.send(protocol.command_reply(replies.INVALID_LOG_LEVEL))
            return
        conn.log_level = num
        names = {v: k for k, v in LOG_LEVELS.items() if k != "error"}
        conn.send(protocol.command_reply(replies.log_level(names[num].upper(), num)))

    def _cmd_nolog(self, conn: Connection, rest: str, packet: Packet) -> None:
        if conn.log_level is None:
            conn.send(protocol.command_reply(replies.NOT_LOGGING))
        else:
            conn.log_level = None
            conn.send(protocol.command_reply(replies.NO_LONGER_LOGGING))

    def _cmd_linger(self, conn: Connection, rest: str, packet: Packet) -> None:
        conn.send(protocol.command_reply(replies.NOT_CONTROLLING))

    _cmd_nolinger = _cmd_linger

    def _cmd_sendmsg(self, conn: Connection, rest: str, packet: Packet) -> None:
        uid = rest.strip()
        if self.model.locate(uid) is None:
            conn.send(protocol.command_reply(replies.invalid_session(uid)))
            return
        headers = {k.lower(): v for k, v in packet.headers.items()}
        command = headers.get("call-command", "")
        if command == "hangup":
            cause = headers.get("hangup-cause", "NORMAL_CLEARING")
            self.model.hangup(uid, cause)
        elif command == "execute" and headers.get("execute-app-name") == "park":
            self.model.park(uid)
        elif command == "execute" and headers.get("execute-app-name") in BROADCAST_APPS:
            # reference §2.1: sendmsg execute att_xfer gives the events of the aleg broadcast
            arg = headers.get("execute-app-arg")
            if arg is None:
                arg = packet.body.decode("utf-8", "replace").rstrip("\n")
            self.model.execute_app(uid, headers["execute-app-name"], arg)
        conn.send(protocol.command_reply(replies.SENDMSG_OK))
