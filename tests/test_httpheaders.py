"""channelsd.httpheaders reads every header block as pywsgi's own parser (the email
package's) does: the same names and values in the same order, the same status, the same
bytes consumed; only faster for plain blocks."""

import io

import pytest
from gevent.pywsgi import WSGIHandler, headers_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd import httpheaders
from channelsd.httpheaders import MAX_HEADERS, MAX_LINE, read_headers
from channelsd.httpserver import Handler

_NAMES = st.sampled_from(
    [b"Host", b"Content-Length", b"X-Auth-Token", b"content-type", b"X_Under", b"From", b"A"]
)
_VALUES = st.sampled_from(
    [b"", b"x", b" spaced ", b"\tTab", b"a:b", b"caf\xc3\xa9", b"\x85", b"\x0b", b"x\ry", b"  "]
)
_PLAIN_VALUES = st.sampled_from([b"", b"x", b" spaced ", b"\tTab", b"a:b", b"  ", b"tok-1.2_3"])
_ENDINGS = st.sampled_from([b"\r\n", b"\n"])


# Values and lines a proxy in front may read otherwise than the email parser: refused.
_TWO_WAYS = (b"\x0b", b"x\ry")


@st.composite
def blocks(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A block, and whether it holds a line that can be read two ways (httpheaders' doc)."""
    lines = []
    refused = False
    plain = draw(st.booleans())  # half the blocks only plain fields: the quick reading's
    for _ in range(draw(st.integers(0, 6))):
        kinds = ["field"] if plain else ["field", "field", "fold", "no colon", "odd"]
        kind = draw(st.sampled_from(kinds))
        end = draw(_ENDINGS)
        if kind == "field":
            sep = draw(st.sampled_from([b": ", b":", b":  ", b":\t"] + ([] if plain else [b" : "])))
            value = draw(_PLAIN_VALUES if plain else _VALUES)
            refused |= sep == b" : " or value in _TWO_WAYS
            lines.append(draw(_NAMES) + sep + value + end)
        elif kind == "fold":
            value = draw(_VALUES)
            refused |= not lines or value in _TWO_WAYS
            lines.append(draw(st.sampled_from([b" ", b"\t"])) + value + end)
        elif kind == "no colon":
            refused = True
            lines.append(b"garbage" + end)
        else:
            refused = True
            lines.append(draw(st.sampled_from([b":novalue", b"From someone", b"N\x00: v"])) + end)
    ends = [b"\r\n", b"\n"] if plain else [b"\r\n", b"\n", b"", b"Cut: short"]
    tail = draw(st.sampled_from(ends))
    refused |= tail == b""  # the body's first bytes read as a line without a colon
    return b"".join(lines) + tail + b"BODY", refused


def both(block: bytes) -> tuple[object, object]:
    ours_fp, theirs_fp = io.BytesIO(block), io.BytesIO(block)
    ours, theirs = read_headers(ours_fp), headers_factory(theirs_fp)
    return (
        (ours.status, list(ours.items()), list(ours.headers), ours_fp.read()),
        (theirs.status, list(theirs.items()), list(theirs.headers), theirs_fp.read()),
    )


@given(blocks())
@settings(max_examples=800, derandomize=True, deadline=None)
def test_every_block_reads_as_the_email_parser_reads_it(drawn: tuple[bytes, bool]) -> None:
    block, refused = drawn
    if refused:
        with pytest.raises(ValueError):
            read_headers(io.BytesIO(block))
        return
    ours, theirs = both(block)
    assert ours == theirs, block


def test_a_plain_request_block(monkeypatch: pytest.MonkeyPatch) -> None:
    block = b"Host: h\r\nContent-Length: 19\r\nX-Auth-Token:  tok \r\n\r\n{}"
    ours, theirs = both(block)
    assert ours == theirs
    # ... and read without the email parser
    monkeypatch.setattr(httpheaders.email.parser, "Parser", None)
    assert list(read_headers(io.BytesIO(block)).items()) == ours[1]
    assert ours[1] == [("Host", "h"), ("Content-Length", "19"), ("X-Auth-Token", "tok ")]


def test_the_limits_are_http_clients() -> None:
    ours, theirs = both(b"X-Long: " + b"a" * MAX_LINE + b"\r\n\r\n")
    assert ours == theirs and ours[0] == "Line too long"
    many = b"".join(b"H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    with pytest.raises(Exception) as mine:
        read_headers(io.BytesIO(many))
    with pytest.raises(Exception) as pywsgis:
        headers_factory(io.BytesIO(many))
    assert type(mine.value) is type(pywsgis.value) and str(mine.value) == str(pywsgis.value)


# Every spelling a lookup may use, and names no block holds.
_ASKED = [
    spelled
    for name in ("Host", "Content-Length", "X-Auth-Token", "content-type", "X_Under", "From", "A")
    for spelled in (name, name.lower(), name.upper())
] + ["Missing", "connection", "transfer-encoding"]

_CHANGES = st.lists(
    st.tuples(
        st.sampled_from(["set", "del", "replace", "raw", "add", "assign", "pop", "sort"]),
        st.sampled_from(_ASKED),
        _PLAIN_VALUES.map(lambda v: v.decode("latin-1")),
    ),
    max_size=5,
)


def _change(msg: object, op: str, name: str, value: str) -> object:
    """One change by a method of the email package (or of its field list); what it raised."""
    try:
        if op == "set":
            msg[name] = value
        elif op == "del":
            del msg[name]
        elif op == "replace":
            msg.replace_header(name, value)
        elif op == "raw":
            msg.set_raw(name, value)
        elif op == "add":
            msg.add_header(name, value, charset="x")
        elif op == "assign":
            msg._headers = [(name, value), *msg._headers]
        elif op == "pop":
            msg._headers.pop()
        else:
            msg._headers.sort()
    except (KeyError, IndexError) as exc:
        return type(exc)
    return None


def _lookups(msg: object) -> list[object]:
    return [
        (msg.get(n), msg.get(n, "-"), msg.get_all(n), msg.get_all(n, "-"), n in msg, msg[n])
        for n in _ASKED
    ] + [msg.typeheader, msg.getheader("content-length"), list(msg.items())]


@given(blocks(), _CHANGES)
@settings(max_examples=400, derandomize=True, deadline=None)
def test_lookups_by_name_answer_as_the_email_package_does(
    drawn: tuple[bytes, bool], changes: list[tuple[str, str, str]]
) -> None:
    """The index a plain block is read into answers every lookup as the email package's scan
    does, before and after each change any of its methods can make."""
    block, refused = drawn
    if refused:
        return
    ours, theirs = read_headers(io.BytesIO(block)), headers_factory(io.BytesIO(block))
    assert _lookups(ours) == _lookups(theirs), block
    for op, name, value in changes:
        assert _change(ours, op, name, value) == _change(theirs, op, name, value)
        assert _lookups(ours) == _lookups(theirs), (block, op, name, value)


@given(blocks())
@settings(max_examples=400, derandomize=True, deadline=None)
def test_the_environs_header_entries_are_pywsgis(drawn: tuple[bytes, bool]) -> None:
    """channelsd's handler turns a block into the environ's HTTP_* entries as pywsgi does,
    whichever way the block was read."""
    block, refused = drawn
    if refused:
        return

    ours, theirs = Handler.__new__(Handler), WSGIHandler.__new__(WSGIHandler)
    ours.headers = read_headers(io.BytesIO(block))
    theirs.headers = headers_factory(io.BytesIO(block))
    assert list(ours._headers()) == list(theirs._headers()), block


def test_a_plain_block_is_looked_up_without_a_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain reading is the indexed one: its lookups never lower-case the names of
    the fields one by one as the email package's do."""
    msg = read_headers(io.BytesIO(b"Host: h\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n"))
    assert isinstance(msg, httpheaders.IndexedMessage)
    msg.get("host")  # the index is built once
    monkeypatch.setattr(httpheaders.OldMessage, "get", None)
    monkeypatch.setattr(httpheaders.OldMessage, "get_all", None)
    assert (msg.get("CONTENT-LENGTH"), msg.get_all("x-a"), "HOST" in msg) == ("2", ["1"], True)
