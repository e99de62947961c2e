"""A request's header block, read as pywsgi reads it, parsed without the email package.

pywsgi reads the header lines with http.client's limits and hands them to the email
package's parser: its feed parser, policy objects and line cracking were the largest single
cost of a small request (a POST action's ~70 µs of ~350, issue #16). Nearly every request's
headers are plain `Name: value` lines of printable ASCII; those are split here, to the same
names and values that parser gives them (tests/test_httpheaders.py compares both on
generated blocks). A block with a folded line, a non-ASCII byte in a value or cut short by
the client goes to the email parser as before.

Read plain, the block is an IndexedMessage: pywsgi and the framing checks ask it for a few
names per request (the email package finds each by a scan that lowercases every name: 50
calls of `str.lower` for a small GET), and its fields are handed to the environ as they are.

A block the email parser would read otherwise than a proxy in front may is refused
(ValueError, a 400): a bare CR ends a line for it (RFC 9112 §2.2: invalid), and a line that
is no `name: value` (a space before the colon, a control or non-ASCII byte in the name, no
colon) ends the block for it, the fields after it (a Content-Length, a Transfer-Encoding)
dropped into the body: either way a proxy and channelsd would frame the bytes as different
requests.
"""

from __future__ import annotations

import email.parser
import http.client
import re
from typing import Any

from gevent.pywsgi import OldMessage

# http.client's bounds on a header block (its _MAXLINE and _MAXHEADERS).
MAX_LINE = getattr(http.client, "_MAXLINE", 65536)
MAX_HEADERS = getattr(http.client, "_MAXHEADERS", 100)
# A name of the characters the email parser takes in one (printable ASCII but the colon),
# a value of printable ASCII and tabs, one line ending.
_PLAIN = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e]*\r?\n")
_ENDS = (b"\r\n", b"\n", b"")
# What the email parser may read, as a proxy reads it: a field, or a fold of the one before;
# a value of printable bytes, tabs and obs-text; no other control byte (a bare CR, a NUL).
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[\t\x20-\x7e\x80-\xff]*(?:\r?\n)?")
_FOLD = re.compile(rb"[\t\x20][\t\x20-\x7e\x80-\xff]*(?:\r?\n)?")


class IndexedMessage(OldMessage):
    """OldMessage whose lookups by name (get, get_all, `in`) are a dictionary's, with the
    email package's answers: the first value, all of them in order, each as its policy fetches
    it. The fields stay in `_headers`, a plain list, where every method of the package keeps
    them; the index remembers the fields and the policy it was built from and is built anew
    when either is not what it was (a tuple of a few fields compared in C: still a fraction of
    the package's scan, which lowercases every name at every lookup)."""

    _built: tuple[tuple[Any, ...], Any] | None = None
    _index: dict[str, list[Any]] = {}  # noqa: RUF012 (replaced, never changed in place)

    def _indexed(self) -> dict[str, list[Any]]:
        fields, policy = tuple(self._headers), self.policy
        built = self._built
        if built is None or built[1] is not policy or built[0] != fields:
            index: dict[str, list[Any]] = {}
            fetch = policy.header_fetch_parse
            for k, v in fields:
                index.setdefault(k.lower(), []).append(fetch(k, v))
            self._index, self._built = index, (fields, policy)
        return self._index

    def get(self, name: str, failobj: Any = None) -> Any:
        values = self._indexed().get(name.lower())
        return values[0] if values else failobj

    def get_all(self, name: str, failobj: Any = None) -> Any:
        values = self._indexed().get(name.lower())
        return list(values) if values else failobj

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._indexed()

    def getheader(self, name: str, default: Any = None) -> Any:
        return self.get(name, default)

    @property
    def typeheader(self) -> Any:
        return self.get("content-type")


def read_headers(fp: Any) -> Any:
    """pywsgi's headers_factory(fp): the header block as pywsgi's OldMessage, with
    status "Line too long" for a line over MAX_LINE; http.client.HTTPException beyond
    MAX_HEADERS lines; ValueError for a block that can be read two ways (module doc)."""
    lines = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            msg = OldMessage()
            msg.status = "Line too long"
            return msg
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in _ENDS:
            break
    fields = lines[:-1]
    if lines[-1] and all(_PLAIN.fullmatch(line) for line in fields):
        msg = IndexedMessage()
        # the email parser's (compat32) reading of a one-line field, stored as compat32
        # stores it: (name, value) as given
        msg._headers = [
            (name.decode("latin-1"), value.lstrip(b" \t").rstrip(b"\r\n").decode("latin-1"))
            for name, _, value in (line.partition(b":") for line in fields)
        ]
        return msg
    for i, line in enumerate(fields):
        if not (_FIELD.fullmatch(line) or (i and _FOLD.fullmatch(line))):
            raise ValueError(f"a header line that is not `name: value`: {line[:40]!r}")
    text = b"".join(lines).decode("iso-8859-1")
    return email.parser.Parser(_class=OldMessage).parsestr(text)
