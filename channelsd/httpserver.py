"""The HTTP server: gevent's pywsgi with the limits a socket open to a network needs.

pywsgi itself has no timeouts and no connection limit (a Pool only stops accepting, which
leaves every new client, /healthz included, waiting in the kernel's backlog). Here:

* Every read from a client runs against the deadline of its phase: the request head must
  arrive within `header_timeout` of the connection (or of a keep-alive request's first
  byte), the next request within `idle_timeout`, the body within `body_timeout`. A total
  deadline, not a per-read one: a byte a second keeps no connection alive. (A connection
  the server first reads after its deadline has that one read: what its client sent is
  taken.) A write that makes no progress for `send_timeout` closes the connection. An event
  stream never reads after its request, so no read deadline cuts it; `send_timeout` and
  `max_streams` bound it.
* At most `max_connections` are open. At the limit the oldest connection that is waiting
  for its client (idle keep-alive, a half-sent request) is closed to make room: a crowd of
  silent or slow sockets cannot keep a real request out. When every connection is busy
  (answering, streaming), the new one gets a 503 in the API's envelope.
* Out of descriptors at accept (EMFILE): accepting pauses briefly, the oldest waiting
  connections are closed, and one line per interval is logged, not one per attempt.
* A fast lane (`lane`, channelsd.fastlists' plain GETs) is asked before the application for
  a kept-alive HTTP/1.1 GET; what it answers is written here, in the bytes the WSGI path
  would write (tests/test_fastlane.py). Such a GET whose head is already buffered whole, and
  plain, is read by channelsd.quickhead instead of pywsgi (tests/test_quickhead.py); so is a
  plain POST whose head and body are, for the actions' lane (`action_lane`,
  channelsd.fastactions; tests/test_fastactions.py).
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import resource
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import gevent.event
from gevent.pywsgi import MAX_REQUEST_LINE, Input, WSGIHandler, WSGIServer, format_date_time
from gevent.socket import wait_read

from channelsd import envelope, quickhead, turns
from channelsd.config import HttpLimits
from channelsd.envelope import ApiError
from channelsd.httpheaders import IndexedMessage, read_headers
from channelsd.logs import RateLimited, mask
from channelsd.metrics import Metrics
from channelsd.sendmany import Line

log = logging.getLogger("channelsd.http")

BACKLOG = 1024
# accept() failures that mean "out of descriptors or memory", not a broken listener.
_OUT_OF = {
    errno.EMFILE: "EMFILE",
    errno.ENFILE: "ENFILE",
    errno.ENOBUFS: "ENOBUFS",
    errno.ENOMEM: "ENOMEM",
}
ACCEPT_PAUSE = 0.1
# Waiting connections closed at each EMFILE, so that what is queued behind gets descriptors.
EMFILE_EVICT = 16
# A refused connection is answered, then read until the client closes or this long: closing
# with unread request bytes would reset the connection and could destroy the 503 unread.
REFUSE_LINGER = 1.0
SEND_CHUNK = 256 * 1024
# A chunk of an unsized answer smaller than this is framed by copying (one send); a larger one
# is sent as its size line, itself and its CRLF (no copy).
COPY_CHUNK_BELOW = 4096
# An answer (or the first piece of one) this small is sent with its headers in one send.
JOIN_BELOW = 64 * 1024
# A fast lane (HttpServer's `lane`): asked about a keep-alive HTTP/1.1 GET before the WSGI
# application; its answer is a 200's headers and body, None leaves the request to the app.
Lane = Callable[[dict[str, Any]], tuple[list[tuple[str, str]], tuple[bytes, ...]] | None]
# A lane's answer of any status: its status line, headers and body.
LaneAnswer = tuple[str, list[tuple[str, str]], tuple[bytes, ...]]
# The actions' lane (HttpServer's `action_lane`): asked about a keep-alive HTTP/1.1 POST read
# whole (channelsd.quickhead); None leaves the request to the app, nothing done, otherwise the
# call that runs the action and gives its answer.
ActionLane = Callable[[dict[str, Any]], Callable[[], LaneAnswer] | None]
# Bytes read from one client between visits to the hub: a read buffer's worth, whose parsing
# (a chunked body's size lines are read a byte at a time) stays within a few milliseconds.
PACE_READ_BYTES = 8192
# Descriptors kept back from the connection budget: the listener, ESL sockets, logs, ...
FD_RESERVE = 64
# Set in a request's environ when its answer should be followed by giving up the CPU (see
# Handler.process_result): an action's.
YIELD_AFTER = "channelsd.yield_after"
# Set in a request's environ by a lane that did not answer it: the application's own copy of
# the lane (channelsd.fastlists) does not ask again.
DECLINED = "channelsd.fast_declined"
# The body of a request read by _quick: none (its _discard, at the answer's end, reads nothing).
_NO_BODY = Input(None, 0)
# The environ key of a request's Pusher (an unsized answer written from outside its greenlet).
PUSHER = "channelsd.pusher"


def connection_budget(configured: int, nodes: int, pushed: int = 0) -> int:
    """max_connections as the open-file limit allows it: connections, refusals in flight
    (up to an eighth more) and the daemon's own descriptors must fit under RLIMIT_NOFILE,
    and a second descriptor for each of up to `pushed` websockets and event streams (the one
    their events are written to from the courier's thread: channelsd.sendmany)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    budget = (soft - FD_RESERVE - 4 * nodes - pushed) * 8 // 9
    return max(1, min(configured, budget))


def _check_framing(headers: Any) -> None:
    """One reading of where a body ends, or a 400: a proxy in front that reads the framing
    another way (two lengths, a length and chunked, `+5`) would see other requests in the
    same bytes. pywsgi alone takes chunked over a length and int() of anything int() takes."""
    encodings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if encodings:
        if len(encodings) > 1 or encodings[0].lower() != "chunked":
            raise ValueError("a Transfer-Encoding other than chunked")
        if lengths:
            raise ValueError("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        raise ValueError("more than one Content-Length")
    if lengths and not (lengths[0].isascii() and lengths[0].isdigit()):
        raise ValueError("a Content-Length that is not a number")


class Expired(TimeoutError):
    """A client did not send in time. An OSError, so pywsgi treats it as a dead socket."""


class Conn:
    """One open connection: its socket, the phase it is in and that phase's deadline."""

    __slots__ = ("sock", "address", "phase", "deadline", "waiting", "ended")

    def __init__(self, sock: Any, address: Any, header_timeout: float) -> None:
        self.sock = sock
        self.address = address
        self.phase = "header"
        self.deadline = time.monotonic() + header_timeout
        self.waiting = False  # blocked reading from its client: may be evicted
        self.ended: str | None = None  # why the server ended it (a close reason)

    def begin(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline = time.monotonic() + seconds

    @property
    def client(self) -> str:
        return self.address[0] if isinstance(self.address, tuple) else str(self.address)


class Connections:
    """The open connections in the order they came, at most `limit`."""

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.metrics = metrics
        self._open: dict[Conn, None] = {}

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Conn) -> bool:
        if len(self._open) >= self.limit and not self.evict_oldest_waiting():
            return False
        self._open[conn] = None
        return True

    def release(self, conn: Conn) -> None:
        self._open.pop(conn, None)

    def evict_oldest_waiting(self) -> bool:
        """Close the oldest connection blocked on its client; False when none is."""
        for conn in self._open:
            if conn.waiting:
                self._evict(conn)
                return True
        return False

    def _evict(self, conn: Conn) -> None:
        conn.ended = "evicted"
        del self._open[conn]
        self.metrics.http_closed.labels("evicted").inc()
        log.debug("evicted client=%s phase=%s", conn.client, conn.phase)
        # Wakes its reader with end-of-file; its own greenlet closes the descriptor.
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)


def _joined(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """A sized answer's pieces as they are written: small ones joined (up to JOIN_BELOW),
    large ones as they are, never copied."""
    pending: list[bytes] = []
    size = 0
    for data in pieces:
        if not data:
            continue
        if pending and size + len(data) > JOIN_BELOW:
            yield b"".join(pending)
            pending, size = [], 0
        if len(data) > JOIN_BELOW:
            yield data
        else:
            pending.append(data)
            size += len(data)
    if pending:
        yield b"".join(pending) if len(pending) > 1 else pending[0]


def _pause() -> None:
    """Let the hub poll its sockets and run, as bulk work does: a client sending without pause
    gets no more of the hub than ingest (a function, so that tests can count the visits)."""
    turns.pause()


def _yield_cpu() -> None:
    """Let another process that is ready run on this CPU first (a function, so that tests
    can count the calls)."""
    os.sched_yield()


class _ReadPace:
    """One connection's reads taking turns with everything else. A recv that finds data never
    lets the hub run, and a client can keep data coming (a body in one-byte chunks, pipelined
    requests, the rest of a refused body): each PACE_READ_BYTES read without a poll of the
    hub between, the reader takes a turn as bulk work does. Only bytes between two polls
    count: at a poll every other socket had its turn. (Counted across polls, a keep-alive
    client's small requests added up to a turn every ~30 of them, each a wait for bulk
    work's share of the hub behind ingest: 10-15 ms, the reads' p99 under load until
    2026-12-03.)"""

    __slots__ = ("unpaced", "polled")

    def __init__(self) -> None:
        self.unpaced = 0  # bytes read since the poll counted in `polled`
        self.polled = -1

    def before_read(self) -> None:
        """Take a turn if PACE_READ_BYTES came without a poll."""
        self.read(0)
        if self.unpaced >= PACE_READ_BYTES:
            self.unpaced = 0
            _pause()

    def read(self, n: int) -> None:
        polled = turns.polls()
        if polled != self.polled:
            self.polled = polled
            self.unpaced = 0
        self.unpaced += n


class _Reader(io.RawIOBase):
    """The client's bytes, each read bounded by the deadline of the connection's phase."""

    def __init__(self, conn: Conn, handler: Handler) -> None:
        self.conn = conn
        self.handler = handler
        # Set when the connection was handed to another protocol: HTTP reads nothing more.
        self.detached = False
        self.pace = _ReadPace()
        self.looked = False  # read from (or tried) at least once

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.detached:
            return 0
        conn = self.conn
        self.pace.before_read()
        if conn.ended:
            raise ConnectionAbortedError(f"connection ended: {conn.ended}")
        left = conn.deadline - time.monotonic()
        sock = conn.sock
        if left <= 0:
            if self.looked:
                raise self.handler.expired()
            # The server's first look at the connection came after the deadline (a hub busy
            # elsewhere): a client is not late for a server that never looked. That one read
            # takes what is there (under load in CI, connections were closed with a whole
            # request unread); every later one past a deadline expires at once, so no client
            # stretches a phase by keeping its socket full.
            left = 0.0
        self.looked = True
        sock.settimeout(left)
        conn.waiting = True
        try:
            n = sock.recv_into(buffer)
        except (TimeoutError, BlockingIOError):  # (a timeout of 0: nothing there)
            raise self.handler.expired() from None
        finally:
            conn.waiting = False
            sock.settimeout(self.handler.limits.send_timeout)
        if conn.ended:
            raise ConnectionAbortedError(f"connection ended: {conn.ended}")
        self.pace.read(n)
        return n


_date = [-1, b""]  # the second, and the Date line that ends a head then


def _date_line() -> bytes:
    """`Date: ...` and the head's end, as pywsgi writes it, made once a second (each answer
    formatting it cost as much as the rest of its head)."""
    now = int(time.time())
    if now != _date[0]:
        _date[1] = b"Date: " + format_date_time(now) + b"\r\n\r\n"
        _date[0] = now
    return _date[1]


class Pusher:
    """The next pieces of an unsized answer (an event stream), written from outside its
    greenlet: a feed's publisher hands each batch to the hub's courier (channelsd.sendmany),
    which writes it to every caught-up subscriber at once, from a native thread when large.

    A thousand subscribers woken to write the same bytes cost a thousand greenlet switches and
    passes through the WSGI layers per batch; written from the hub, the kernel's part of a
    thousand sends was the crowd's cost to ingest (BENCHMARKS.md, issue #16).

    A pushed piece is owed until the courier claims it (the descriptor it writes to is a
    duplicate of the socket's, closed only once no send is on its way) or the answer's own
    greenlet writes it; what the socket did not take is kept, and that greenlet writes it
    (`flush`) before anything else, once the courier's send has landed."""

    __slots__ = ("_handler", "_owed", "_line", "_landed")

    def __init__(self, handler: Handler) -> None:
        self._handler: Handler | None = handler
        self._owed: deque[bytes] = deque()  # pushed, neither claimed nor written yet
        self._line = Line()  # the courier's duplicate, made at its first claim
        self._landed: gevent.event.Event | None = None  # made when a greenlet waits on it

    @property
    def ready(self) -> bool:
        """A push may be made: the headers are out, nothing the socket left is waiting, and
        the courier can write to it."""
        h = self._handler
        return h is not None and h.headers_sent and not h.unsent and self._line.fd != -2

    def push(self, data: bytes, chunk: bytes) -> bytes:
        """Owe `data` as the answer's next piece (only when `ready`); `chunk` is the same piece
        framed as a chunk (made once for every subscriber of a batch). The bytes owed: the
        courier's to claim."""
        h = self._handler
        assert h is not None and h.headers_sent
        piece = chunk if h.response_use_chunked else data
        self._owed.append(piece)
        return piece

    @property
    def owing(self) -> bool:
        """Pushed pieces are neither claimed nor written yet."""
        return bool(self._owed)

    def claim(self, piece: bytes) -> int | None:
        """The courier's (on the hub): the descriptor to write `piece` to now, or None when
        the answer's greenlet writes it (or already did, or the answer is over)."""
        h, owed, line = self._handler, self._owed, self._line
        if h is None or not owed or owed[0] is not piece or h.unsent or line.in_flight:
            return None
        if not line.open(h.socket):  # out of descriptors: its greenlet writes everything
            return None
        owed.popleft()
        return line.take(piece)

    def sent(self, piece: bytes, n: int) -> bool:
        """The courier wrote `n` bytes of `piece` (-errno: none). False when the rest is left
        for the answer's greenlet (woken by the caller)."""
        self._line.landed()  # (closed, if the answer ended while it was out)
        if self._landed is not None:
            self._landed.set()
        h = self._handler
        if h is None:
            return True
        if n == len(piece):
            h.response_length += n
            return True
        # Gone or full: the greenlet writes the rest first, or meets the socket's error.
        n = max(n, 0)
        h.response_length += n
        h.unsent = piece[n:]  # (piece[0:] is piece itself)
        return False

    def settle(self) -> None:
        """In the answer's own greenlet, before it writes: wait for the courier's send on its
        way, and take what is still owed as its own to write (after what a send left)."""
        while self._line.in_flight is not None:
            if self._landed is None:
                self._landed = gevent.event.Event()
            self._landed.clear()
            self._landed.wait()
        h = self._handler
        if self._owed and h is not None:
            h.unsent += b"".join(self._owed)
            self._owed.clear()

    def flush(self) -> None:
        """In the answer's own greenlet: write what is owed or left, waiting as any write
        does."""
        if self._handler is not None:
            self._handler.send_unsent()

    def let_go(self) -> bool:
        """The answer is over: nothing more is written, and the duplicate is closed once no
        send is on its way to it (closed under the thread's send, its number could be given
        to the next client's socket). True when one still is (the answer was cut short: its
        connection must not carry another)."""
        self._handler = None
        self._owed.clear()
        return self._line.close()


class Handler(WSGIHandler):
    """pywsgi's handler with deadlines, progress-bounded writes and quiet client errors."""

    def __init__(self, sock: Any, address: Any, server: HttpServer, conn: Conn) -> None:
        self.conn = conn
        self.limits = server.limits
        self.metrics = server.metrics
        self._requests = 0
        self._watcher: gevent.Greenlet | None = None
        self._reader = _Reader(conn, self)
        # Bytes of the answer a Pusher could not write: they go before anything else.
        self.unsent = b""
        self.pusher: Pusher | None = None
        self._declined = False  # this request's lane said no already
        # the lane's answer (a GET's), or the call that runs an action: asked by _quick
        self._answered: tuple[Any, ...] | Callable[[], Any] | None = None
        super().__init__(sock, address, server, rfile=io.BufferedReader(self._reader))

    # -- phases ------------------------------------------------------------------------------

    def handle_one_request(self) -> Any:
        self._declined = False
        if self._requests:
            self.conn.begin("idle", self.limits.idle_timeout)
        polled = turns.polls()
        try:
            if self.rfile.closed or not self.rfile.peek(1):
                return None
        except (OSError, ValueError):
            return None  # as pywsgi ends a connection whose request line it cannot read
        if turns.polls() == polled:
            # The request was there already (pipelined, or sent before the last answer's
            # end): the other connections and ingest have a turn first. One that was waited
            # for came after a poll, where every socket had its turn: a visit then would be
            # a round trip through the hub for nothing.
            gevent.sleep(0)
        if self._requests:
            self.conn.begin("header", self.limits.header_timeout)
        if self.server.lanes and not self.server.access_log and self._quick():
            # pywsgi's handle() takes None (the connection ends) or True (the next request)
            return None if self.close_connection or self.rfile.closed else True
        result = super().handle_one_request()
        if isinstance(result, tuple) and result[0] == "414":
            # pywsgi's own answer has no body: ours is in the API's envelope, as every error
            err = ApiError(
                414,
                "request too long",
                {"message": f"the request line is longer than {MAX_REQUEST_LINE} bytes"},
            )
            return ("414", self.server.raw(err))
        return result

    def _quick(self) -> bool:
        """Answered: a plain GET the lane answers, or a plain POST the action lane plans, read
        by channelsd.quickhead. False leaves the request, unread, to pywsgi: one it does not
        take or the lane does not answer (marked: not asked again). An action is only planned
        here, nothing sent: it runs inside pywsgi's response round, where a failure is
        answered (a 500) and never sends it again."""
        head = quickhead.parse(self.rfile.peek(1))
        if head is None:
            return False
        length, path, env = head
        method = env["REQUEST_METHOD"]
        lane = self.server.lane if method == "GET" else self.server.action_lane
        if lane is None:
            return False
        try:
            answer = lane(env)
        except Exception:  # pywsgi's reading asks again, and answers the failure (a 500)
            return False
        if answer is None:
            self._declined = True
            return False
        self.rfile.read(length)  # (the buffered request: no read from the socket)
        # The state pywsgi's read_request would leave, then its response round (failures
        # answered as it answers them) with the lane's answer.
        self._requests += 1
        self.requestline = f"{method} {path} HTTP/1.1"
        self.command, self.path, self.request_version = method, path, "HTTP/1.1"
        self.close_connection = False
        self.response_length = 0
        self.conn.begin("body", self.limits.body_timeout)
        self.environ = env
        self.wsgi_input = _NO_BODY
        self._answered = answer
        try:
            self.handle_one_response()
        finally:
            self._answered = None
        return True

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 (pywsgi's name)
        headers = read_headers(fp)  # pywsgi's parser, quicker for plain blocks
        _check_framing(headers)
        return headers

    def _headers(self) -> Iterator[tuple[str, str]]:
        """pywsgi's HTTP_* entries of the environ. A plain block's fields (IndexedMessage)
        are taken as they are: pywsgi formats each as a line and splits it again."""
        headers = self.headers
        if type(headers) is not IndexedMessage:
            yield from super()._headers()
            return
        for name, value in headers._headers:
            if "_" in name:
                continue  # pywsgi drops them: HTTP_X_A would be X-A's or X_A's
            key = name.replace("-", "_").upper()
            if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                yield "HTTP_" + key, value.strip()

    def read_request(self, raw_requestline: str) -> Any:
        parsed = super().read_request(raw_requestline)
        self.conn.begin("body", self.limits.body_timeout)
        self._requests += 1
        return parsed

    def expired(self) -> Expired:
        """The current phase's deadline passed: count it, and end the connection after
        whatever answer can still be given."""
        conn = self.conn
        reason = f"{conn.phase}_timeout"
        conn.ended = reason
        self.close_connection = True
        if conn.phase == "body" and isinstance(self.environ, dict):
            self.environ["channelsd.timeout"] = "body"  # the API answers 408, not 400
        self.metrics.http_closed.labels(reason).inc()
        log.debug("timeout client=%s phase=%s", conn.client, conn.phase)
        return Expired(f"{conn.phase} timeout")

    # -- writing -----------------------------------------------------------------------------

    def _answer_at_once(
        self, status: str, headers: list[tuple[str, str]], body: tuple[bytes, ...]
    ) -> None:
        """A lane's answer, in the bytes pywsgi would write for it (headers, then the server's
        extra headers, then Date), written as _write_result writes: the head with the first
        write when that is small, else ahead of it with MSG_MORE."""
        # As pywsgi's start_response: a line break in the status or a header is refused (a
        # split answer), and an answer that says `Connection: close` ends the connection.
        if "\r" in status or "\n" in status:
            raise ValueError("a line break in the answer's status")
        line = status.encode("latin-1")
        head = bytearray(b"HTTP/1.1 %s\r\n" % line)
        for name, value in headers:
            field = f"{name}: {value}"
            if "\r" in field or "\n" in field:
                raise ValueError(f"a line break in the answer's header {name!r}")
            if name.lower() == "connection" and value.lower() == "close":
                self.close_connection = True
            head += f"{field}\r\n".encode("latin-1")
        head += self.server.extra_head
        head += _date_line()
        writes = _joined(body)
        self.status, self.code, self.headers_sent = line, int(status[:3]), True
        self._send_head(head, next(writes, b""))
        for data in writes:
            self._write(data)

    def process_result(self) -> None:
        self._write_result()
        if self.environ.get(YIELD_AFTER):
            # A socket write wakes its reader as the kernel expects the writer to sleep next:
            # on the writer's CPU. After an action's answer channelsd does not sleep: the
            # events the action caused (a hang-up's ~10, ~0.3 ms of parsing) are already
            # there, and a client on this host (a proxy in front, a panel) waited for them
            # before reading its answer. It runs first; alone on the CPU, this returns at once.
            _yield_cpu()

    def _write_result(self) -> None:
        # An answer made of pieces (the envelope around a list's bytes, see
        # envelope.success_parts) is written piece by piece by pywsgi: with TCP_NODELAY each
        # piece is a packet and a wake-up of the client, four for a POST's answer (strace: the
        # headers, `{"data":`, the data, the rest). A small one is joined and goes out with
        # its headers in one send; a large one stays in pieces, never copied.
        # Only a sized answer: a stream (no Content-Length) must go out as each piece comes.
        if self.provided_content_length is None:
            self._write_stream()
            return
        for data in _joined(self.result):
            self.write(data)
        if self.status and not self.headers_sent:
            self.write(b"")  # an empty body: the headers still go

    def _write_stream(self) -> None:
        # pywsgi's process_result, but for what a Pusher left: it goes before the end.
        for data in self.result:
            if data:
                self.write(data)
        if self.status and not self.headers_sent:
            self.write(b"")
        self.send_unsent()
        # HEAD's answer has no body, not even the last chunk: a client keeping the connection
        # would read it as the start of the next answer (found by an outside attack).
        if self.response_use_chunked and self.command != "HEAD":
            self._sendall(b"0\r\n\r\n")

    def send_unsent(self) -> None:
        """Write what a Pusher owes or could not write (waiting as any write of the answer
        does), once the courier's send on its way has landed."""
        if self.pusher is not None:
            self.pusher.settle()
        if self.unsent:
            rest, self.unsent = self.unsent, b""
            self._sendall(rest)

    def finalize_headers(self) -> None:
        super().finalize_headers()
        # HTTP/1.0 has no chunked framing: an unsized answer (an event stream) ends where its
        # connection does. Kept alive on the client's word, a stream that ended (revoked) could
        # not be told from a quiet one, and the next answer ran on as the stream's bytes
        # (found by an outside attack).
        if (
            self.request_version == "HTTP/1.0"
            and not self.close_connection
            and self.command != "HEAD"
            and self.code not in (204, 304)
            and not self.connection_upgraded
            and not any(k.lower() == b"content-length" for k, _ in self.response_headers)
        ):
            self.close_connection = True
            self.response_headers = [
                (k, b"close" if k.lower() == b"connection" else v) for k, v in self.response_headers
            ]

    def _write_with_headers(self, data: Any) -> None:
        # pywsgi sends the headers, then the body, in two sends (two packets, two wake-ups
        # of the client): a small body rides with its headers; before a large one the headers
        # are sent with MSG_MORE, so that the kernel fills the first segment with both.
        self.headers_sent = True
        self.finalize_headers()
        head = bytearray(b"HTTP/1.1 ")
        head += self.status
        head += b"\r\n"
        for header, value in self.response_headers:
            head += header
            head += b": "
            head += value
            head += b"\r\n"
        head += b"\r\n"
        self._send_head(head, data)

    def _send_head(self, head: bytearray, data: Any) -> None:
        """The head and the answer's first write: one send when that is small."""
        if data and not self.response_use_chunked and len(data) <= JOIN_BELOW:
            head += data
            self._sendall(head)
            return
        self._sendall(head, socket.MSG_MORE if data else 0)
        self._write(data)

    def _write(self, data: Any, _bytearray: Any = bytearray) -> None:
        self.send_unsent()  # a push's rest, before what comes after it
        # pywsgi frames a chunk by copying it into a new buffer between its size line and its
        # CRLF. An event stream's batch is the same bytes for every subscriber of a feed:
        # a thousand subscribers made a thousand copies of each batch. A large chunk goes
        # out with its size line and CRLF in one sendmsg instead, the batch never copied
        # (as three sends it cost a thousand subscribers 3,000 system calls a batch).
        if self.response_use_chunked and len(data) >= COPY_CHUNK_BELOW:
            self._send_parts((b"%x\r\n" % len(data), data, b"\r\n"))
            return
        super()._write(data)

    def _send_parts(self, parts: tuple[bytes, ...]) -> None:
        """The parts as one stream of bytes: one system call when the socket takes them all;
        what it leaves (a reader behind) goes through _sendall."""
        try:
            sent = self.socket.sendmsg(parts)
        except OSError as exc:
            self._send_failed(exc)
            raise
        self.response_length += sent
        if sent < sum(map(len, parts)):
            self._sendall(b"".join(parts)[sent:])

    def _sendall(self, data: Any, flags: int = 0) -> None:
        # pywsgi's sendall has no bound at all; this one closes a connection whose client
        # took nothing for send_timeout (the socket's timeout), however long the answer.
        # A send the socket takes at once does not let the hub run: a list of several MB to
        # a fast client (loopback: the receiving side's work is done in our send) would be
        # written in one go. The hub runs between chunks after the first.
        view = memoryview(data)
        try:
            while view:
                view = view[self.socket.send(view[:SEND_CHUNK], flags) :]
                if view:
                    gevent.sleep(0)  # the request's own work: before bulk work runs again
        except OSError as exc:
            self._send_failed(exc)
            raise
        self.response_length += len(data)

    def _send_failed(self, exc: OSError) -> None:
        if isinstance(exc, TimeoutError) and not self.conn.ended:
            self.conn.ended = "send_timeout"
            self.metrics.http_closed.labels("send_timeout").inc()
            log.debug("timeout client=%s phase=send", self.conn.client)
        self.status = f"socket error: {exc}"
        code = getattr(self, "code", None)
        if isinstance(code, int) and code > 0:
            self.code = -code

    def run_application(self) -> None:
        # The lane answers the portals' polls (channelsd.fastlists) without the application's
        # WSGI round (start_response, the app's layers, the writer's state): 10-25 µs of a
        # poll's ~200 (BENCHMARKS.md). Asked here, inside pywsgi's handle_one_response, which
        # sets the state of one answer and turns a failure into handle_error's 500 for it as
        # for the application. Only where pywsgi would frame the answer just so: GET,
        # HTTP/1.1, kept alive, and no access line to write.
        answer = self._answered
        if answer is not None:  # a GET's 200, or the call that runs an action (now)
            status, headers, body = answer() if callable(answer) else ("200 OK", *answer)
            self._answer_at_once(status, headers, body)
            if self.environ.get(YIELD_AFTER):
                _yield_cpu()  # (an action's, as process_result does)
            return
        lane = self.server.lane
        if self._declined:
            self.environ[DECLINED] = True
        elif (
            lane is not None
            and self.command == "GET"
            and self.request_version == "HTTP/1.1"
            and not self.close_connection
            and not self.server.access_log
        ):
            answer = lane(self.environ)
            if answer is not None:
                self._answer_at_once("200 OK", *answer)
                return
        self.environ["channelsd.watch_disconnect"] = self._watch_disconnect
        self.environ["channelsd.takeover"] = self._takeover
        pusher = self.environ[PUSHER] = self.pusher = Pusher(self)
        try:
            super().run_application()
        finally:
            # The answer is over: nobody writes into this connection now.
            if pusher.let_go():
                self.close_connection = True
            self.pusher = None
            self.unsent = b""
            if self._watcher is not None:
                self._watcher.kill(block=False)
                self._watcher = None

    def let_go(self) -> None:
        """The connection is over: break the reference cycles through this handler (its
        environ holds its bound methods, its reader holds it), so that it is freed now by
        reference counting, socket and buffers with it, and not at a full collection
        (~14 KB a connection under a churn of short ones, found by an outside attack)."""
        environ = self.environ
        if environ is not None:
            # (the dict itself may outlive us: a traceback's frames hold it until collected)
            environ.pop("channelsd.watch_disconnect", None)
            environ.pop("channelsd.takeover", None)
            environ.pop(PUSHER, None)
            self.environ = None
        self._reader.handler = None

    def _takeover(self) -> tuple[Any, bytes]:
        """Hand the connection to another protocol (a websocket upgrade): its socket, and the
        bytes the client sent past the request that were read already. From here HTTP reads
        nothing more, no phase deadline applies (the new owner keeps its own time: a websocket
        pings), nothing more is answered in HTTP, and the socket is closed once the
        application returns. The connection still counts against max_connections, and is
        never evicted as waiting."""
        self.close_connection = True
        self._orig_status = "101 Switching Protocols"  # for the access line only
        self.conn.phase = "upgraded"
        reader = self.rfile.raw
        reader.detached = True
        return self.socket, self.rfile.read1(65536)

    def _watch_disconnect(self, gone: Callable[[], None]) -> None:
        """Call `gone` if the client closes its end while the answer is still running (an
        event stream, whose client never sends again)."""

        def watch() -> None:
            try:
                wait_read(self.socket.fileno())
                if self.socket.recv(1, socket.MSG_PEEK):
                    return  # it sent something: not gone
            except OSError:
                pass
            gone()

        self._watcher = gevent.spawn(watch)

    def log_request(self) -> None:
        # pywsgi formats an access line for every request, read or not.
        if self.server.access_log:
            super().log_request()

    # -- errors ------------------------------------------------------------------------------

    def _handle_client_error(self, ex: BaseException) -> Any:
        self.close_connection = True
        if isinstance(ex, Expired):
            return ("408", self.server.raw(envelope.request_timeout("request head")))
        if isinstance(ex, OSError):
            return None  # reset, gone or evicted: nobody to answer
        # A malformed request line or header. The line may carry a token: masked.
        self.server.client_errors.log(
            "bad request",
            logging.INFO,
            "bad request client=%s error=%s",
            self.conn.client,
            mask(str(ex)[:300]),  # (cut first: mask() reads all it is given)
        )
        err = ApiError(400, "bad request", {"message": "the HTTP request could not be parsed"})
        return ("400", self.server.raw(err))

    def handle_error(self, t: Any, v: Any, tb: Any) -> None:
        # pywsgi prints these through the hub, unmasked; ours go to the log, masked.
        self.close_connection = True
        if isinstance(v, OSError | gevent.GreenletExit):
            return  # the client stalled or went away mid-answer; or we are stopping
        log.error(
            "request failed client=%s request=%s",
            self.conn.client,
            mask(self.requestline or "-"),
            exc_info=(t, v, tb),
        )
        self._send_error_response_if_possible(500)

    def _send_error_response_if_possible(self, error_code: int) -> None:
        if self.response_length or self.headers_sent:
            self.close_connection = True
            return
        if error_code == 400:
            err = ApiError(400, "bad request", {"message": "the request body could not be read"})
        else:
            err = ApiError(error_code, "internal error", {"message": "internal error"})
        rid, body = envelope.failure_json(err)
        try:
            self.start_response(
                f"{error_code} {'Bad Request' if error_code == 400 else 'Internal Server Error'}",
                [
                    ("Content-Type", envelope.JSON_TYPE),
                    ("Content-Length", str(len(body))),
                    ("X-Request-ID", rid),
                    *self.server.extra_headers,
                ],
            )
            self.write(body)
        except OSError:
            self.close_connection = True


class _ErrorLog:
    """pywsgi's error_log (also wsgi.errors): into logging, masked."""

    def write(self, text: str) -> None:
        text = text.rstrip()
        if text:
            log.error("%s", mask(text))

    def flush(self) -> None:
        pass

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)


class HttpServer(WSGIServer):
    """pywsgi's server with the limits above; see the module's docstring."""

    def __init__(
        self,
        address: tuple[str, int],
        app: Callable[..., Any],
        limits: HttpLimits,
        metrics: Metrics,
        access_log: Any = None,
        extra_headers: Iterable[tuple[str, str]] = (),
        max_connections: int | None = None,
        lane: Lane | None = None,
        action_lane: ActionLane | None = None,
    ) -> None:
        super().__init__(
            address,
            app,
            backlog=BACKLOG,
            log=access_log,
            error_log=_ErrorLog(),
            handler_class=Handler,
        )
        self.access_log = access_log is not None
        self.limits = limits
        self.metrics = metrics
        self.extra_headers = list(extra_headers)
        # The same lines on every answer of the lane: encoded once.
        self.extra_head = b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in self.extra_headers)
        self.lane = lane
        self.action_lane = action_lane
        self.connections = Connections(max_connections or limits.max_connections, metrics)
        self.client_errors = RateLimited(log)
        self._accept_errors = RateLimited(log)
        self._refusals = RateLimited(log)
        self._refusing = 0

    @property
    def lanes(self) -> bool:
        """Whether a lane may answer a request before pywsgi reads it."""
        return self.lane is not None or self.action_lane is not None

    def raw(self, err: ApiError) -> bytes:
        return envelope.raw_failure(err, self.extra_headers)

    # -- connections -------------------------------------------------------------------------

    def handle(self, sock: Any, address: Any) -> None:
        conn = Conn(sock, address, self.limits.header_timeout)
        if not self.connections.admit(conn):
            self._refuse(sock, conn.client)
            return
        try:
            sock.settimeout(self.limits.send_timeout)
            handler = Handler(sock, address, self, conn)
            try:
                handler.handle()
            finally:
                handler.let_go()
        finally:
            self.connections.release(conn)

    def _refuse(self, sock: Any, client: str) -> None:
        self.metrics.http_refused.labels("connection_limit").inc()
        self._refusals.log(
            "limit",
            logging.WARNING,
            "connection refused client=%s: every one of http.max_connections=%d is busy",
            client,
            self.connections.limit,
        )
        if self._refusing >= max(16, self.connections.limit // 8):
            return  # the caller closes it unanswered: refusals must not hold descriptors
        self._refusing += 1
        try:
            sock.settimeout(REFUSE_LINGER)
            sock.sendall(self.raw(envelope.too_many_connections()))
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + REFUSE_LINGER
            # Paced as a request's reads are (without, refused clients flooding held the hub
            # up to the linger's whole second).
            pace = _ReadPace()
            while (left := deadline - time.monotonic()) > 0:
                pace.before_read()
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    break
                pace.read(len(data))
        except OSError:
            pass
        finally:
            self._refusing -= 1

    # -- accepting ---------------------------------------------------------------------------

    def do_read(self) -> Any:
        try:
            return super().do_read()
        except OSError as exc:
            name = _OUT_OF.get(exc.errno or 0)
            if name is None:
                raise
            self._out_of_resources(name)
            return None

    def _out_of_resources(self, name: str) -> None:
        self.metrics.accept_errors.labels(name).inc()
        self._accept_errors.log(
            name,
            logging.ERROR,
            "accept failed error=%s open_connections=%d: out of descriptors; accepting paused "
            "%.1f s (raise LimitNOFILE, or lower http.max_connections)",
            name,
            len(self.connections),
            ACCEPT_PAUSE,
        )
        # Waiting connections give their descriptors to whoever is queued behind them.
        for _ in range(EMFILE_EVICT):
            if not self.connections.evict_oldest_waiting():
                break
        self.stop_accepting()
        gevent.spawn_later(ACCEPT_PAUSE, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self.started and not self.closed:
            self.start_accepting()
