"""A crowd of live-event subscribers in a process of its own (the fan-out scenario's readers).

    subscriber_proc.py KIND PORT PATH COUNT OUT [--token T] [--marker M] [--lifetime S]
                       [--account A] [--binding B] [--nice N]

Opens COUNT connections of one KIND (`sse`: GET PATH; `websocket`: Kazoo's websocket at PATH,
each subscribing to account A's binding B with the token: see WebSocketStream), reads them
all with one epoll loop (no gevent: the cheapest reader Python has), and splits each stream
into its messages. Prints `ready N` once every connection has received its first message (the
SSE snapshot, the websocket's subscribe reply), then reads
until a `stop` line on stdin, and writes OUT (JSON): for every message that contains a probe
marker (`<marker><6 digits>`), which subscriber received which probe when — the monotonic
clock (CLOCK_MONOTONIC, shared by every process of the machine) read right after the recv()
that completed the message — plus per-subscriber byte and message counts, the connections
that closed, and how many reads filled the whole buffer (the reader lagging behind).

`--nice N` lowers the process's priority before it connects (OUT records the value in
effect). The subscribers stand for browsers on other machines: on the bench's machine they
should take the CPU the daemon leaves, not the daemon's (their own lateness is then in the lag
they measure, not taken from ingest).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

RECV = 262144
clock = time.monotonic


class HttpStreamError(Exception):
    pass


def _take_head(buf: bytearray, data: bytes | memoryview) -> tuple[str, bytes] | None:
    """Add `data` to the response head read so far; once the head is whole, return it and
    the bytes after it (None until then)."""
    buf += data
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    return bytes(buf[:end]).decode("latin-1"), bytes(buf[end + 4 :])


class SseStream:
    """`GET <path>` on HTTP/1.1; pywsgi sends the stream chunked; messages end with a blank
    line (text/event-stream)."""

    def __init__(self, path: str, token: str) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
            f"X-Auth-Token: {token}\r\n\r\n"
        ).encode()
        self._head: bytearray | None = bytearray()
        self._raw = bytearray()  # chunked transfer encoding, not yet decoded
        self._need = 0  # bytes left of the current chunk (+2 for its CRLF once read)
        self._body = bytearray()  # decoded stream, not yet cut into messages
        self.chunked = True

    def feed(self, data: bytes | memoryview, marker: bytes) -> tuple[int, list[bytes]]:
        """Messages completed by `data`, and the probe ids (6 digits after `marker`) in them."""
        if self._head is not None:
            split = _take_head(self._head, data)
            if split is None:
                return 0, []
            head, data = split
            self._head = None
            status = head.split(" ", 2)[1] if " " in head else "?"
            if status != "200":
                raise HttpStreamError(f"status {status}: {head.splitlines()[0]}")
            self.chunked = "transfer-encoding: chunked" in head.lower()
        if self.chunked:
            self._dechunk(data)
        else:
            self._body += data
        return self._messages(marker)

    def _dechunk(self, data: bytes) -> None:
        raw = self._raw
        raw += data
        pos = 0
        while True:
            if self._need > 0:  # (-2: the chunk's CRLF is still to come)
                take = min(self._need, len(raw) - pos)
                if take <= 0:
                    break
                self._body += raw[pos : pos + take]
                pos += take
                self._need -= take
                if self._need:
                    break
                self._need = -2  # then the chunk's CRLF
            if self._need == -2:
                if len(raw) - pos < 2:
                    break
                pos += 2
                self._need = 0
            eol = raw.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(bytes(raw[pos:eol]).split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                raise HttpStreamError("the stream ended")
            self._need = size
        del raw[:pos]

    def _messages(self, marker: bytes) -> tuple[int, list[bytes]]:
        body = self._body
        end = body.rfind(b"\n\n")
        if end < 0:
            return 0, []
        done = bytes(body[:end])
        del body[: end + 2]
        # (a comment line, the keep-alive, is no message; no probe is ever in one)
        count = sum(1 for m in done.split(b"\n\n") if m and not m.startswith(b":"))
        return count, probes_in(done, 0, len(done), marker)


class WebSocketStream:
    """Kazoo's websocket (blackhole) as monster-ui's client speaks it: the RFC 6455 upgrade,
    which carries no token, then one `subscribe` text frame naming the token, the account and
    the binding; then unmasked server frames (text; fragments joined; no extensions). The
    first message must be the subscribe's success reply (the daemon sends no snapshot: the
    reply is what `ready` waits for), anything else ends this subscriber. Pings are answered,
    as a browser does: the daemon drops a socket that stays silent two ping intervals."""

    KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # any 16 bytes in base64: the bench checks no accept

    def __init__(self, path: str, token: str, account: str, binding: str) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.KEY}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._subscribe = json.dumps(
            {
                "action": "subscribe",
                "auth_token": token,
                "request_id": "bench-subscribe",
                "data": {"account_id": account, "binding": binding},
            }
        ).encode()
        self._head: bytearray | None = bytearray()
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._replied = False
        self.then_send: bytes | None = None

    def feed(self, data: bytes | memoryview, marker: bytes) -> tuple[int, list[bytes]]:
        """Messages completed by `data`, and the probe ids (6 digits after `marker`) in them."""
        if self._head is not None:
            split = _take_head(self._head, data)
            if split is None:
                return 0, []
            head, data = split
            self._head = None
            if " 101 " not in head.split("\r\n", 1)[0] + " ":
                raise HttpStreamError(f"no upgrade: {head.splitlines()[0]}")
            self._send(self._frame(0x1, self._subscribe))
        self._buf += data
        return self._frames(marker)

    def _check_reply(self, message: bytes) -> None:
        try:
            reply = json.loads(message)
        except ValueError:
            reply = {}
        if reply.get("action") != "reply" or reply.get("status") != "success":
            raise HttpStreamError(f"subscribe refused: {message[:300]!r}")
        self._replied = True

    def _send(self, frame: bytes) -> None:
        self.then_send = (self.then_send or b"") + frame

    @staticmethod
    def _frame(opcode: int, payload: bytes) -> bytes:
        """A masked client frame (clients must mask; a zero mask keeps it simple)."""
        n = len(payload)
        head = bytearray([0x80 | opcode])
        if n < 126:
            head.append(0x80 | n)
        elif n < 65536:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        return bytes(head) + b"\0\0\0\0" + payload

    def _frames(self, marker: bytes) -> tuple[int, list[bytes]]:
        """Walk the whole frames in the buffer. A whole unfragmented text frame after the
        reply, nearly every frame, is only counted: the probes of a run of such frames are
        found by one search over the run, as a marker and its digits lie inside one JSON
        payload, never across a frame's head. The rest (the reply, fragments, pings, a
        close) is copied out, and a fragmented message searched once it is whole."""
        count = 0
        probes: list[bytes] = []
        buf = self._buf
        end = len(buf)
        pos = run = 0  # run: where the current run of whole text frames began
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            at = pos + 2
            if n == 126:
                if end - at < 2:
                    break
                n, at = (buf[at] << 8) | buf[at + 1], at + 2
            elif n == 127:
                if end - at < 8:
                    break
                n, at = int.from_bytes(buf[at : at + 8], "big"), at + 8
            if b1 & 0x80:
                at += 4  # a server never masks; skip a mask if one came anyway
            if end - at < n:
                break
            if b0 == 0x81 and self._replied and not self._parts:
                count += 1
            else:
                probes += probes_in(buf, run, pos, marker)
                message = self._other(b0, bytes(buf[at : at + n]))
                if message is not None:
                    count += 1
                    probes += probes_in(message, 0, len(message), marker)
                run = at + n
            pos = at + n
        probes += probes_in(buf, run, pos, marker)
        del buf[:pos]
        return count, probes

    def _other(self, b0: int, payload: bytes) -> bytes | None:
        """Any frame but a whole text message after the reply: the message it completed."""
        opcode = b0 & 0x0F
        if opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
            reason = payload[2:].decode("utf-8", "replace")
            raise HttpStreamError(f"the server closed the websocket: {code} {reason}")
        if opcode == 0x9:
            self._send(self._frame(0xA, payload))
        if opcode not in (0x0, 0x1, 0x2):
            return None
        self._parts.append(payload)
        if not b0 & 0x80:
            return None
        message = b"".join(self._parts)
        self._parts = []
        if not self._replied:
            self._check_reply(message)
        return message


def probes_in(buf: bytes | bytearray, start: int, end: int, marker: bytes) -> list[bytes]:
    """The probe ids (the 6 digits after each `marker`) in buf[start:end]."""
    out = []
    at = buf.find(marker, start, end)
    while at >= 0:
        digits = bytes(buf[at + len(marker) : min(end, at + len(marker) + 6)])
        if len(digits) == 6 and digits.isdigit():
            out.append(digits)
        at = buf.find(marker, at + 1, end)
    return out


KINDS = ("sse", "websocket")


def make_stream(args: argparse.Namespace) -> SseStream | WebSocketStream:
    if args.kind == "websocket":
        return WebSocketStream(args.path, args.token, args.account, args.binding)
    return SseStream(args.path, args.token)


class Subscriber:
    __slots__ = ("index", "sock", "stream", "bytes", "messages", "first", "closed", "full")

    def __init__(self, index: int, sock: socket.socket, stream: Any) -> None:
        self.index = index
        self.sock = sock
        self.stream = stream
        self.bytes = 0
        self.messages = 0
        self.first: float | None = None
        self.closed = ""
        self.full = 0


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("count", type=int)
    ap.add_argument("out")
    ap.add_argument("--token", default="")
    ap.add_argument("--marker", default="benchprobe-")
    ap.add_argument("--lifetime", type=float, default=900.0)
    ap.add_argument("--batch", type=int, default=50)
    # websocket only: what each connection subscribes to (the path is the upgrade's)
    ap.add_argument("--account", default="")
    ap.add_argument("--binding", default="call.*.*")
    ap.add_argument("--nice", type=int, default=0)
    args = ap.parse_args()
    _die_with_parent()
    niceness = os.nice(args.nice)  # (what is in effect: added to an inherited value, at most 19)
    marker = args.marker.encode()
    sel = selectors.DefaultSelector()
    subs: list[Subscriber] = []
    received: list[tuple[int, int, float]] = []
    seen: set[tuple[int, int]] = set()
    deadline = clock() + args.lifetime
    buf = bytearray(RECV)
    view = memoryview(buf)

    def on_readable(sub: Subscriber) -> None:
        try:
            n = sub.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            n, sub.closed = 0, str(exc)
        if not n:
            sub.closed = sub.closed or "closed by the server"
            sel.unregister(sub.sock)
            return
        now = clock()
        if n == RECV:
            sub.full += 1
        sub.bytes += n
        try:
            count, probes = sub.stream.feed(view[:n], marker)
        except HttpStreamError as exc:
            sub.closed = str(exc)
            sel.unregister(sub.sock)
            return
        send = getattr(sub.stream, "then_send", None)
        if send:
            sub.stream.then_send = None
            sub.sock.setblocking(True)
            sub.sock.sendall(send)
            sub.sock.setblocking(False)
        if not count:
            return
        if sub.first is None:
            sub.first = now
        sub.messages += count
        for digits in probes:
            key = (sub.index, int(digits))
            if key not in seen:
                seen.add(key)
                received.append((sub.index, int(digits), now))

    def pump(timeout: float) -> None:
        for key, _ in sel.select(timeout):
            if key.data is not None:
                on_readable(key.data)

    # Connect in batches, each batch's snapshots read before the next: a thousand SYNs at
    # once would overflow the daemon's accept queue and cost a retransmit second each.
    for start in range(0, args.count, args.batch):
        batch = []
        for i in range(start, min(args.count, start + args.batch)):
            sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sub = Subscriber(i, sock, make_stream(args))
            sock.sendall(sub.stream.request)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, sub)
            subs.append(sub)
            batch.append(sub)
        while any(s.first is None and not s.closed for s in batch):
            if clock() > deadline:
                print("timeout waiting for snapshots", flush=True)
                return 1
            pump(0.5)
    broken = [s for s in subs if s.closed]
    print(f"ready {len(subs) - len(broken)}", flush=True)
    cpu0 = time.process_time()
    t0 = clock()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    stopping = False
    while not stopping and clock() < deadline:
        for key, _ in sel.select(1.0):
            if key.data is None:
                line = sys.stdin.readline()
                if not line or line.strip() == "stop":
                    stopping = True
            else:
                on_readable(key.data)
    wall = clock() - t0
    result = {
        "kind": args.kind,
        "count": len(subs),
        "received": received,
        "bytes": [s.bytes for s in subs],
        "messages": [s.messages for s in subs],
        "closed": {s.index: s.closed for s in subs if s.closed},
        "full_reads": sum(s.full for s in subs),
        "nice": niceness,
        "cpu": time.process_time() - cpu0,
        "wall": wall,
    }
    with open(args.out, "w") as f:
        json.dump(result, f)
    for s in subs:
        with contextlib.suppress(OSError):
            s.sock.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
