"""ESL wire format: frame builders, event serialisation and command-packet parsing.

Everything here reproduces bytes seen in the FreeSWITCH 1.11 captures (tests/fixtures/captures):
outer frame headers are never URL-encoded, ``text/event-plain`` bodies URL-encode every header
value, ``text/event-json`` bodies are one unformatted JSON object that may repeat a key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

HeaderValue = str | list[str]
Header = tuple[str, HeaderValue]

AUTH_REQUEST = b"Content-Type: auth/request\n\n"
DISCONNECT_BODY = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def command_reply(text: str, extra: Sequence[tuple[str, str]] = ()) -> bytes:
    """A ``command/reply`` frame; bgapi adds a Job-UUID header after Reply-Text."""
    lines = ["Content-Type: command/reply", f"Reply-Text: {text}"]
    lines.extend(f"{k}: {v}" for k, v in extra)
    return ("\n".join(lines) + "\n\n").encode()


def api_response(body: bytes) -> bytes:
    """An ``api/response`` frame; the body carries no terminator of its own."""
    return b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(body), body)


def disconnect_notice(body: bytes = DISCONNECT_BODY) -> bytes:
    return b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n%s" % (len(body), body)


# FreeSWITCH's switch_url_encode: these characters plus anything outside printable ASCII are
# percent-encoded, byte by byte, with upper-case hex.  A '%' that already starts an upper-case
# %XX escape is copied through (FreeSWITCH does not double-encode), which is why plain-format
# decoding is lossy.
_UNSAFE = re.compile(r'%(?![0-9A-F]{2})|[\x00-\x20"#&+:;<=>?@\[\\\]^`{|}\x7f-\U0010ffff]')
_ESCAPES: dict[str, str] = {}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    esc = _ESCAPES.get(ch)
    if esc is None:
        esc = _ESCAPES[ch] = "".join(f"%{b:02X}" for b in ch.encode())
    return esc


_ENCODED: dict[str, str] = {}


def url_encode(value: str) -> str:
    """Percent-encode one plain-format header value exactly like FreeSWITCH."""
    # Most values (uuids, states, constants) repeat from event to event: memoise them.
    out = _ENCODED.get(value)
    if out is None:
        if len(_ENCODED) > 100_000:
            _ENCODED.clear()
        out = _ENCODED[value] = _UNSAFE.sub(_escape, value)
    return out


def plain_value(value: HeaderValue) -> str:
    """Serialise a header value for text/event-plain (arrays, empty values, encoding)."""
    if value.__class__ is list:
        value = "ARRAY::" + "|:".join(value)  # type: ignore[arg-type]
    if not value:
        return "_undef_"
    return url_encode(value)  # type: ignore[arg-type]


@dataclass(slots=True)
class Event:
    """One fired event: ordered headers (names may repeat) and an optional body.

    Serialisations are computed once and cached, so fanning one event out to many connections
    costs one encode per format, not one per connection.
    """

    name: str
    headers: list[Header]
    body: str | None = None
    _json: bytes | None = field(default=None, repr=False)
    _plain: bytes | None = field(default=None, repr=False)

    def get(self, name: str) -> HeaderValue | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def json_body(self) -> bytes:
        headers = self.headers
        if self.body is not None:
            headers = [
                *headers,
                ("Content-Length", str(len(self.body.encode()))),
                ("_body", self.body),
            ]
        as_dict = dict(headers)
        if len(as_dict) == len(headers):
            return orjson.dumps(as_dict)
        # FreeSWITCH's cJSON object keeps duplicate keys (CODEC, HANGUP_COMPLETE); a dict cannot:
        # cut the headers where a name repeats, dump each run as an object, splice the runs.
        runs: list[dict[str, HeaderValue]] = [{}]
        for k, v in headers:
            if k in runs[-1]:
                runs.append({})
            runs[-1][k] = v
        return b"{" + b",".join(orjson.dumps(r)[1:-1] for r in runs) + b"}"

    def plain_body(self) -> bytes:
        text = "".join([f"{k}: {plain_value(v)}\n" for k, v in self.headers])
        if self.body is None:
            return (text + "\n").encode()
        body = self.body.encode()
        return text.encode() + b"Content-Length: %d\n\n" % len(body) + body

    def json_frame(self) -> bytes:
        if self._json is None:
            body = self.json_body()
            self._json = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body
        return self._json

    def plain_frame(self) -> bytes:
        if self._plain is None:
            body = self.plain_body()
            self._plain = (
                b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(body) + body
            )
        return self._plain

    def frame(self, fmt: str) -> bytes:
        return self.json_frame() if fmt == "json" else self.plain_frame()


@dataclass(slots=True)
class Packet:
    """One client command: first line, the header lines after it, optional body, raw text."""

    command: str
    headers: dict[str, str]
    body: bytes
    raw: str


_TERMINATOR = re.compile(rb"\n\r*\n")


class PacketReader:
    """Incremental parser for client->server command packets.

    A packet ends at the first empty line; FreeSWITCH counts line feeds and lets carriage
    returns sit between them, so LF LF, CR LF CR LF and LF CR LF all terminate.  Leading blank
    lines are skipped.  A ``Content-Length`` header makes the packet carry that many body bytes.
    """

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        out: list[Packet] = []
        while True:
            buf = self._buf.lstrip(b"\r\n")
            m = _TERMINATOR.search(buf)
            if m is None:
                self._buf = buf
                return out
            head = buf[: m.start()].decode("utf-8", "replace")
            rest = buf[m.end() :]
            lines = [ln.rstrip("\r") for ln in head.split("\n")]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip()] = value.lstrip(" ")
            body = b""
            length = headers.get("Content-Length") or headers.get("content-length")
            if length and length.isdigit():
                need = int(length)
                if len(rest) < need:
                    self._buf = buf
                    return out
                body, rest = rest[:need], rest[need:]
            self._buf = rest
            out.append(Packet(lines[0].strip(), headers, body, head))


def parse_frames(data: bytes) -> Iterable[tuple[dict[str, str], bytes, bytes]]:
    """Split server->client bytes into (outer headers, body, raw frame) triples."""
    pos = 0
    size = len(data)
    while pos < size:
        end = data.find(b"\n\n", pos)
        if end < 0:
            return
        headers: dict[str, str] = {}
        for line in data[pos:end].decode("utf-8", "replace").split("\n"):
            name, _, value = line.partition(": ")
            headers[name] = value
        start = pos
        pos = end + 2
        body = b""
        if "Content-Length" in headers:
            n = int(headers["Content-Length"])
            body = data[pos : pos + n]
            pos += n
        yield headers, body, data[start:pos]
