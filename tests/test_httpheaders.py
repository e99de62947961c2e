"""channelsd.httpheaders reads every header block as pywsgi's own parser (the email
package's) does: the same names and values in the same order, the same status, the same
bytes consumed; only faster for plain blocks."""

import io

import pytest
from gevent.pywsgi import headers_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd import httpheaders
from channelsd.httpheaders import MAX_HEADERS, MAX_LINE, read_headers

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
