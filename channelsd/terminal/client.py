"""HTTP to the daemon's /v2 API, with its refusals as one readable line and an exit code.

The standard library's urllib is enough here: a few GETs and one long streaming GET. Every
failure becomes an ApiFailure carrying the exit status the command documents.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from channelsd import __version__

# Exit statuses of `channelsd ls` (documented in the README and in --help).
EXIT_OK = 0
EXIT_API = 1  # the daemon answered with an error (4xx other than 401/403, 5xx)
EXIT_USAGE = 2  # bad options, no token, an unreadable config or token file
EXIT_UNREACHABLE = 3  # no answer: connection refused, unknown host, timeout
EXIT_AUTH = 4  # the token was refused (401) or may not see this (403)

REQUEST_TIMEOUT = 10.0
# The daemon sends a keepalive every 15 s: this much silence means the stream is dead.
STREAM_TIMEOUT = 40.0
# A snapshot of many thousand channels is one line of a few MB; beyond this it is not ours.
MAX_LINE = 64 * 1024 * 1024


class ApiFailure(Exception):
    """A request that did not give what was asked, phrased for the operator."""

    def __init__(self, message: str, exit_code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status


def describe(status: int, body: bytes) -> str:
    """One line from Kazoo's error envelope: status, message and its reason when it has one."""
    try:
        envelope = json.loads(body)
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict):
        return f"HTTP {status}"
    message = str(envelope.get("message") or f"HTTP {status}")
    data = envelope.get("data")
    detail = ""
    if isinstance(data, dict):
        if message == "validation error":
            detail = "; ".join(f"{k}: {v}" for k, v in data.items())
        else:
            reason = data.get("reason") or data.get("message")
            detail = str(reason) if reason and reason != message else ""
    elif isinstance(data, list) and data:
        detail = ", ".join(str(x) for x in data)
    text = f"{status} {message}"
    return f"{text}: {detail}" if detail else text


def _exit_for(status: int) -> int:
    return EXIT_AUTH if status in (401, 403) else EXIT_API


class Client:
    """The API at `base` (scheme://host:port), asked with one token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def url(self, path: str, params: Sequence[tuple[str, str]] = ()) -> str:
        query = urllib.parse.urlencode(list(params))
        return f"{self.base}{path}" + (f"?{query}" if query else "")

    def _open(self, url: str, headers: dict[str, str], timeout: float) -> Any:
        req = urllib.request.Request(
            url,
            headers={
                "X-Auth-Token": self.token,
                "User-Agent": f"channelsd-ls/{__version__}",
                **headers,
            },
        )
        try:
            return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https only)
        except urllib.error.HTTPError as exc:
            body = exc.read()
            exc.close()
            raise ApiFailure(describe(exc.code, body), _exit_for(exc.code), exc.code) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            why = getattr(reason, "strerror", None) or str(reason)
            raise ApiFailure(f"cannot reach {self.base}: {why}", EXIT_UNREACHABLE) from None
        except TimeoutError:
            raise ApiFailure(f"cannot reach {self.base}: timed out", EXIT_UNREACHABLE) from None
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise ApiFailure(f"cannot reach {self.base}: {why}", EXIT_UNREACHABLE) from None

    def _read(self, resp: Any) -> bytes:
        try:
            with resp:
                return resp.read()
        except (TimeoutError, OSError) as exc:
            why = getattr(exc, "strerror", None) or str(exc) or "connection lost"
            raise ApiFailure(f"lost {self.base}: {why}", EXIT_UNREACHABLE) from None

    def items(self, path: str, params: Sequence[tuple[str, str]] = ()) -> list[dict[str, Any]]:
        """A list route's `data`: the items."""
        body = self._read(
            self._open(self.url(path, params), {"Accept": "application/json"}, REQUEST_TIMEOUT)
        )
        try:
            data = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            raise ApiFailure(f"{self.base} did not answer with a /v2 list", EXIT_API) from None
        if not isinstance(data, list):
            raise ApiFailure(f"{self.base} did not answer with a /v2 list", EXIT_API)
        return [i for i in data if isinstance(i, dict)]

    def raw(self, path: str, params: Sequence[tuple[str, str]], accept: str) -> bytes:
        """A route's body as the daemon sent it (the CSV form)."""
        return self._read(self._open(self.url(path, params), {"Accept": accept}, REQUEST_TIMEOUT))

    def stream(
        self, path: str, params: Sequence[tuple[str, str]], last_event_id: str | None
    ) -> Iterator[str]:
        """The lines of an event stream, until it ends; ApiFailure when it cannot start or
        breaks off."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        resp = self._open(self.url(path, params), headers, STREAM_TIMEOUT)
        with resp:
            while True:
                try:
                    line = resp.readline(MAX_LINE + 1)
                except (TimeoutError, OSError, ValueError) as exc:
                    why = getattr(exc, "strerror", None) or str(exc) or "connection lost"
                    raise ApiFailure(f"stream lost: {why}", EXIT_UNREACHABLE) from None
                if not line:
                    return
                if len(line) > MAX_LINE:
                    raise ApiFailure("stream lost: a line longer than 64 MB", EXIT_API)
                yield line.decode("utf-8", "replace")
