"""May this Kazoo token act on that account? Asked of Kazoo itself, answers kept a while.

A reseller's token may act on its descendant accounts, and only Kazoo knows the account tree.
crossbar answers `GET /v2/accounts/{ACCOUNT_ID}` with 200 only when the token it is given may
act on that account, so that is the question asked (with the token the client presented, and
nothing else of the request). The yes or no is kept for [kazoo] descendants_cache_seconds (never
past the token's exp) in a bounded cache, and concurrent requests for the same answer share
one question.

Failing closed: a timeout (kazoo.crossbar_timeout bounds the whole question), a refused
connection or any other status than 200/401/403/404 refuses the request, is logged, and the
refusal is kept ERROR_CACHE_SECONDS so that a Kazoo that is down is not asked by every request.
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

from channelsd.kazoo_keys import KAZOO_ID
from channelsd.tokens import Token

log = logging.getLogger("channelsd.kazoo")

ERROR_CACHE_SECONDS = 5.0
MAX_ANSWER_BYTES = 65536
_YES = frozenset((200,))
_NO = frozenset((401, 403, 404))


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
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._wall = wall
        self._answers: OrderedDict[tuple[str, str], tuple[bool, float]] = OrderedDict()
        self._asking: dict[tuple[str, str], AsyncResult] = {}
        self.asked = 0  # questions sent to Kazoo (tests check the cache with it)

    def allows(self, token: Token, presented: str, account_id: str) -> bool:
        if not KAZOO_ID.fullmatch(account_id):
            return False  # nothing Kazoo could say yes to; and never put into a URL
        key = (token.sha256, account_id)
        now = self._clock()
        hit = self._answers.get(key)
        if hit is not None:
            if now < hit[1]:
                self._answers.move_to_end(key)
                return hit[0]
            del self._answers[key]
        pending = self._asking.get(key)
        if pending is not None:
            try:
                return bool(pending.get(timeout=self.timeout + 1.0))
            except gevent.Timeout:
                return False
        pending = self._asking[key] = AsyncResult()
        answer = False
        try:
            verdict = self._ask(presented, account_id)
            answer = verdict is True
            keep = self.ttl if verdict is not None else ERROR_CACHE_SECONDS
            if token.expires is not None:
                keep = min(keep, max(0.0, token.expires - self._wall()))
            self._remember(key, answer, self._clock() + keep)
        finally:
            del self._asking[key]
            pending.set(answer)
        return answer

    def _remember(self, key: tuple[str, str], answer: bool, until: float) -> None:
        answers = self._answers
        answers[key] = (answer, until)
        answers.move_to_end(key)
        while len(answers) > self.size:
            answers.popitem(last=False)

    def _ask(self, presented: str, account_id: str) -> bool | None:
        """True/False as Kazoo answers, None when it could not be asked (logged)."""
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
            log.warning("kazoo account check failed account=%s error=%s", account_id, what)
            return None
        finally:
            conn.close()
        if status in _YES:
            return True
        if status in _NO:
            return False
        log.warning("kazoo account check failed account=%s status=%d", account_id, status)
        return None
