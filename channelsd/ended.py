"""Calls that just ended: what the operator's "recently ended" view lists (issue #15).

A channel that hung up (its table row carries an Ending) is kept here for `keep_seconds` after
its destroy, at most `max_calls` of them, as the item it last had in the lists plus how it
ended. Only what the lists need is kept per call: the JSON item and the keys the API scopes
by, so the memory is bounded by `max_calls` and a few hundred bytes each beyond the item.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Container, Iterator
from typing import Any

import orjson

from channelsd.channel import GREGORIAN_OFFSET, Channel, kept_json


class Ended:
    """One ended call: the keys it is listed by and its item as JSON."""

    __slots__ = ("at", "node", "account_id", "owner_id", "device_id", "item")

    def __init__(self, ch: Channel, at: float) -> None:
        self.at = at
        self.node = ch.node
        self.account_id = ch.account_id
        self.owner_id = ch.owner_id
        self.device_id = ch.authorizing_id
        item = ch.to_item(at, False)
        del item["stale"], item["elapsed_s"]
        if ch.details:  # the Call-ID, codec, far end: what a look at a bad call starts from
            item.update(ch.details)
        item.update(ch.end_item(at))
        item["ended_timestamp"] = int(at) + GREGORIAN_OFFSET
        self.item = kept_json(item)

    def as_dict(self) -> dict[str, Any]:
        return orjson.loads(self.item)


class EndedCalls:
    """The last minutes of ended calls, oldest first; fed by the table's destroy notices."""

    def __init__(
        self,
        keep_seconds: float = 900.0,
        max_calls: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keep_seconds = keep_seconds
        self.max_calls = max_calls
        self._clock = clock
        self._calls: deque[Ended] = deque()

    def __len__(self) -> int:
        self._expire()
        return len(self._calls)

    def on_change(self, kind: str, ch: Channel, _info: Any) -> None:
        """The table's listener: a destroyed channel that hung up is kept."""
        if kind != "destroy" or ch.ending is None:
            return
        self._calls.append(Ended(ch, self._clock()))
        while len(self._calls) > self.max_calls:
            self._calls.popleft()
        self._expire()

    def _expire(self) -> None:
        horizon = self._clock() - self.keep_seconds
        calls = self._calls
        while calls and calls[0].at < horizon:
            calls.popleft()

    def select(
        self,
        account_id: str | None = None,
        owner_id: str | None = None,
        devices: Container[str] = (),
        device_id: str | None = None,
    ) -> Iterator[Ended]:
        """Newest first, narrowed as the live lists are: the system (no argument), an account,
        a user (its owner id, or one of its devices) or a device."""
        self._expire()
        for call in reversed(self._calls):
            if account_id is not None and call.account_id != account_id:
                continue
            if owner_id is not None and not (
                call.owner_id == owner_id or call.device_id in devices
            ):
                continue
            if device_id is not None and call.device_id != device_id:
                continue
            yield call
