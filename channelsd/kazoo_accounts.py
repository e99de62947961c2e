"""May this Kazoo token act on that account? Asked of Kazoo itself, answers kept a while.

A reseller's token may act on its descendant accounts, and only Kazoo knows the account tree.
crossbar answers `GET /v2/accounts/{ACCOUNT_ID}` with 200 only when the token it is given may
act on that account, so that is the question asked (with the token the client presented, and
nothing else of the request). The yes or no is kept for [kazoo] descendants_cache_seconds (never
past the token's exp) in a bounded cache, and concurrent requests for the same answer share
one question.

Failing closed, without letting a client make Kazoo's trouble ours:

* crossbar that cannot be asked (a timeout, kazoo.crossbar_timeout bounding the whole
  question; a refused connection; a broken or 5xx answer) refuses the request, and nobody's
  question is sent for BREAKER_SECONDS: a tenant varying the account id cannot keep a Kazoo
  that is down busy (a circuit breaker). Then one question tries again while the others are
  refused; its answer closes the breaker, or opens it for as long again;
* any other odd answer (a redirect, 400, 405...) refuses that (token, account) for
  ERROR_CACHE_SECONDS;
* one token has at most MAX_QUESTIONS_PER_TOKEN questions out at once; more wait for a turn
  (at most crossbar_timeout, then refused);
* the warnings are rate-limited: one line per LOG_INTERVAL, counting what it left out.

The question runs in the requesting greenlet: gevent serves everyone else meanwhile.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from channelsd.kazoo_keys import KAZOO_ID
from channelsd.tokens import Token

log = logging.getLogger("channelsd.kazoo")

ERROR_CACHE_SECONDS = 5.0
BREAKER_SECONDS = 5.0
MAX_QUESTIONS_PER_TOKEN = 4
LOG_INTERVAL = 10.0
MAX_ANSWER_BYTES = 65536
_YES = frozenset((200,))
_NO = frozenset((401, 403, 404))

# What a question came to, besides True (yes) and False (no).
ODD = "odd"  # an answer that is neither: refused, kept a little for that (token, account)
DOWN = "down"  # crossbar could not be asked: the breaker opens


def crossbar_address(base_url: str) -> tuple[bool, str, int | None, str]:
    """(https, host, port, base path) of crossbar's URL. ValueError for a port past 65535 or
    not a number (urlsplit's) and for a URL naming no host: the config refuses those at load,
    before `run` or a reload would meet them here."""
    parts = urlsplit(base_url)
    port = parts.port
    if not parts.hostname:
        raise ValueError("names no host")
    return parts.scheme == "https", parts.hostname, port, parts.path.rstrip("/")


class KazooAccounts:
    """Cached answers of crossbar to "may this token act on account A?"."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 2.0,
        ttl: float = 300.0,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.https, self.host, self.port, self.base_path = crossbar_address(base_url)
        self.timeout = timeout
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._wall = wall
        self._answers: OrderedDict[tuple[str, str], tuple[bool, float]] = OrderedDict()
        self._asking: dict[tuple[str, str], AsyncResult] = {}
        self._turns: dict[str, _Turns] = {}  # by token hash
        self._down = False  # the breaker: open while crossbar fails
        self._closed_at = 0.0  # (clock) when it lets one question try again
        self._trying = False  # that question is out
        self._warn = _Throttled(log, clock)
        self.asked = 0  # questions sent to Kazoo (tests check the cache with it)
        self.refused_down = 0  # requests refused unasked while the breaker was open
        self._refused_now = 0  # the same, since it last opened

    def allows(self, token: Token, presented: str, account_id: str) -> bool:
        if not KAZOO_ID.fullmatch(account_id):
            return False  # nothing Kazoo could say yes to; and never put into a URL
        key = (token.sha256, account_id)
        known = self._known(key)
        if known is not None:
            return known
        turns = self._turns.get(token.sha256)
        if turns is None:
            turns = self._turns[token.sha256] = _Turns()
        turns.users += 1
        try:
            if not turns.semaphore.acquire(timeout=self.timeout):
                self._warn.warning("kazoo account check refused: too many questions at once")
                return False
            try:
                # Meanwhile another request may have had the answer, or seen crossbar fail.
                known = self._known(key)
                return known if known is not None else self._question(key, token, presented)
            finally:
                turns.semaphore.release()
        finally:
            turns.users -= 1
            if turns.users == 0:
                del self._turns[token.sha256]

    def until(self, token: Token, account_id: str) -> float | None:
        """When the kept answer for (token, account) runs out (this object's clock), or None
        when none is kept: a subscription granted by Kazoo is asked again then."""
        hit = self._answers.get((token.sha256, account_id))
        return hit[1] if hit is not None else None

    def _known(self, key: tuple[str, str]) -> bool | None:
        """The kept answer, or the one being asked (waited for), or None: ask."""
        hit = self._answers.get(key)
        if hit is not None:
            if self._clock() < hit[1]:
                self._answers.move_to_end(key)
                return hit[0]
            del self._answers[key]
        pending = self._asking.get(key)
        if pending is not None:
            try:
                return bool(pending.get(timeout=self.timeout + 1.0))
            except gevent.Timeout:
                return False
        return None

    def _question(self, key: tuple[str, str], token: Token, presented: str) -> bool:
        if self._down and (self._clock() < self._closed_at or self._trying):
            self.refused_down += 1
            self._refused_now += 1
            return False
        trying = self._down
        self._trying = self._trying or trying
        pending = self._asking[key] = AsyncResult()
        answer = False
        try:
            verdict = self._ask(presented, key[1])
            answer = verdict is True
            if verdict == DOWN:
                if not self._down:
                    self._refused_now = 0
                self._down = True
                self._closed_at = self._clock() + BREAKER_SECONDS
                return False
            if self._down:
                self._down = False
                log.warning(
                    "kazoo account checks: crossbar answers again (%d requests refused meanwhile)",
                    self._refused_now,
                )
            keep = self.ttl if verdict != ODD else ERROR_CACHE_SECONDS
            if token.expires is not None:
                keep = min(keep, max(0.0, token.expires - self._wall()))
            self._remember(key, answer, self._clock() + keep)
        finally:
            if trying:
                self._trying = False
            del self._asking[key]
            pending.set(answer)
        return answer

    def _remember(self, key: tuple[str, str], answer: bool, until: float) -> None:
        answers = self._answers
        answers[key] = (answer, until)
        answers.move_to_end(key)
        while len(answers) > self.size:
            answers.popitem(last=False)

    def _ask(self, presented: str, account_id: str) -> bool | str:
        """True/False as Kazoo answers; ODD or DOWN when it did not (logged)."""
        self.asked += 1
        path = f"{self.base_path}/v2/accounts/{quote(account_id, safe='')}"
        conn_class = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = conn_class(self.host, self.port, timeout=self.timeout)
        try:
            with gevent.Timeout(self.timeout):
                conn.request(
                    "GET",
                    path,
                    headers={"X-Auth-Token": presented, "Accept": "application/json"},
                )
                resp = conn.getresponse()
                resp.read(MAX_ANSWER_BYTES)
                status = resp.status
        except (gevent.Timeout, OSError, http.client.HTTPException) as exc:
            what = "timeout" if isinstance(exc, gevent.Timeout) else type(exc).__name__
            self._warn.warning(
                "kazoo account check failed account=%s error=%s; crossbar not asked for %gs",
                account_id,
                what,
                BREAKER_SECONDS,
            )
            return DOWN
        finally:
            conn.close()
        if status in _YES:
            return True
        if status in _NO:
            return False
        if status >= 500:
            self._warn.warning(
                "kazoo account check failed account=%s status=%d; crossbar not asked for %gs",
                account_id,
                status,
                BREAKER_SECONDS,
            )
            return DOWN
        self._warn.warning("kazoo account check failed account=%s status=%d", account_id, status)
        return ODD


class _Turns:
    """One token's questions: at most MAX_QUESTIONS_PER_TOKEN out, and who holds or waits."""

    __slots__ = ("semaphore", "users")

    def __init__(self) -> None:
        self.semaphore = Semaphore(MAX_QUESTIONS_PER_TOKEN)
        self.users = 0


class _Throttled:
    """At most one warning per LOG_INTERVAL; the next one says how many were left out."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float]) -> None:
        self._log = logger
        self._clock = clock
        self._next = 0.0
        self.suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return
        if self.suppressed:
            message += " (%d more such lines left out)"
            args = (*args, self.suppressed)
        self.suppressed = 0
        self._next = now + LOG_INTERVAL
        self._log.warning(message, *args)
