"""No token in any log line, whatever spelling carried it; failed authentications name the
client (for fail2ban), believing X-Forwarded-For only from configured proxies."""

import contextlib
import inspect
import io
import json
import logging
import os
import re
import signal
import socket
import string
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd import esl, logs
from channelsd.logs import JsonFormatter, TextFormatter, mask
from channelsd.standin.replay import Frame
from channelsd.tokens import digest

from conftest import Harness, token, wait_until

ROOT = Path(__file__).resolve().parent.parent
URLSAFE = string.ascii_letters + string.digits + "-_"


def raw(address: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def get(address: tuple[str, int], target: str) -> bytes:
    return raw(address, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())


def spellings(key: str = "auth_token") -> list[str]:
    """auth_token as werkzeug would decode it: plain, `_` or any letter percent-encoded."""
    return [key, key.replace("_", "%5F"), key.replace("_", "%5f"), "%61" + key[1:], quote(key)]


@pytest.fixture
def debug_daemon(switch: Any, make_daemon: Any, caplog: pytest.LogCaptureFixture) -> Harness:
    # The access log too: it is only written at debug. (Only the daemon's loggers: the
    # test's own HTTP client logs its URLs.)
    caplog.set_level(logging.DEBUG, logger="channelsd")
    return make_daemon([switch])


def test_a_token_in_a_rejected_request_line_is_masked(
    debug_daemon: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-in-a-bad-request-line"
    for line, status in (
        (f"GET /v2/accounts/acc1/channels?auth_token={secret} HTTP/9.9", b"400"),
        (f"GET /v2/accounts/acc1/channels?x=1&auth%5Ftoken={secret} HTTP/9.9", b"400"),
        (f"BREW /v2/x?auth_token={secret} HTCPCP/1.0", b"400"),
        (f"G\x01T /v2/x?auth_token={secret} HTTP/1.1 x", b"400"),
        (f"GET /v2/x?auth_token={secret}", b"404"),  # HTTP/0.9: served, and logged
    ):
        answer = raw(debug_daemon.daemon.http_address, line.encode("latin-1") + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert b'"error":"' + status in answer
    assert "bad request client=127.0.0.1" in caplog.text  # it was logged, masked
    assert secret not in caplog.text


def test_every_spelling_the_api_accepts_is_masked_in_every_line(
    debug_daemon: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad = token("admin1"), "wrong-secret-0123456789"
    for key in spellings():
        for value, status in ((good, b"200"), (bad, b"401")):
            # Raw: an HTTP client library would normalise %5F back to _ before sending.
            answer = get(
                debug_daemon.daemon.http_address, f"/v2/accounts/acc1/channels?{key}={value}"
            )
            assert answer.startswith(b"HTTP/1.1 " + status), (key, answer[:300])
    assert "http 127.0.0.1" in caplog.text and "auth failure client=" in caplog.text
    assert good not in caplog.text and bad not in caplog.text


@given(
    value=st.text(URLSAFE, min_size=8, max_size=60),
    encode=st.lists(st.booleans(), min_size=10, max_size=10),
    before=st.sampled_from(["", "x=1&", "path=/v2/a?", "GET /v2/c?a=b&"]),
    after=st.sampled_from(["", "&y=2", " HTTP/1.1", "'", '"', " 200 1234"]),
)
@settings(max_examples=300, derandomize=True, deadline=None)
def test_mask_removes_the_value_of_any_percent_encoding_of_the_key(
    value: str, encode: list[bool], before: str, after: str
) -> None:
    key = "".join(
        f"%{ord(c):02X}" if enc else c for c, enc in zip("auth_token", encode, strict=True)
    )
    line = f"{before}{key}={value}{after}"
    masked = mask(line)
    assert value not in masked, line
    assert masked.startswith(before) and masked.endswith(after)


def test_the_formatters_mask_messages_and_tracebacks() -> None:
    secret = "tok-in-a-traceback-1234"
    try:
        raise ValueError(f"bad url /v2/x?auth_token={secret}")
    except ValueError:
        record = logging.LogRecord(
            "channelsd", logging.ERROR, "", 0, "failed %s", (f"auth_token={secret}",), None
        )
        record.exc_info = sys.exc_info()
    for formatter in (TextFormatter(), JsonFormatter()):
        assert secret not in formatter.format(record)


def test_failed_authentication_names_the_client_for_fail2ban(
    switch: Any, make_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channelsd")
    h = make_daemon([switch])
    spoofed = {"X-Forwarded-For": "203.0.113.7"}
    assert h.api.get("/v2/accounts/acc1/channels", "bad-token-1", headers=spoofed).status_code
    # A path with a line break and a fake "client=" stays one line and cannot frame anyone.
    h.api.get("/v2/accounts/acc1/channels/x%0Aauth failure client=198.51.100.9 ", "bad-token-2")
    h.api.get("/v2/accounts/acc1/channels", None)  # no token at all: not a failed login
    lines = [r.getMessage() for r in caplog.records if "auth failure" in r.getMessage()]
    assert len(lines) == 2, lines
    # The filter README documents, with fail2ban's <HOST> as a plain address group.
    readme = (ROOT / "README.md").read_text()
    failregex = re.search(r"^failregex = (.+)$", readme, re.M).group(1)
    fail2ban = re.compile(re.escape(failregex).replace("<HOST>", r"(\S+)"))
    assert [fail2ban.search(line).group(1) for line in lines] == ["127.0.0.1", "127.0.0.1"]
    assert all("\n" not in line for line in lines)


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    switch: Any, make_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channelsd")
    h = make_daemon([switch], http={"trusted_proxies": ["127.0.0.0/8"]})
    chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 127.0.0.2"}
    h.api.get("/v2/accounts/acc1/channels", "bad-token-3", headers=chain)
    h.api.get("/v2/accounts/acc1/channels", "bad-token-4", headers={"X-Forwarded-For": "junk"})
    lines = [r.getMessage() for r in caplog.records if "auth failure" in r.getMessage()]
    # Read from the right: the proxy's own hop (trusted) is skipped, the next one is the
    # client; whatever the client wrote further left is not believed.
    assert "client=203.0.113.7 " in lines[0]
    assert "client=127.0.0.1 " in lines[1]


def test_the_running_process_writes_no_token_to_its_journal(switch: Any, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    good = "good-token-for-the-journal-test"
    conf = tmp_path / "channelsd.toml"
    conf.write_text(
        f'[http]\nport = {port}\n[logging]\nlevel = "debug"\n[[nodes]]\nname = "fs1"\n'
        f'host = "127.0.0.1"\nport = {switch.port}\npassword = "ClueCon"\n'
        f'[[tokens]]\nsha256 = "{digest(good)}"\naccount_id = "acc1"\nrole = "admin"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "channelsd", "run", "-c", str(conf)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    bad = "bad-token-for-the-journal-test"
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(base + "/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(up, timeout=30, what="daemon up")
        for key in spellings():
            for value in (good, bad):
                get(("127.0.0.1", port), f"/v2/accounts/acc1/channels?{key}={value}")
                raw(
                    ("127.0.0.1", port),
                    f"GET /v2/accounts/acc1/channels?{key}={value} HTTP/9.9\r\n\r\n".encode(),
                )
        requests.get(base + "/v2/accounts/acc1/channels", headers={"X-Auth-Token": bad})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    journal = proc.stderr.read()
    assert "auth failure client=127.0.0.1" in journal and "bad request client=" in journal
    assert good not in journal and bad not in journal


# Keys and values as a log line may hold them: the secret keys in any case, percent- and
# plus-encoded pieces, and the characters whose lower() is ASCII though they are not.
_LINE_PIECES = st.sampled_from(
    [
        "auth_token",
        "AUTH_TOKEN",
        "Auth_Token",
        "password",
        "PassWord",
        "x-auth-token",
        "Authorization",
        "bearer ",
        "%5F",
        "%61",
        "%25",
        "+",
        "=",
        ":",
        "&",
        "?",
        " ",
        "'",
        '"',
        "action",
        "token",
        "uuid",
        "abc",
        "\u212a",
        "\u0130",
        "\u017f",
        "\u00e9",
        "/",
    ]
)


@given(st.lists(_LINE_PIECES, max_size=16).map("".join))
@settings(max_examples=500, derandomize=True, deadline=None)
def test_the_quick_answer_of_mask_is_the_full_one(line: str) -> None:
    # mask() returns a line unchanged when it cannot hold a secret; the full search must agree.
    assert mask(line) == logs._mask(line)


def test_the_text_formatters_time_is_loggings_own() -> None:
    ours, theirs = TextFormatter(), logging.Formatter()
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_001.25):
        record = logging.LogRecord("channelsd", logging.INFO, "", 0, "x", (), None)
        record.created, record.msecs = created, int((created % 1) * 1000)
        assert ours.formatTime(record) == theirs.formatTime(record)
        assert ours.formatTime(record, "%H") == theirs.formatTime(record, "%H")


# -- one line per record, whatever a message holds ----------------------------------------------


@contextlib.contextmanager
def journal(fmt: str) -> Iterator[io.StringIO]:
    """What the daemon's own logging (logs.setup) writes, into a string instead of stderr.
    A context manager, not a fixture: pytest's capture handlers, which setup() replaces, are
    those of the phase the test runs in and must be back before that phase ends."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    switches = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    srcfile = logging._srcfile
    stream = io.StringIO()
    try:
        logs.setup("debug", fmt)
        root.handlers[0].setStream(stream)
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = switches
        logging._srcfile = srcfile


# What str.splitlines() splits on, and what a terminal takes as a command (C0, DEL, C1).
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The reading of a text line's message that logs.escape() documents: these are escapes,
# any other backslash is itself.
_ESCAPE = re.compile(r"\\(\\|t|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})")
_SHORT = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def unescape(shown: str) -> str:
    return _ESCAPE.sub(lambda m: _SHORT.get(m.group(1)) or chr(int(m.group(1)[1:], 16)), shown)


def text_message(line: str) -> str:
    """The message of a text line: after the date, time, level and logger name."""
    return line.split(" ", 4)[4]


# Any text, with what is hostile in a log line drawn often: line breaks, terminal controls,
# the bidi override, backslashes and text that looks like an escape, a secret key, a %.
_NASTY = st.sampled_from(
    [*LINE_BREAKS, "\x00", "\t", "\x1b[2J", "\x7f", "\x9b", "\u202e", "\\", "\\n", "\\x1b"]
    + ["\\u2028", "\\\\", "auth_token=", "password=", "Authorization: ", "%", "%5F"]
)
_TEXT = st.lists(st.one_of(st.text(), _NASTY), max_size=8).map("".join)
_ARG = st.one_of(_TEXT, st.integers(), st.floats(), st.binary(max_size=8), st.none())


@st.composite
def log_calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], str]:
    """A logging call's message and arguments, and the message logging makes of them."""
    args = tuple(draw(st.lists(_ARG, max_size=3)))
    pieces = draw(st.lists(_TEXT, min_size=len(args) + 1, max_size=len(args) + 1))
    if not args:  # logging leaves a message without arguments as it is, % and all
        return pieces[0], args, pieces[0]
    marks = draw(st.lists(st.sampled_from(["%s", "%r"]), min_size=len(args), max_size=len(args)))
    msg = pieces[0].replace("%", "%%")
    for mark, piece in zip(marks, pieces[1:], strict=True):
        msg += mark + piece.replace("%", "%%")
    return msg, args, msg % args


@given(log_calls())
@settings(max_examples=400, derandomize=True, deadline=None)
def test_any_message_is_one_line_in_either_form(call: tuple[str, tuple[Any, ...], str]) -> None:
    msg, args, message = call
    for fmt in ("text", "json"):
        with journal(fmt) as stream:
            logging.getLogger("channelsd.test").warning(msg, *args)
        out = stream.getvalue()
        assert out.endswith("\n")
        line = out[:-1]
        assert line.splitlines() == [line], (fmt, line)
        assert RAW_CONTROL.search(line) is None, (fmt, line)
        if fmt == "text":
            # nothing deleted: the message reads back exactly (as masked)
            assert unescape(text_message(line)) == mask(message)
        else:
            assert json.loads(line)["msg"] == mask(message)


@given(_TEXT)
@settings(max_examples=300, derandomize=True, deadline=None)
def test_escape_reads_back_exactly_and_leaves_plain_text_alone(text: str) -> None:
    shown = logs.escape(text)
    assert unescape(shown) == text
    assert RAW_CONTROL.search(shown) is None and shown.splitlines() in ([shown], [])
    if text.isprintable() and "\\" not in text:
        assert shown is text  # the fast path: nothing copied


@pytest.mark.parametrize(
    "template",
    [
        # a control mask() reads as a separator: escaped first, it would join the key
        # ("\x1cauth_token" is no secret key) and the token would be kept
        "client sent\x1cauth_token=%s\x85",
        # a vertical tab between the header and its value, which mask() skips as a space
        "Authorization:\x0bBearer %s\u2029",
        "GET /v2/x?auth_token=%s\r\nX-Forged: client=198.51.100.9\u2028",
    ],
    ids=["separator before the key", "space before the value", "line breaks after"],
)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_token_beside_a_control_character_is_still_masked(template: str, fmt: str) -> None:
    secret = "tok-beside-a-control-0123"
    with journal(fmt) as stream:
        logging.getLogger("channelsd.test").info("bad request %s", template % secret)
    out = stream.getvalue()
    assert secret not in out and logs.MASK in out
    line = out[:-1]
    assert line.splitlines() == [line] and RAW_CONTROL.search(line) is None, line
    message = "bad request " + mask(template % secret)
    if fmt == "text":
        assert unescape(text_message(line)) == message
    else:
        assert json.loads(line)["msg"] == message


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_keeps_its_frames_lines_and_escapes_the_exceptions_text(fmt: str) -> None:
    secret, other = "tok-in-the-traceback-1234", "tok-in-the-message-5678"
    with journal(fmt) as stream:
        try:
            raise ValueError(f"bad url /v2/x?auth_token={secret}\nits second line")
        except ValueError:
            logging.getLogger("channelsd.test").exception(
                "failed on %s", f"x\r\nforged=1\u2028auth_token={other}"
            )
    out = stream.getvalue()
    assert secret not in out and other not in out
    if fmt == "text":
        lines = out.splitlines()
        assert text_message(lines[0]) == r"failed on x\r\nforged=1\u2028auth_token=********"
        assert lines[1] == "Traceback (most recent call last):"
        assert lines[-1] == r"ValueError: bad url /v2/x?auth_token=********\nits second line"
    else:
        line = out[:-1]
        assert line.splitlines() == [line] and RAW_CONTROL.search(line) is None, line
        entry = json.loads(line)
        assert entry["msg"] == "failed on x\r\nforged=1\u2028auth_token=********"
        lines = entry["exception"].splitlines()
        assert lines[0] == "Traceback (most recent call last):"
        assert lines[-1] == r"ValueError: bad url /v2/x?auth_token=********\nits second line"


@pytest.mark.parametrize(
    "fmt, breaker",
    [
        ("text", b"\r"),  # a carriage return: the terminal writes the rest over the line
        ("text", "\u2028".encode()),
        ("text", b"\x1b[2K\x1b[1G"),  # erase the line, back to its start: no \r needed
        ("json", "\u2028".encode()),  # what JSON's encoder leaves raw
        ("json", "\x85".encode()),
    ],
)
def test_a_hostile_switchs_header_value_makes_one_line(
    switch: Any, make_daemon: Any, fmt: str, breaker: bytes
) -> None:
    """End to end: the stand-in switch sends the daemon's events connection a frame whose
    Content-Type carries a line break and a forged line; the frame is too big to keep, so
    the daemon logs that it dropped it, Content-Type and all. One line, the break shown."""
    h = make_daemon([switch])
    forged = b"fs1/events: node=fs1 restarted core_uuid=forged purged=0"
    size = esl.MAX_EVENT_BYTES + 1
    raw = b"Content-Type: api/response%s%s\nContent-Length: %d\n\n" % (breaker, forged, size)
    with journal(fmt) as stream:
        switch.send_frames([Frame("api/response", "HEARTBEAT", None, raw + b"z" * size)])
        wait_until(lambda: "core_uuid=forged" in stream.getvalue(), 30, "the drop is logged")
        # the framing held: the connection is kept and still reads
        a, _ = switch.originate("9000", {"account_id": "acc1"})
        wait_until(lambda: h.table.get(a) is not None, 30, "a call after the dropped frame")
    out = stream.getvalue()
    lines = out.splitlines()
    assert out == "".join(line + "\n" for line in lines)  # nothing else split a line
    assert RAW_CONTROL.search(out.replace("\n", "")) is None, out
    if fmt == "text":
        stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ channelsd\S* ")
        assert all(stamp.match(line) for line in lines), lines
        forging = [text_message(line) for line in lines if "core_uuid=forged" in line]
        shown = logs.escape(breaker.decode())
        assert forging == [
            f"fs1/events: dropped a api/response{shown}{forged.decode()} body of {size} "
            f"bytes (limit {esl.MAX_EVENT_BYTES})"
        ]
    else:
        entries = [json.loads(line) for line in lines]
        forging = [e["msg"] for e in entries if "core_uuid=forged" in e["msg"]]
        assert len(forging) == 1 and (breaker + forged).decode() in forging[0], forging


# -- masking costs what the line's length does ---------------------------------------------------


@given(st.text("ab_%&=:/ ", max_size=40))
@settings(max_examples=300, derandomize=True, deadline=None)
def test_a_query_key_is_tried_only_where_a_run_of_key_characters_starts(text: str) -> None:
    """mask() runs on every line, before anything is cut short (the bad-request line's text is
    masked, then cut to 300 characters). Its key pattern was tried again from every character
    of a run of key characters, each try scanning to the run's end: quadratic, 64 KB of
    `auth:aaaa...` took half a minute, 8 KB of a request line held the hub ~0.5 s. A key
    starts only where such a run starts, so from anywhere else the pattern fails at once:
    each character is scanned a bounded number of times (linear). Checked as that property,
    not as a time; the old pattern matched from inside a run ("ab=" at its "b")."""
    key_char = re.compile(r"[^\s&?;=\"'/<>(),]")
    for i in range(1, len(text)):
        if key_char.match(text, i - 1) and key_char.match(text, i):
            assert logs._QUERY_KEY.match(text, i) is None, (text, i)
    line = "auth:" + "a" * 4096
    assert mask(line) == line
    assert mask(f"x {line}&auth_token=tok-after-a-run") == f"x {line}&auth_token={logs.MASK}"


def test_a_long_bad_request_line_is_answered_and_logged_masked(
    debug_daemon: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """End to end: a client's malformed request line (8 KB, what pywsgi reads) is answered
    400 and logged, masked. mask() was quadratic in such a line: each one held the hub (every
    request, every node's ingest) ~0.5 s. Its linear form is checked as the property that
    gives it (test_a_query_key_is_tried_only_where_a_run_of_key_characters_starts), not as a
    time here."""
    address = debug_daemon.daemon.http_address
    secret = "tok-in-a-bad-line-0123456789"
    line = f"GET /auth:x?auth_token={secret}&".encode() + b"a" * 8000 + b" HTTP/9.9\r\n"
    for _ in range(8):
        answer = raw(address, line + b"Host: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert "bad request client=127.0.0.1" in caplog.text  # it was logged, masked
    assert secret not in caplog.text


def test_a_json_lines_message_with_lone_surrogates_reads_back_by_the_text_forms_rule() -> None:
    """JSON cannot write a lone high surrogate followed by a lone low one: any parser reads
    \\ud800\\udc00 as the pair U+10000. A message holding lone surrogates is written in
    "msg" as the text form writes it (logs.escape), and reads back exactly by that rule; any
    other message is itself."""
    for message in ("x \ud800\udc00 y", "\udc80 alone", "a \\u0041 \ud800 b"):
        with journal("json") as stream:
            logging.getLogger("channelsd.test").warning("%s", message)
        line = stream.getvalue()[:-1]
        assert line.splitlines() == [line] and RAW_CONTROL.search(line) is None
        shown = json.loads(line)["msg"]
        assert shown == logs.escape(message)
        assert unescape(shown) == message


# -- tracebacks: the frames' lines are the interpreter's, the exception's text is outside text --


def _raised(exc: BaseException) -> Any:
    try:
        raise exc
    except BaseException:
        return sys.exc_info()


def _chained(message: str) -> Any:
    try:
        try:
            raise KeyError(message)
        except KeyError as inner:
            raise RuntimeError(message) from inner
    except RuntimeError:
        try:
            raise ValueError(message)
        except ValueError:
            return sys.exc_info()


_PLAIN = st.text(string.ascii_letters + string.digits + " =:/?._-", max_size=60)


@given(_PLAIN)
@settings(max_examples=100, derandomize=True, deadline=None)
def test_a_traceback_without_outside_controls_is_the_interpreters_own(message: str) -> None:
    """format_exception() is traceback's own text where nothing needs escaping: a cause, a
    context and the frames kept, in their order."""
    for exc_info in (_raised(ValueError(message)), _chained(message)):
        theirs = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
        assert logs.format_exception(exc_info) == theirs


@given(_TEXT)
@settings(max_examples=200, derandomize=True, deadline=None)
def test_an_exceptions_text_is_one_line_per_part_and_reads_back(text: str) -> None:
    """Whatever an exception's message holds, each exception of a chain adds its own
    lines only: the frames and one line of its text, which reads back exactly (masked)."""
    exc_info = _chained(text)
    shown = logs.format_exception(exc_info).split("\n")
    plain = logs.format_exception(_chained("x")).split("\n")
    assert len(shown) == len(plain)
    assert RAW_CONTROL.search("".join(shown)) is None
    last = shown[-1]
    assert unescape(last) == (mask(f"ValueError: {text}") if text else "ValueError")


def test_an_exception_groups_members_are_written() -> None:
    group = ExceptionGroup("two failed", [ValueError("first\nFORGED"), KeyError("second")])
    shown = logs.format_exception(_raised(group))
    assert "+---- sub-exception 1 ----" in shown and "+---- sub-exception 2 ----" in shown
    assert r"ValueError: first\nFORGED" in shown and "KeyError: 'second'" in shown
    assert "\nFORGED" not in shown


def test_a_failed_greenlets_traceback_goes_through_logging() -> None:
    """gevent's hub printed a failed greenlet's traceback straight to stderr: masked, but
    not escaped, so an exception's text from outside wrote lines of its own."""
    import gevent

    hub = gevent.get_hub()
    logs.log_greenlet_errors(hub)
    try:
        with journal("text") as stream:

            def fails() -> None:
                raise ValueError("bad \nFORGED line auth_token=tok-secret-0123456789")

            gevent.spawn(fails).join()
    finally:
        del hub.print_exception  # back to the class's
    out = stream.getvalue()
    lines = out.splitlines()
    assert "ERROR channelsd.greenlet" in lines[0] and "failed with ValueError" in lines[0]
    assert lines[-1] == r"ValueError: bad \nFORGED line auth_token=********"
    assert "tok-secret" not in out


# -- a line the journal takes as one entry ------------------------------------------------------

_WIDE = st.sampled_from(["a", "\x1b", "\u2028", "\U0001f600", "\ud800", "é", "\\", '"'])


@given(
    unit=st.lists(_WIDE, min_size=1, max_size=4).map("".join),
    repeat=st.integers(1, 40_000),
    pairs=st.booleans(),
    with_traceback=st.booleans(),
)
@settings(max_examples=60, derandomize=True, deadline=None)
def test_no_line_is_longer_than_the_journal_takes(
    unit: str, repeat: int, pairs: bool, with_traceback: bool
) -> None:
    """journald splits a line over LineMax (48 KiB) and writes the rest as an entry of its
    own, whose text a 60 KB caller name would choose. Every line, in both forms, stays under
    it; the message is cut with how much was cut, and a json entry stays one JSON object."""
    value = unit * repeat
    message = " ".join(f"k{i}={value[i::7]}" for i in range(7)) if pairs else value
    for fmt in ("text", "json"):
        with journal(fmt) as stream:
            log = logging.getLogger("channelsd.test")
            if with_traceback:
                try:
                    raise ValueError(value)
                except ValueError:
                    log.exception("%s", message)
            else:
                log.warning("%s", message)
        out = stream.getvalue()
        for line in out.splitlines():
            assert len(line.encode("utf-8", "surrogatepass")) < 48 * 1024, (fmt, len(line))
        if fmt == "json":
            line = out[:-1]
            assert line.splitlines() == [line]
            entry = json.loads(line)
            if len(message) > logs.MAX_MESSAGE:
                assert entry["msg"].endswith(" more characters)")
        elif len(message) > logs.MAX_MESSAGE:
            cut = len(message) - logs.MAX_MESSAGE
            assert out.splitlines()[0].endswith(f"... ({cut} more characters)")


# -- chains of any length (outside attack) ----------------------------------------------------


def _long_chain(n: int) -> BaseException:
    """An exception whose __context__ chain is n long, as a retry loop that raises while
    handling the previous attempt's error leaves it (no recursion: any stack depth)."""
    exc: BaseException | None = None
    for i in range(n):
        try:
            try:
                if exc is not None:
                    raise exc
                raise KeyError("first")
            except Exception:
                raise ValueError(f"attempt {i}")  # noqa: B904
        except ValueError as e:
            exc = e
    assert exc is not None
    return exc


def test_format_exception_takes_a_chain_the_interpreter_takes() -> None:
    """traceback.format_exception walks a chain without recursion; format_exception recursed
    once per link and raised RecursionError past ~1,000 links."""
    import traceback

    from channelsd import logs

    exc = _long_chain(1500)
    assert "attempt 1499" in "".join(traceback.format_exception(exc))
    try:
        text = logs.format_exception((type(exc), exc, exc.__traceback__))
    except RecursionError as e:
        text = repr(e)
    assert text.rstrip().endswith("ValueError: attempt 1499"), text[-200:]


def test_logging_such_an_exception_does_not_raise_into_the_caller() -> None:
    """logging re-raises a formatter's RecursionError (it does not handleError() it): the
    caller's log.error(..., exc_info=True), in an except block, itself raised."""
    import io

    from channelsd import logs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter("%(levelname)s %(name)s %(message)s"))
    log = logging.getLogger("channelsd.attack.chain")
    log.addHandler(handler)
    log.propagate = False
    raised = None
    try:
        exc = _long_chain(1500)
        try:
            raise exc
        except ValueError:
            try:
                log.error("request failed", exc_info=True)
            except RecursionError as e:
                raised = repr(e)  # (not re-raised here: pytest would render the whole chain)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert raised is None, f"log.error raised {raised}"
    assert "ValueError: attempt 1499" in stream.getvalue()


def test_a_greenlet_failing_with_a_long_chain_is_logged() -> None:
    """The hub path (log_greenlet_errors) in a real process: the greenlet's failure must reach
    the log as `<greenlet> failed with ValueError` and its traceback; with the formatter's
    RecursionError only gevent's own print of that RecursionError reached stderr."""
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import gevent, sys
        from channelsd import logs
        logs.log_greenlet_errors(gevent.get_hub())
        logs.setup("info", "json")
        def fail():
            raise _long_chain(1500)
        gevent.spawn(fail).join()
        gevent.sleep(0.1)
        """
    )
    # (_long_chain's own source, so that the process builds the same chain)
    script = "from __future__ import annotations\n" + inspect.getsource(_long_chain) + script
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    import json

    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(
        e["logger"] == "channelsd.greenlet" and "failed with ValueError" in e["msg"] for e in lines
    ), proc.stderr[-2000:]
    assert "RecursionError" not in proc.stderr


# -- the json form's fields are the template's --------------------------------------------------


@given(st.lists(_TEXT, min_size=2, max_size=2))
@settings(max_examples=200, derandomize=True, deadline=None)
def test_an_argument_adds_no_json_field_and_moves_none(values: list[str]) -> None:
    """The fields beside a json line's message were read from the formatted message: an
    argument holding `node=fs9` (a header value, a client's path) added a `node` field, or
    took a field's place when it came first. They are the template's keys, each with its own
    argument, masked (outside attack)."""
    hostile = values[0] + " node=fs9 error=forged auth_token=tok-0123456789 x"
    with journal("json") as stream:
        logging.getLogger("channelsd.test").warning(
            "bad request client=%s error=%s state='%s' kind=literal", hostile, values[1], 5
        )
    entry = json.loads(stream.getvalue())
    fields = set(entry) - {"ts", "level", "logger", "msg"}
    assert fields == {"client", "error", "state", "kind"}
    assert entry["client"] == logs.bounded(mask("client=" + hostile))[len("client=") :]
    assert "tok-0123456789" not in entry["client"]
    assert entry["error"] == mask("error=" + values[1])[len("error=") :]
    assert (entry["state"], entry["kind"]) == ("5", "literal")


def test_the_fields_of_templates_of_every_shape() -> None:
    def record(msg: str, args: Any) -> logging.LogRecord:
        return logging.LogRecord("channelsd.test", logging.INFO, "", 0, msg, args, None)

    assert logs.fields(record("n=%d%% of=%s", (5, "x y"))) == {"n": "5%", "of": "x y"}
    assert logs.fields(record("a=%(a)s b=%(b)r", ({"a": 1, "b": "z"},))) == {"a": "1", "b": "'z'"}
    assert logs.fields(record("plain=100%% x=%s", ())) == {"plain": "100%%", "x": "%s"}
    assert logs.fields(record("w=%*d", (3, 7))) == {}  # a width from the arguments
    assert logs.fields(record("bad=%s", ())) == {"bad": "%s"}
    assert logs.fields(record("bad=%d", ("x",))) == {}  # logging itself would fail on it
    assert logs.fields(record("password=%s", ("hunter2",))) == {"password": logs.MASK}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_log_call_whose_arguments_do_not_fit_is_one_safe_line(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """logging prints a record it cannot format to stderr ("--- Logging error ---"), with its
    raw arguments: around mask() and escape(). It is written as what it was given."""
    with journal(fmt) as stream:
        logging.getLogger("channelsd.test").warning("n=%d", "x\nauth_token=tok-0123456789")
    out = stream.getvalue()
    assert out.count("\n") == 1 and "unformattable log call" in out
    assert "tok-0123456789" not in out
    assert "Logging error" not in capsys.readouterr().err


def test_a_big_exception_group_is_written_as_the_interpreter_bounds_it() -> None:
    group = ExceptionGroup("many", [ValueError(str(i)) for i in range(40)])
    shown = logs.format_exception(_raised(group))
    assert shown.count("+---- sub-exception") == logs.MAX_GROUP
    assert shown.endswith("+---- ... and 25 more exceptions ----")


def test_a_traceback_that_cannot_be_written_is_named_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """logging re-raises what a formatter raises into the caller of log.exception(); a
    traceback that cannot be formatted is named instead (and exc_info that is no exception,
    which traceback itself refuses, is written as given)."""

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot\nFORGED")

    monkeypatch.setattr(traceback.TracebackException, "from_exception", fails)
    for fmt in ("text", "json"):
        with journal(fmt) as stream:
            try:
                raise ValueError("x")
            except ValueError:
                logging.getLogger("channelsd.test").exception("failed")
        out = stream.getvalue()
        assert "ValueError: traceback not written" in out and "\nFORGED" not in out, out
    assert logs.format_exception((ValueError, "a\nb", None)) == r"<class 'ValueError'> 'a\\nb'"


@pytest.mark.parametrize(
    "args",
    [("auth_token=tok-0123456789", float("inf")), ("auth_token=tok-0123456789", 2**64)],
    ids=["inf", "big"],
)
def test_a_json_field_that_percent_cannot_format_is_one_safe_line(
    args: tuple[Any, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """`%d` of an infinity (and `%c` of a code point past U+10FFFF) raises OverflowError,
    which fields() does not catch (only KeyError, IndexError, TypeError, ValueError): the
    json formatter raises, and logging's handleError prints "--- Logging error ---", a
    traceback and the record's raw arguments to stderr (the journal), around mask() and
    escape(): the token is written as it was given. (The text form writes one line.)"""
    template = "node=%s took=%d" if isinstance(args[1], float) else "node=%s char=%c"
    with journal("json") as stream:
        logging.getLogger("channelsd.test").warning(template, *args)
    err = capsys.readouterr().err
    out = stream.getvalue()
    assert "Logging error" not in err and "tok-0123456789" not in err
    assert out.count("\n") == 1 and "tok-0123456789" not in out


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_a_json_field_whose_argument_str_raises_is_one_safe_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """message_of() catches any exception of an argument's __str__ ("unformattable log
    call"); fields() formats the same argument again and lets a RuntimeError through."""
    with journal("json") as stream:
        logging.getLogger("channelsd.test").warning("x=%s y=%s", Unprintable(), "auth_token=t-99")
    assert "Logging error" not in capsys.readouterr().err
    assert stream.getvalue().count("\n") == 1 and "t-99" not in stream.getvalue()


def test_a_secret_in_a_repr_or_under_a_longer_key_is_masked() -> None:
    """A %r of text from outside writes its line break as `\\n`, which joined the key's run
    of characters (`x\\nauth_token`): the token was written (outside attack, round 2)."""
    secret = "tok-0123456789"
    for line in (
        repr(f"x\nauth_token={secret}"),
        repr(f"\x1bpassword={secret}"),
        f"db_password={secret}",
        f"?my.auth%5Ftoken={secret}",
    ):
        assert secret not in mask(line), line
        for fmt in ("text", "json"):
            with journal(fmt) as stream:
                logging.getLogger("channelsd.test").warning("reason=%r", line)
            assert secret not in stream.getvalue()


def test_a_hyphenated_template_key_is_no_json_field_of_its_end() -> None:
    record = logging.LogRecord(
        "channelsd.test", logging.INFO, "", 0, "X-Auth-Token=%s node=%s", ("tok-1", "fs1"), None
    )
    assert logs.fields(record) == {"node": "fs1"}
    assert "tok-1" not in JsonFormatter().format(record)
