"""Log lines for the journal: `key=value` text or one JSON object per line (configurable).

Messages are written as `what key=value ...`; the JSON form keeps that text and adds the
pairs as fields, so either form can be filtered. Tokens and passwords are never logged: every
line the process writes passes mask() on its way out, whoever wrote it (our code, pywsgi's
error path, a traceback), so a token a client put in a URL cannot reach the journal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

_PAIR = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")

MASK = "********"
# A query-string key and its "=": the key may be percent-encoded (auth%5Ftoken), which
# werkzeug decodes before the API reads it, so the decoded key is what counts.
_QUERY_KEY = re.compile(r"([^\s&?;=\"'/<>(),]+)=")
_VALUE_END = re.compile(r"[\s&;\"'<>]|$")
# Header forms, should a request's headers ever be written out.
_HEADER_TOKEN = re.compile(
    r"(?i)((?:x-auth-token|authorization)\s*[:=]\s*(?:bearer\s+)?)([^\s,;\"']+)"
)
_SECRET_KEYS = frozenset(("auth_token", "password"))
# What a line needs for mask() to change it: a key that decodes to a secret one holds "auth"
# or "password" (re's case folding covers every character whose lower() is ASCII) unless it
# is percent-encoded; both header forms hold "auth". Most lines (an action's, a request's)
# hold none of them and are returned at once.
_MAYBE_SECRET = re.compile(r"(?i)auth|password|%")


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
        if m.start() < pos or _decoded(m.group(1)) not in _SECRET_KEYS:
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
        return mask(super().format(record))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # logging's own, with the date and time formatted once a second, not once a line.
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = mask(record.getMessage())
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        for key, value in _PAIR.findall(message):
            entry.setdefault(key, value.strip("'\""))
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class MaskedStream:
    """A text stream that masks what is written to it (gevent's hub prints tracebacks of
    failed greenlets straight to stderr, around logging)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(mask(text))

    def flush(self) -> None:
        self.stream.flush()


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
