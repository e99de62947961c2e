"""Log lines for the journal: `key=value` text or one JSON object per line (configurable).

Messages are written as `what key=value ...`; the JSON form keeps that text and adds the
pairs as fields, so either form can be filtered. Tokens and passwords are never logged: every
line the process writes passes mask() on its way out, whoever wrote it (our code, pywsgi's
error path, a traceback), so a token a client put in a URL cannot reach the journal.

A message is also one line whatever it holds: text from outside (the switch's header values
and event names, a client's path, headers or close reason) may carry line breaks, terminal
escapes or bidi controls, which the formatters write as escapes (see escape()), never raw.
Tracebacks stay multi-line where their line breaks are ours (the frames); an exception's own
text may hold outside text and is escaped like a message (format_exception()). And a line is
never longer than the journal takes as one entry (see MAX_MESSAGE).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from channelsd.terminal.safe import BEYOND_C0, C0, json_safe

# A `key=value` of a message's template, the key after a space or at the start (the end of
# `X-Auth-Token=` is no key of its own), and a %-specifier (logging's printf style).
_PAIR = re.compile(r"(?<!\S)(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")
_SPECIFIER = re.compile(r"%(?:\(\w+\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")

MASK = "********"
# A query-string key and its "=": the key may be percent-encoded (auth%5Ftoken), which
# werkzeug decodes before the API reads it, so the decoded key is what counts.
# It starts only where a run of key characters does (the lookbehind): a key always did (a
# match could end nowhere but at an "="), and without it a long run with no "=" was tried
# from each of its characters again, quadratic in the line (8 KB of a request line held the
# hub ~0.5 s).
_QUERY_KEY = re.compile(r"(?<![^\s&?;=\"'/<>(),])([^\s&?;=\"'/<>(),]+)=")
_VALUE_END = re.compile(r"[\s&;\"'<>]|$")
# Header forms, should a request's headers ever be written out.
_HEADER_TOKEN = re.compile(
    r"(?i)((?:x-auth-token|authorization)\s*[:=]\s*(?:bearer\s+)?)([^\s,;\"']+)"
)
# A key that ends as one of these, decoded: a repr's escape before it (`'x\\nauth_token=…'`,
# a %r of text from outside) joins the key's run of characters, and a longer key with a
# secret's name (`db_password`) is as secret.
_SECRET_KEYS = ("auth_token", "password")
_SHORTEST_SECRET = min(map(len, _SECRET_KEYS))
# What a line needs for mask() to change it: a key that decodes to a secret one holds "auth"
# or "password" (re's case folding covers every character whose lower() is ASCII) unless it
# is percent-encoded; both header forms hold "auth". Most lines (an action's, a request's)
# hold none of them and are returned at once.
_MAYBE_SECRET = re.compile(r"(?i)auth|password|%")


# What a log line must not carry raw: C0 controls (line breaks, and ESC, which starts a
# terminal's escape sequences), DEL, C1 (U+0085 NEL breaks lines too, U+009B is a one-byte
# CSI), the line and paragraph separators, the bidi controls that make a terminal show a line
# in another order than it was written, and lone surrogates (a strict encoder raises on them,
# a lenient one writes them as raw bytes). The set `channelsd ls` shows as escapes on the
# operator's terminal (terminal/safe.py, its one definition), so both read alike. In the json
# form the encoder escapes C0 itself, and json_safe() the rest.
_CONTROLS = C0 + BEYOND_C0
# A control, or a backslash that could be read as the start of an escape: one followed by
# what an escape starts with (t, n, r, x, u, a backslash) or by a control (its escape starts
# with a backslash). Escaped too, or a client could write the six characters `\x1b[2J` and
# the operator could not tell them from an ESC the switch sent; doubled, every escape in a
# line is one the formatter wrote and the line reads back exactly. Any other backslash (a
# repr's \', a Windows path) is left alone: it cannot be mistaken for an escape, and doubling
# it would change lines that hold nothing to escape.
_ESCAPED_IN_TEXT = re.compile(f"[{_CONTROLS}]|\\\\(?=[\\\\tnrxu{_CONTROLS}])")
_SHORT = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _shown(m: re.Match[str]) -> str:
    char = m.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    r"""`text` as one line of plain text. Every control character is written as an escape
    (`\n`, `\r`, `\t`, `\xNN`, `\uNNNN`), not deleted: the operator still sees what was sent.
    A backslash followed by t, n, r, x, u, a backslash or a control is doubled; everything
    else is left as it is. Read back, `\\`, `\t`, `\n`, `\r`, `\xNN` and `\uNNNN` are escapes
    and any other backslash is itself, which gives the original text exactly."""
    # Most messages hold no control and no backslash: two scans in C, cheaper than the regex.
    if text.isprintable() and "\\" not in text:
        return text
    return _ESCAPED_IN_TEXT.sub(_shown, text)


# journald splits a line longer than its LineMax (48 KiB by default) and writes the rest as an
# entry of its own, whose text the outside would choose: a 60 KB caller name would start a
# forged entry. A message, and each line of a traceback, is cut at MAX_MESSAGE characters
# before it is escaped; an escape is at most six bytes (`\uNNNN`), a character at most four,
# so a text line stays under 25 KB. The json form adds the message's pairs beside it, and a
# traceback's lines in one string: an entry over LINE_MAX bytes is written shortened
# (JsonFormatter._shortened).
MAX_MESSAGE = 4000
MAX_GROUP = 15  # an ExceptionGroup's members written, as traceback writes them
LINE_MAX = 32 * 1024


def bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text`, cut to `limit` characters with a mark saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` as a message is written in the text form: bounded, then masked (a few thousand
    characters, not what a client sent: mask() is linear but not free), then escaped."""
    return escape(mask(bounded(text, limit)))


def message_of(record: logging.LogRecord) -> str:
    """The record's message. A call whose arguments do not fit its template makes logging
    print the raw record to stderr, around mask() and escape(): it is written as what it
    was given instead."""
    try:
        return record.getMessage()
    except Exception:
        # str(), not repr(): a repr's escapes would hide a secret's key from mask().
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        return " ".join(["unformattable log call:", *map(_text, (record.msg, *args))])


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def format_exception(exc_info: Any) -> str:
    """A traceback as logging writes it, with the exception's own text (its message, notes,
    the causes' messages) masked, escaped and bounded as a message is: that text may come
    from outside (a value in an error message) and its line breaks would forge lines. The
    frame lines are the interpreter's and keep their line breaks; they are masked and bounded
    too. Masked here, piece by piece before escaping, as a message is (see TextFormatter)."""
    exc = exc_info[1]
    if not isinstance(exc, BaseException):
        return one_line(f"{exc_info[0]!r} {exc!r}")
    lines: list[str] = []
    try:
        _exception_lines(traceback.TracebackException.from_exception(exc), lines, set())
    except Exception as failed:  # (as traceback's own would: notes whose iteration raises...)
        lines.append(one_line(f"{type(exc).__name__}: traceback not written: {failed!r}"))
    return "\n".join(lines)


def _lines(text: str) -> str:
    """Multi-line text of the interpreter's (a stack), each line masked, escaped and bounded."""
    return "\n".join(one_line(line) for line in text.rstrip("\n").split("\n"))


_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"


def _exception_lines(te: traceback.TracebackException, out: list[str], seen: set[int]) -> None:
    # TracebackException.format()'s walk, with its parts told apart: what the stack gives is
    # the interpreter's; what format_exception_only() gives holds the exception's own text.
    # The chain (causes, contexts) is walked in a loop, as format() does: a retry loop that
    # raises while handling the last attempt's error leaves a chain of any length, and one
    # call per link would raise RecursionError past ~1,000 (logging re-raises it to the
    # caller). Only an ExceptionGroup's members recurse, as deep as from_exception() went.
    chain = [te]  # te, then what it was raised from or while handling, and so on
    joins: list[str] = []
    while True:
        seen.add(id(te))
        if te.__cause__ is not None and id(te.__cause__) not in seen:
            te, join = te.__cause__, _CAUSE
        elif (
            te.__context__ is not None
            and not te.__suppress_context__
            and id(te.__context__) not in seen
        ):
            te, join = te.__context__, _CONTEXT
        else:
            break
        chain.append(te)
        joins.append(join)
    for i in range(len(chain) - 1, -1, -1):  # the first raised first, as format() writes
        te = chain[i]
        if i < len(joins):
            out += ["", joins[i], ""]
        if te.stack:
            out.append("Traceback (most recent call last):")
            out += (_lines(chunk) for chunk in te.stack.format())
        # (its one closing line break is the interpreter's; any other is the exception's text)
        own = "".join(te.format_exception_only()).removesuffix("\n")
        out.append(one_line(own))
        members = getattr(te, "exceptions", None) or ()
        for number, sub in enumerate(members[:MAX_GROUP], 1):
            out.append(f"+---- sub-exception {number} ----")  # an ExceptionGroup's members
            _exception_lines(sub, out, seen)
        if len(members) > MAX_GROUP:  # (the interpreter's own limit)
            out.append(f"+---- ... and {len(members) - MAX_GROUP} more exceptions ----")


def _decoded(key: str) -> str:
    # Percent-encoding may be stacked (auth%255Ftoken); decoding stops once nothing changes.
    for _ in range(4):
        plain = unquote_plus(key)
        if plain == key:
            break
        key = plain
    return key.strip().lower()


def mask(text: str) -> str:
    """`text` with the value of every auth_token (any spelling the API accepts, percent-
    encoded included), password, X-Auth-Token and Authorization replaced by ********."""
    if ("=" not in text and ":" not in text) or _MAYBE_SECRET.search(text) is None:
        return text
    return _mask(text)


def _mask(text: str) -> str:
    out = []
    pos = 0
    for m in _QUERY_KEY.finditer(text):
        key = m.group(1)
        # (decoding never lengthens a key: one shorter than "password" is none of them, and
        # a run of "%=" is thousands of keys)
        if m.start() < pos or len(key) < _SHORTEST_SECRET:
            continue
        if not _decoded(key).endswith(_SECRET_KEYS):
            continue
        start = m.end()
        end = _VALUE_END.search(text, start).start()
        out.append(text[pos:start])
        out.append(MASK)
        pos = end
    out.append(text[pos:])
    return _HEADER_TOKEN.sub(lambda m: m.group(1) + MASK, "".join(out))


class TextFormatter(logging.Formatter):
    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with the message and the traceback handled apart. The
        # message is masked before it is escaped: mask() must read the text as it was
        # written, since an escape turns a separator into text (a raw \x1c before
        # "auth_token=" ends the key before it; written "\\x1c" it joins the key, which then
        # is no secret one, and the token would be kept). And masked once, not again as part
        # of the line: its escapes would move where a masked value ends. The traceback is
        # multi-line where its line breaks are the interpreter's (format_exception()).
        record.message = one_line(message_of(record))
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        # Formatted here, not taken from record.exc_text: another handler's formatter may
        # have left its own text there, unmasked.
        if record.exc_info:
            line = f"{line}\n{format_exception(record.exc_info)}"
        elif record.exc_text:
            line = f"{line}\n{_lines(record.exc_text)}"
        if record.stack_info:
            line = f"{line}\n{_lines(self.formatStack(record.stack_info))}"
        return line

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # logging's own, with the date and time formatted once a second, not once a line.
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return format_exception(ei)


_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = message_of(record)
        message = _json_message(text)
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        for key, value in fields(record).items():
            entry.setdefault(key, _json_text(value))
        if record.exc_info:
            entry["exception"] = format_exception(record.exc_info)
        # The message is not escape()d here: JSON escapes it already, and exactly, so that
        # json.loads gives back the masked message itself (escape() would hand every reader
        # of "msg" backslashes to undo). Only what the encoder leaves raw is escaped.
        line = json_safe(json.dumps(entry, ensure_ascii=False))
        # (a character is at most 4 bytes: most lines are known short without encoding them)
        if len(line) * 4 > LINE_MAX and len(line.encode("utf-8", "surrogatepass")) > LINE_MAX:
            line = self._shortened(entry, text)
        return line

    @staticmethod
    def _shortened(entry: dict[str, Any], text: str) -> str:
        """An entry too long for one journal line: its message and traceback cut (the
        traceback's first and last 1,500 characters kept) and the pairs left in the message
        only. At most 6 bytes a character: 6 × (1,000 + 3,000) stays under LINE_MAX."""
        short = {key: entry[key] for key in ("ts", "level", "logger")}
        short["msg"] = _json_message(text, 1000)
        short["cut"] = True
        exception = entry.get("exception")
        if exception is not None:
            if len(exception) > 3000:
                cut = len(exception) - 3000
                exception = f"{exception[:1500]}\n... ({cut} characters cut)\n{exception[-1500:]}"
            short["exception"] = exception
        return json_safe(json.dumps(short, ensure_ascii=False))


def fields(record: logging.LogRecord) -> dict[str, str]:
    """A record's `key=value` pairs, as the json form adds them beside its message: the keys
    our code wrote in the template (`node=%s ...`), each value formatted from its own
    arguments, bounded and masked. Read from the formatted message, an argument holding outside text
    (`x node=fs9`) added or moved a field; here it stays in the value it was given for."""
    template, args = record.msg, record.args
    if not isinstance(template, str):
        return {}
    # Which argument each specifier takes, by where it starts in the template.
    taken: dict[int, int] = {}
    for m in _SPECIFIER.finditer(template):
        if m.group() != "%%":
            if "*" in m.group():
                return {}  # a width from the arguments: which one is whose is not worth it
            taken[m.start()] = len(taken)
    found: dict[str, str] = {}
    for m in _PAIR.finditer(template):
        key, written = m.group(1), m.group(2)
        if key in found:
            continue
        value = written.strip("'\"")
        if args:  # (logging formats a message only when it has arguments)
            start = m.start(2) + len(written) - len(written.lstrip("'\""))
            try:
                if isinstance(args, tuple):
                    specs = _SPECIFIER.finditer(value)
                    at = [taken[start + s.start()] for s in specs if s.group() != "%%"]
                    value = value % tuple(args[i] for i in at)
                else:
                    value = value % args
            except Exception:  # (what logging's own formatting would fail on: %d of an
                continue  # infinity raises OverflowError, an argument's __str__ anything)
        found[key] = mask(f"{key}={bounded(value)}")[len(key) + 1 :]
    return found


def _json_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """A message as the json form writes it: bounded, masked, and JSON's own string."""
    return _json_text(mask(bounded(text, limit)))


def _json_text(message: str) -> str:
    if not message.isascii() and _SURROGATE.search(message) is not None:
        # No JSON text carries a lone surrogate as itself: a high one before a low one would
        # be read back as the one character the two spell. Such a message (none from the
        # switch or a client that we know of: orjson refuses lone surrogates) is written as
        # the text form writes it, escapes read back by the same rule.
        message = escape(message)
    return message


def log_greenlet_errors(hub: Any) -> None:
    """gevent's hub prints a failed greenlet's traceback straight to stderr, around logging,
    and so around mask(), escape() and the line bound: it goes through logging instead."""
    log = logging.getLogger("channelsd.greenlet")

    def print_exception(context: Any, kind: Any, value: Any, tb: Any) -> None:
        try:
            where = context if isinstance(context, str) else hub.format_context(context)
        except Exception:  # a repr that fails: the greenlet is still named by its type
            where = type(context).__name__
        name = getattr(kind, "__name__", "exception")
        log.error("%s failed with %s", where, name, exc_info=(kind, value, tb))

    hub.print_exception = print_exception


def setup(level: str = "info", fmt: str = "text") -> None:
    """Log to stderr (the journal) at `level`, as `text` or `json`."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    # No format here shows a line's thread, process or source line: logging would still
    # look each up for every record (the logging HOWTO's "Optimization").
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the HOWTO's own switch for the caller's frame walk
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


class RateLimited:
    """At most one line per key and interval; the next line says how many were held back.

    For lines a flood can cause (EMFILE at accept, malformed requests): the first one tells
    the operator what is happening, the rest would only fill the journal."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, key: str, level: int, msg: str, *args: Any) -> bool:
        """Log unless this key logged within the interval; True when it was written."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            msg += " suppressed=%d"
            args = (*args, held)
        self.logger.log(level, msg, *args)
        return True
