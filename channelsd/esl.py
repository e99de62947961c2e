"""One ESL connection to a FreeSWITCH node, built on greenswitch's InboundESL.

greenswitch keeps the socket, the reader greenlet and FIFO reply pairing. What it lacks for a
daemon is added here (freeswitch-esl.md §4):

* it cannot parse text/event-json and URL-decodes plain events before splitting them, so
  event bodies are decoded by channelsd.events instead;
* a short read at EOF makes it loop forever, and an unexpected reply kills its reader while
  `connected` stays True, so both now end the connection cleanly;
* pending commands are never released when the socket drops, so they are failed here;
* `send` is not serialised and has no timeout, so writes are locked and every command has
  a deadline after which the connection is torn down (the reply order is lost by then);
* a command containing a line break would be a second command, so it is refused outright;
* its dispatcher greenlet sits behind an unbounded queue that grows without limit in a burst,
  so events are applied in the reader itself, which yields every YIELD_EVERY frames;
* it reads whatever the peer sends for as long as it sends it. Here every frame is bounded
  (a header block by MAX_HEADER_BYTES, a body by its kind's limit), the search for a header
  block's end only looks at bytes not searched yet, and a long body read visits the hub
  every YIELD_BYTES: a gevent recv that always finds data never switches by itself, so a
  peer sending without pause would otherwise hold the whole daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket as pysocket
import termios
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
import gevent.lock
from greenswitch.esl import InboundESL, NotConnectedError

from channelsd import turns
from channelsd.events import EventParseError, parse_json, parse_plain

log = logging.getLogger("channelsd.esl")

# Called with the parsed event and a hint for cheap byte searches: the body it came from, or
# (a picked event) bytes holding every picked header that starts with the table's prefix.
EventHandler = Callable[[dict[str, Any], bytes], None]
# Cuts the json event frames in a row at buf[pos:] (buf, pos, budget, shift, max_body): their
# picks (None: parse that body whole), bodies, hints, the position after them and whether the
# picks still hold (False once what they were picked for, the table's identity, has changed:
# the hub may run while a cut's events are applied); or None.
Cutter = Callable[
    [bytes, int, int, int, int],
    tuple[list[dict[str, Any] | None], list[bytes], list[bytes], int, Callable[[], bool]] | None,
]


class ESLError(Exception):
    """Base class for connection-level failures."""


class ConnectionLost(ESLError):
    """The socket closed before the command was answered."""


class CommandTimeout(ESLError):
    """FreeSWITCH did not answer within the deadline."""


class ProtocolError(ESLError):
    """The peer sent something that is not ESL as FreeSWITCH speaks it."""


class FrameTooLarge(ESLError):
    """An event (or other frame channelsd does not need) larger than MAX_EVENT_BYTES: read
    past and dropped, the connection kept."""


class _Frame:
    """One frame's outer headers; a command's reply also gets .data (and .raw for api)."""

    __slots__ = ("headers", "_data", "raw")

    def __init__(self, headers: dict[str, str], data: str | None = "", raw: bytes = b"") -> None:
        self.headers = headers
        self._data = data
        self.raw = raw

    @property
    def data(self) -> str:
        """The reply as text; an api body is decoded when asked (a reconcile reads its
        thousands of uuid_dump bodies as bytes and never needs them as text)."""
        if self._data is None:
            self._data = self.raw.decode("utf-8", "replace")
        return self._data


_FORBIDDEN_IN_COMMAND = frozenset("\r\n\x00\u2028\u2029\x85")
# Frames handled in a row before the reader lets HTTP requests and other nodes run: about
# turns.BUDGET of json events (~7 µs each here), one turn per iteration of the hub. At 100,
# twenty nodes' readers took turns a third as long, each coming back to its socket buffer
# after the other nineteen's; the same events cost the hub ~0.1 s more a round spread over
# twenty nodes than from one. With 300 that was ~0.04 s in one suite of six runs and ~0.1 s
# again in the next (BENCHMARKS.md, 2026-12-05 night): a likely gain, not a settled one.
YIELD_EVERY = 300
# One socket read: dozens of events in a burst, and FreeSWITCH's big listings in a few reads.
RECV_BYTES = 256 * 1024
# A frame counts as one more for each 4 KiB of its body (FreeSWITCH's events are 0.5-10 KB; a
# Kazoo channel's ~2.6 KB counts one), events, replies, log lines and bodies read past alike,
# so that YIELD_EVERY frames stay a few milliseconds of work whatever their size.
BIG_EVENT_SHIFT = 12
# What one turn reads of bodies, at most, before the frame that ends it (a frame is counted
# once taken: the last may be up to MAX_EVENT_BYTES, or a reply; tests/test_esl_limits.py
# holds the reader to it).
TURN_BYTES = YIELD_EVERY << BIG_EVENT_SHIFT
# A header block parsed here (every frame but the json event's two standard headers) counts
# one more frame per 256 bytes: its lines are split and read in Python, some ten times a body
# byte's work. FreeSWITCH's (26 to 137 bytes) count nothing more; blocks of up to
# MAX_HEADER_BYTES counted as one frame each let a switch make a turn read 300 of them, ~19 MB
# and 0.6 s between visits to the hub (found by an outside attack).
HEADER_SHIFT = 8
# Bytes read into (or past) one body between visits to the hub: about a millisecond of copying.
YIELD_BYTES = 1024 * 1024
# FreeSWITCH's outer header blocks are a few short lines (captured: 26 to 137 bytes); this is
# hundreds of times that. A block without its blank line past it is not ESL: the connection
# is reset, as for any framing error.
MAX_HEADER_BYTES = 64 * 1024
# Of a dropped frame's Content-Type (the peer's text, a header block long at most) the
# warning shows this much: FreeSWITCH's longest is `text/disconnect-notice`, 22 characters.
CTYPE_SHOWN = 80
# An event's body (captured: at most 10 KB, a CHANNEL_* event carrying every variable). One
# larger is read past without being kept, dropped and counted: its framing is intact, and
# another client's `bgapi` result (BACKGROUND_JOB, broadcast to every subscriber) may be big.
MAX_EVENT_BYTES = 1024 * 1024
# A plain event's body is read a line at a time in Python (events.parse_plain, each value
# URL-decoded): it costs a turn as a header block does (HEADER_SHIFT), and one larger than this
# is read past, dropped and counted. channelsd asks for json; FreeSWITCH's plain events are
# under 7 KB (captured). A 1 MiB plain body of escapes took 0.25 s to parse, ~175 ms between
# visits to the hub per frame (found by an outside attack).
MAX_PLAIN_EVENT_BYTES = 64 * 1024
# A reply to a command of ours: `show channels as json` is the largest (~0.9 KB a channel,
# so about 70,000 channels). Beyond this no frame is believed: the connection is reset.
MAX_FRAME_BYTES = 64 * 1024 * 1024
# Frames that answer a command: never skipped (the reply order would be lost).
_REPLIES = frozenset({"command/reply", "api/response"})
# The outer headers FreeSWITCH gives every json event: "Content-Length: N" and this.
_JSON_EVENT_TAIL = b"\nContent-Type: text/event-json"
_JSON_EVENT_CUT = -len(_JSON_EVENT_TAIL)


class ESLConnection(InboundESL):
    """An authenticated inbound ESL connection with timeouts and a clean end."""

    # Commands sent on any connection of this process and not answered yet. While there are
    # some, event readers let the hub run after every event instead of every YIELD_EVERY, so
    # an action's answer is not held behind the burst of events the action itself caused.
    awaiting = 0

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        label: str = "",
        timeout: float = 5.0,
        on_event: EventHandler | None = None,
        on_parse_error: Callable[[Exception], None] | None = None,
        parse_json: Callable[[bytes], dict[str, Any]] = parse_json,
        cut: Cutter | None = None,
        on_picked: EventHandler | None = None,
        on_delivered: Callable[[list[dict[str, Any] | None]], None] | None = None,
    ) -> None:
        super().__init__(host, port, password, timeout=timeout)
        self.label = label or f"{host}:{port}"
        self._send_lock = gevent.lock.Semaphore()
        self._on_event = on_event
        self._on_parse_error = on_parse_error
        # json events' parser: the whole body, or only what the table reads (eventpick.py)
        self._parse_json = parse_json
        # and json event frames in a row, cut and picked in one call (eventpick.TableReader)
        self._cut = cut if on_event is not None else None
        # A cut's picks go to on_picked (on_event when none is given): the node's table
        # takes them directly, a Python call per event less than through the node.
        self._on_picked = on_picked or on_event
        # And then, once a cut, the picks it delivered (not those a close cut short): the
        # node counts them there, as its on_event counts what it is given.
        self._on_delivered = on_delivered
        self.closed = gevent.event.Event()
        self.close_reason = ""
        self.last_rx = time.monotonic()
        self.answered_at = 0.0  # when the last reply arrived (commands' deadlines run from it)
        # Bytes the reader has received, and how many of them it had handled (every whole
        # frame among them) when it last went back to the socket: a deadline that passed
        # while the hub was busy elsewhere is called only once the reader has handled what
        # had arrived by then (_caught_up).
        self.rx_total = 0
        self.handled = 0
        self._catching_up = 0
        self._progress = gevent.event.Event()
        self.parse_errors = 0
        self._since_yield = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect and authenticate within `timeout`, or raise and leave nothing running."""
        try:
            with gevent.Timeout(self.timeout, CommandTimeout("connect/auth timed out")):
                super().connect()
        except ValueError:
            self.close("authentication refused")
            raise ESLError("FreeSWITCH refused the ESL password") from None
        except BaseException as exc:
            self.close(f"connect failed: {exc}")
            if isinstance(exc, NotConnectedError | OSError | ESLError | gevent.Timeout):
                raise ESLError(
                    f"cannot connect to {self.label}: {exc or type(exc).__name__}"
                ) from None
            raise
        with contextlib.suppress(OSError):
            self.sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_KEEPALIVE, 1)
            # Commands are small writes, each whole in one send. With Nagle, one sent while
            # another is unanswered waits for the switch's ACK of the first, which comes with
            # its reply or a delayed ACK (up to 40 ms): concurrent actions queue behind it.
            self.sock.setsockopt(pysocket.IPPROTO_TCP, pysocket.TCP_NODELAY, 1)

    def authenticate(self) -> None:
        reply = self._send_raw(f"auth {self.password}", log_text="auth ********")
        if reply.headers.get("Reply-Text") != "+OK accepted":
            raise ValueError("Invalid password.")

    @property
    def alive(self) -> bool:
        return self.connected and not self.closed.is_set()

    def close(self, reason: str = "closed") -> None:
        """Tear down at once: never blocks, fails every pending command."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.connected = False
        self._run = False
        self.closed.set()
        pending, self._commands_sent = self._commands_sent, []
        for result in pending:
            if not result.ready():
                result.set_exception(ConnectionLost(f"{self.label}: {reason}"))
        sock = getattr(self, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(pysocket.SHUT_RDWR)
            sock.close()
        self._auth_request_event.set()
        self._progress.set()

    def goodbye(self, timeout: float = 2.0) -> None:
        """Say `exit` as a polite client does, then close whatever the answer."""
        if self.alive:
            with contextlib.suppress(ESLError):
                self.command("exit", timeout=timeout)
        self.close("exit")

    # -- commands ----------------------------------------------------------------------------

    def command(self, text: str, timeout: float | None = None) -> Any:
        """Send one command and wait for its reply; a missed deadline (pipeline's) closes the
        connection."""
        limit = self.timeout if timeout is None else timeout
        result = self._write([text], limit)[0]
        return self._reply(text, result, time.monotonic(), limit)

    def api(self, cmd: str, timeout: float | None = None) -> str:
        """Run `api <cmd>` and return the body FreeSWITCH answered."""
        return self.command(f"api {cmd}", timeout).data

    def send(self, data: str) -> Any:  # greenswitch's name, kept for its stop()/connect()
        return self._send_raw(data)

    def _send_raw(self, data: str, log_text: str | None = None) -> Any:
        result = self._send_all([data])[0]
        ESLConnection.awaiting += 1
        try:
            log.debug("%s > %s", self.label, log_text or data)
            return result.get()
        finally:
            ESLConnection.awaiting -= 1

    def _send_all(self, texts: list[str]) -> list[gevent.event.AsyncResult]:
        """Write commands in one go; their replies come in order, one result each."""
        for data in texts:
            if _FORBIDDEN_IN_COMMAND.intersection(data):
                # Every caller validates its arguments; this is the last line of defence.
                raise ValueError("refusing to send an ESL command containing a line break")
        try:
            # Before a reply is queued: one queued for a command never written would be
            # handed the next command's reply, and every reply after would be one behind.
            payload = "".join([t + "\n\n" for t in texts]).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("refusing to send an ESL command UTF-8 cannot hold") from None
        results = [gevent.event.AsyncResult() for _ in texts]
        with self._send_lock:
            # Checked under the lock: a writer ahead may have been blocked in sendall while the
            # connection closed, and a result queued after close() would never be answered.
            if not self.connected or self.closed.is_set():
                raise NotConnectedError()
            self._commands_sent.extend(results)
            try:
                # send, not sendall: gevent's sendall asks the kernel for the socket's buffer
                # size (a system call) on every call; a command is one small write.
                sent = self.sock.send(payload)
                if sent < len(payload):
                    self.sock.sendall(payload[sent:])
            except OSError as exc:
                self.close(f"write failed: {exc}")
        return results

    def pipeline(self, texts: list[str], timeout: float | None = None) -> Iterator[Any]:
        """Send several commands in one write and yield each reply as it arrives, in order:
        FreeSWITCH reads a connection's commands one after another and answers each before
        the next. For many questions at once (a reconcile's `uuid_dump`s) this is one system
        call and no greenlet per question.

        The write must be taken within `timeout`; each reply is late once the connection has
        answered nothing for `timeout` since its command was written. A command queued behind
        others (a reconcile's batch written ahead, an action behind it) waits for them: timing
        it from its write alone would fail a switch that takes a fraction of the deadline per
        command. Either miss closes the connection and raises CommandTimeout, as a lost
        connection raises ConnectionLost, at the reply it stopped at."""
        limit = self.timeout if timeout is None else timeout
        results = self._write(texts, limit)
        return self._replies(texts, results, time.monotonic(), limit)

    def _write(self, texts: list[str], limit: float) -> list[gevent.event.AsyncResult]:
        """_send_all within `limit`, or the connection closed and CommandTimeout raised."""
        try:
            with gevent.Timeout(limit, False):  # a switch that stops reading fills the socket
                results = self._send_all(texts)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s > %s (of %d)", self.label, texts[0], len(texts))
                return results
        except NotConnectedError:
            raise ConnectionLost(f"{self.label}: not connected") from None
        self.close(f"{len(texts)} command(s) not taken by the switch within {limit}s")
        raise CommandTimeout(f"{self.label}: the switch took no command within {limit}s")

    def _replies(
        self,
        texts: list[str],
        results: list[gevent.event.AsyncResult],
        written: float,
        limit: float,
    ) -> Iterator[Any]:
        for text, result in zip(texts, results, strict=True):
            yield self._reply(text, result, written, limit)

    def _reply(
        self, text: str, result: gevent.event.AsyncResult, written: float, limit: float
    ) -> Any:
        ESLConnection.awaiting += 1
        try:
            while not result.ready():
                left = max(written, self.answered_at) + limit - time.monotonic()
                if left <= 0:
                    if self._caught_up(result, limit):
                        break
                    continue  # a reply arrived meanwhile: the deadline runs from it
                result.wait(left)  # (not get(timeout=): a caller's own Timeout is not ours)
        finally:
            ESLConnection.awaiting -= 1
        if not result.ready():
            self.close(f"no reply to {text.split(' ', 2)[:2]} within {limit}s")
            raise CommandTimeout(f"{self.label}: no reply within {limit}s")
        return result.get()

    def _caught_up(self, result: gevent.event.AsyncResult, limit: float) -> bool:
        """At a deadline: wait until the reader has handled every byte that had arrived from
        the switch by now (read, or still in the socket), or `result` is ready; whether the
        deadline stands. The waiter's timer can run before the reader (a hub busy past the
        deadline wakes both at once; the reader takes turns of YIELD_EVERY events): a reply
        that reached this host in time is not late. Only what had arrived counts, so a
        switch that keeps sending without answering gains nothing, and a reader that cannot
        handle it within another `limit` leaves the deadline standing."""
        answered = self.answered_at
        mark = self.rx_total + self.unread()
        give_up = time.monotonic() + limit
        self._catching_up += 1
        try:
            while not result.ready() and self.handled < mark and self._run:
                left = give_up - time.monotonic()
                if left <= 0:
                    break
                self._progress.clear()
                self._progress.wait(left)
        finally:
            self._catching_up -= 1
        return result.ready() or self.answered_at == answered

    def unread(self) -> int:
        """Bytes from the switch waiting in the socket, not read yet."""
        sock = getattr(self, "sock", None)
        try:
            return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)), "little")
        except (OSError, ValueError, AttributeError):  # closed: nothing more will be read
            return 0

    def _recv(self) -> bytes:
        """The reader's one read of the socket (b"" at its end). Every whole frame received
        so far has been handled when it comes here (_caught_up waits for that); what arrives
        is counted, and is the connection's sign of life, whatever it holds.

        A read that waited for its socket (the hub polled meanwhile) begins a new turn,
        behind any bulk work in line, wherever the reader was: between frames, inside a
        body, or past a skipped one. A read the socket answered at once goes on with this
        turn, which YIELD_EVERY ends (frames, each costing its size: BIG_EVENT_SHIFT,
        HEADER_SHIFT): with twenty readers in line, a new turn at every read cost each read
        a pass through the line and the hub, and their turns a read long, not YIELD_EVERY
        (BENCHMARKS.md, 2026-12-06)."""
        self.handled = self.rx_total
        if self._catching_up:
            self._progress.set()
        polls = turns.polls()
        data = self.sock.recv(RECV_BYTES)
        if data:
            self.rx_total += len(data)
            self.last_rx = time.monotonic()
            if turns.polls() != polls:
                turns.begin()
        return data

    # -- reading (runs in greenswitch's reader greenlet) -------------------------------------

    def receive_events(self) -> None:
        try:
            self._read_frames()
            reason = "connection closed by FreeSWITCH"
        except Exception as exc:  # anything here means framing is lost: start over
            if self.closed.is_set():
                return  # we closed the socket under the reader ourselves
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("%s: reader stopped: %s", self.label, reason)
        self.close(self.close_reason or reason)

    def _read_frames(self) -> None:
        """Cut frames out of large socket reads, in bytes: the hot path of ingest.

        greenswitch reads a line at a time through a file object and URL-decodes every outer
        header (FreeSWITCH never encodes those); here one recv of up to RECV_BYTES carries
        dozens of events, and an event frame's two outer headers are recognised, not parsed.
        `scan` is where the search for the next blank line resumes: bytes already searched
        are never searched again, however slowly a header block arrives."""
        recv = self._recv
        cut = self._cut
        buf = b""
        pos = scan = 0
        while self._run:
            if cut is not None and ESLConnection.awaiting <= len(self._commands_sent):
                # The common case in one call: the json events in a row up to the next visit
                # to the hub (none when a command waits for its answer: _event lets it go
                # first). What it does not take, the framing below does.
                batch = cut(
                    buf, pos, YIELD_EVERY - self._since_yield, BIG_EVENT_SHIFT, MAX_EVENT_BYTES
                )
                if batch is not None and batch[1]:
                    picks, bodies, hints, pos, holds = batch
                    scan = pos
                    self._events(picks, bodies, hints, holds)
                    continue
            end = buf.find(b"\n\n", scan)
            if end < 0:
                if len(buf) - pos > MAX_HEADER_BYTES:
                    raise ProtocolError(f"a header block not ended within {MAX_HEADER_BYTES} bytes")
                data = recv()
                if not data:
                    return  # EOF
                if pos < len(buf):
                    buf = buf[pos:] + data
                    scan = len(buf) - len(data) - 1  # the blank line may span both reads
                else:
                    buf, scan = data, 0
                pos = 0
                continue
            if end - pos > MAX_HEADER_BYTES:
                raise ProtocolError(f"a header block longer than {MAX_HEADER_BYTES} bytes")
            block = buf[pos:end]
            start = end + 2
            digits = block[16:_JSON_EVENT_CUT]
            if (
                block.startswith(b"Content-Length: ")
                and block.endswith(_JSON_EVENT_TAIL)
                and digits.isdigit()
            ):
                headers = None  # how FreeSWITCH frames every json event
                length = _checked_length(digits)
                if length > MAX_EVENT_BYTES:
                    buf, pos = self._skip(buf, start, length, "text/event-json")
                    scan = pos
                    continue
            else:
                self._since_yield += len(block) >> HEADER_SHIFT  # (checked at the frame's end)
                headers = self._headers(block)
                if not headers:  # a stray blank line between frames is harmless
                    pos = scan = end + 1
                    self._tick()
                    continue
                if "Content-Length" not in headers:
                    pos = scan = start
                    self._dispatch(headers, None)
                    self._tick()
                    continue
                length = _checked_length(headers["Content-Length"])
                ctype = headers.get("Content-Type", "")
                if ctype in _REPLIES:
                    if not self._commands_sent:  # before reading what nobody asked for
                        raise ProtocolError(f"unsolicited {ctype}")
                elif length > _body_limit(ctype):
                    buf, pos = self._skip(buf, start, length, ctype)
                    scan = pos
                    continue
            stop = start + length
            if stop > len(buf):
                buf, start, stop = buf[start:], 0, length
                chunks = [buf]
                have = len(buf)
                unpaced = 0
                while have < stop:
                    data = recv()
                    if not data:
                        raise ConnectionLost(f"short read: wanted {stop} bytes")
                    chunks.append(data)
                    have += len(data)
                    unpaced += len(data)
                    if unpaced >= YIELD_BYTES:
                        unpaced = 0
                        _pause()
                buf = b"".join(chunks)
            pos = scan = stop
            if headers is None:
                self._event(buf[start:stop], self._parse_json)
            else:
                self._dispatch(headers, buf[start:stop])
                if ctype not in _EVENT_TYPES:  # (_event counted the events)
                    self._tick(length)

    def _skip(self, buf: bytes, start: int, length: int, ctype: str) -> tuple[bytes, int]:
        """Read past a body too large to keep, without keeping it: the buffer and position
        just after it. The frame is dropped and counted as an unusable event."""
        stop = start + length
        if stop <= len(buf):
            rest, at = buf, stop
        else:
            left = stop - len(buf)
            unpaced = 0
            while True:
                data = self._recv()
                if not data:
                    raise ConnectionLost(f"short read: {left} bytes of a body missing")
                if len(data) >= left:
                    rest, at = data, left
                    break
                left -= len(data)
                unpaced += len(data)
                if unpaced >= YIELD_BYTES:
                    unpaced = 0
                    _pause()
        self.parse_errors += 1
        # The Content-Type is the switch's (or a peer's) text, up to a header block long:
        # cut short as a malformed line is, so the warning stays a line's length.
        exc = FrameTooLarge(
            f"a {ctype[:CTYPE_SHOWN] or 'frame'} body of {length} bytes"
            f" (limit {_body_limit(ctype)})"
        )
        if self._on_parse_error:
            self._on_parse_error(exc)
        log.warning("%s: dropped %s", self.label, exc)
        self._tick(length)
        return rest, at

    @staticmethod
    def _headers(block: bytes) -> dict[str, str]:
        headers: dict[str, str] = {}
        for line in block.decode("utf-8").split("\n"):
            if not line:
                continue
            name, sep, value = line.rstrip("\r").partition(": ")
            if not sep:
                raise ProtocolError(f"malformed header line {line[:60]!r}")
            headers[name] = value
        return headers

    def process_events(self) -> None:
        # Events are applied by the reader (_dispatch); greenswitch's dispatcher greenlet
        # has nothing to do.
        return

    def _event(
        self,
        body: bytes,
        parse: Callable[[bytes], dict[str, Any]],
        handler: EventHandler | None = None,
    ) -> None:
        """Parse one event and hand it to `handler` (on_event when none is given)."""
        if ESLConnection.awaiting > len(self._commands_sent):
            self._answers_first()
        try:
            parsed = parse(body)
        except EventParseError as exc:
            self.parse_errors += 1
            if self._on_parse_error:
                self._on_parse_error(exc)
            log.warning("%s: dropped an unparseable event: %s", self.label, exc)
        else:
            # Applied here, in the reader: no queue hop, and the socket is read no faster
            # than the table can take it (FreeSWITCH queues meanwhile), instead of an
            # unbounded queue growing in memory while HTTP requests starve.
            if handler is None:
                handler = self._on_event
            if handler is not None:
                try:
                    handler(parsed, body)
                except Exception:  # a bug in one event's handling must not end the reader
                    self._handler_failed(parsed)
        # A big event costs its size to parse (one more frame per 4 KiB of it), and one that
        # does not parse costs its frame too: a switch sending only broken events must not
        # hold the hub. (_tick, inlined: this is the hot path of ingest.)
        self._since_yield += 1 + (len(body) >> BIG_EVENT_SHIFT)
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            _pause()

    def _events(
        self,
        picks: list[dict[str, Any] | None],
        bodies: list[bytes],
        hints: list[bytes | None],
        holds: Callable[[], bool],
    ) -> None:
        """The events of one cut (see _read_frames), as _event would take them one by one.
        A handler may let the hub run (and so may _event, to let a command's answer go
        first): what ran meanwhile may have closed the connection, after which nothing more
        is delivered (_read_frames checks between frames), or changed what the picks were
        made for, after which each body is picked anew."""
        on_picked = self._on_picked
        assert on_picked is not None  # no cutter without a handler
        delivered = 0
        # What the picked events cost (as _event counts it), added to _since_yield once, and
        # before each _event, which adds its own (or resets it, to let a command go first).
        spent = 0
        try:
            for picked, body, hint in zip(picks, bodies, hints, strict=True):
                if not self._run:
                    break  # closed meanwhile: as _read_frames stops before its next frame
                delivered += 1
                if (
                    picked is None
                    or ESLConnection.awaiting > len(self._commands_sent)
                    or not holds()
                ):
                    self._since_yield += spent
                    spent = 0
                    if picked is None:
                        self._event(body, parse_json)  # parsed whole: an event like any other
                    else:
                        # (a handler let the hub run) a command waits for its answer: _event
                        # lets it go first, then picks this body anew; or the picks no longer
                        # hold (a new identity): picked anew too. Still one of the cut's for
                        # on_picked.
                        self._event(body, self._parse_json, on_picked)
                    continue
                try:
                    on_picked(picked, hint)
                except Exception:  # as in _event
                    self._handler_failed(picked)
                spent += 1 + (len(body) >> BIG_EVENT_SHIFT)
        finally:
            self._since_yield += spent
            # What a close cut short was never delivered: not counted either (nor counted
            # first and taken back: a scrape may read the count while a handler lets the
            # hub run, and a counter must not go down).
            if self._on_delivered is not None and delivered:
                self._on_delivered(picks if delivered == len(picks) else picks[:delivered])
        if self._since_yield >= YIELD_EVERY:
            self._since_yield = 0
            _pause()

    def _handler_failed(self, event: dict[str, Any]) -> None:
        """Log a handler's failure on an event (from an except block: with its traceback).
        Unlike greenswitch, the event's name, not its (PII-laden) body. The name is the
        switch's text: a line break in it is escaped by the log formatter (logs.escape), as in
        every line, so it is written as it is, not as a repr (whose escapes would be escaped
        once more)."""
        log.exception("%s: handler failed on %s", self.label, event.get("Event-Name", "?"))

    def _answers_first(self) -> None:
        """A command of this process waits for its answer: let it have it before this event.
        An action's reply and the events it caused arrive together (on two connections, or
        behind each other), and the hub may wake this reader first. One visit to the hub that
        reaches its next poll of the sockets lets the command connection's reader take the
        reply (a sleep(0) would not: the hub runs what is queued before it polls); the waiter
        it wakes is queued behind this reader, so while the command is still counted as
        waiting, a second visit (queued, no poll) puts this reader behind the waiter: the
        answer leaves before any event is parsed. A command that takes long costs each event
        two visits, never a wait."""
        self._since_yield = 0
        _poll()
        if ESLConnection.awaiting > len(self._commands_sent):
            _pause()

    def _tick(self, body_bytes: int = 0) -> None:
        """A frame handled, costing one more per 4 KiB of its body (BIG_EVENT_SHIFT; _event
        and _events count events the same way, inlined): every YIELD_EVERY, or at once while
        a command of this process waits for its answer, the hub runs (HTTP requests, other
        nodes, that command)."""
        self._since_yield += 1 + (body_bytes >> BIG_EVENT_SHIFT)
        if self._since_yield >= YIELD_EVERY or ESLConnection.awaiting > len(self._commands_sent):
            self._since_yield = 0
            _pause()

    def _dispatch(self, headers: dict[str, str], body: bytes | None) -> None:
        ctype = headers.get("Content-Type")
        if ctype == "text/event-json" or ctype == "text/event-plain":
            if body is None:
                raise ProtocolError(f"{ctype} frame without a Content-Length")
            if ctype == "text/event-json":
                self._event(body, self._parse_json)
            else:
                self._since_yield += len(body) >> HEADER_SHIFT  # (checked in _event)
                self._event(body, parse_plain)
        elif ctype == "command/reply" or ctype == "api/response":
            if ctype == "api/response":
                if body is None:
                    raise ProtocolError("api/response frame without a Content-Length")
                reply = _Frame(headers, None, body)  # listings are parsed from bytes
            else:
                reply = _Frame(headers, headers.get("Reply-Text", ""))
            if not self._commands_sent:
                raise ProtocolError(f"unsolicited {ctype}")
            self.answered_at = time.monotonic()  # the switch is at the next command
            self._commands_sent.pop(0).set(reply)
        elif ctype == "auth/request":
            self._auth_request_event.set()
        elif ctype == "text/disconnect-notice" or ctype == "text/rude-rejection":
            if body is not None:
                self.close_reason = body.decode("utf-8", "replace").strip() or ctype
            if headers.get("Content-Disposition") != "linger":
                self.close(self.close_reason or ctype)
        # log/data and anything newer: its body, if any, has been skipped already


_EVENT_TYPES = frozenset({"text/event-json", "text/event-plain"})


def _pause() -> None:
    """Let the hub poll its sockets and run (a function, so that tests can count the visits)."""
    turns.pause()


def _poll() -> None:
    """Let the hub poll its sockets before this reader goes on (a function, so that tests can
    count the visits)."""
    turns.poll()


def _body_limit(ctype: str) -> int:
    """The largest body of this frame type that is read and handled, not dropped."""
    return MAX_PLAIN_EVENT_BYTES if ctype == "text/event-plain" else MAX_EVENT_BYTES


def _checked_length(text: str | bytes) -> int:
    # ASCII digits only: int() would also take "+5", " 5", "1_0" and other scripts' digits.
    if not (text.isascii() and text.isdigit()):
        raise ProtocolError("frame without a usable Content-Length")
    if len(text) > 12:  # and int() of a long digit string is slow work of its own
        raise ProtocolError("implausible Content-Length")
    n = int(text)
    if n > MAX_FRAME_BYTES:
        raise ProtocolError(f"implausible Content-Length {n}")
    return n
