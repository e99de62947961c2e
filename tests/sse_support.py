"""An SSE stream read off a raw socket, for the tests of channel_events' delivery."""

import json
import socket
from typing import Any

import gevent

from conftest import Harness, token

PATH = "/v2/accounts/acc1/channel_events"


class WireReader:
    """An SSE stream read off a raw socket, its HTTP framing checked byte by byte."""

    def __init__(
        self, h: Harness, version: str = "1.1", rcvbuf: int | None = None, paused: bool = False
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(h.daemon.http_address)
        self.sock.sendall(
            b"GET %s HTTP/%s\r\nHost: x\r\nX-Auth-Token: %s\r\n\r\n"
            % (PATH.encode(), version.encode(), token("admin1").encode())
        )
        self.version = version
        self.paused = paused
        self.raw = b""
        self.body = b""  # the stream's bytes, framing taken off
        self.chunked: bool | None = None
        self.greenlet = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            while self.paused:
                gevent.sleep(0.01)
            data = self.sock.recv(4096)
            if not data:
                return
            self.raw += data
            self._unframe()

    def _unframe(self) -> None:
        if self.chunked is None:
            if b"\r\n\r\n" not in self.raw:
                return
            head, self.raw = self.raw.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 200"), head
            self.chunked = b"Transfer-Encoding: chunked" in head
            assert self.chunked == (self.version == "1.1")
        if not self.chunked:
            self.body, self.raw = self.body + self.raw, b""
            return
        while b"\r\n" in self.raw:
            size_line, rest = self.raw.split(b"\r\n", 1)
            size = int(size_line, 16)  # a framing error fails here, or on the CRLF below
            if len(rest) < size + 2:
                return
            assert rest[size : size + 2] == b"\r\n", "a chunk not ended by its CRLF"
            self.body += rest[:size]
            self.raw = rest[size + 2 :]

    def frames(self) -> list[tuple[str, str, Any]]:
        """(id, event, data) of every whole frame so far; comments (keepalives) left out."""
        out = []
        for block in self.body.decode().split("\n\n")[:-1]:
            if block.startswith(":"):
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((fields["id"], fields["event"], json.loads(fields["data"])))
        return out

    def close(self) -> None:
        self.greenlet.kill()
        self.sock.close()


def short_sends(monkeypatch: Any) -> list[int]:
    """One entry per pushed piece a stream's socket did not take whole (what the courier
    left for the stream's own greenlet to write): Pusher.sent, counted."""
    from channelsd.httpserver import Pusher

    seen: list[int] = []
    real = Pusher.sent

    def sent(self: Pusher, piece: bytes, n: int) -> bool:
        whole = real(self, piece, n)
        if not whole:
            seen.append(1)
        return whole

    monkeypatch.setattr(Pusher, "sent", sent)
    return seen
