"""The results of `bgapi` jobs an action waits for, from the node's BACKGROUND_JOB events.

`bgapi originate …` answers `+OK Job-UUID: <job>` at once: the originate is under way, no
more. Whether it worked comes later, as a BACKGROUND_JOB event whose body is the command's
reply (`+OK <uuid>` once the new leg answered, `-ERR CHAN_NOT_IMPLEMENTED` for an endpoint the
switch cannot dial, `-ERR USER_BUSY`, …). An action that wants that result opens a watch
before it sends the command, reads the job uuid from the reply and waits a short time:

    with node.jobs.watch() as watch:
        reply = node.bgapi(line)
        result = watch.wait(job_uuid(reply), seconds)   # None: no result yet

The event may arrive before the command's reply does (they come on different connections), so
while any watch is open, results nobody waits for yet are kept, a few and briefly, and the
late waiter finds its own there. Bounded: at most MAX_WAITERS waiters (beyond that a watch
gets no result and the action answers as if the job had not finished), at most MAX_EARLY
early results, and nothing is kept once no watch is open. The switch's other clients' jobs
come on the same event stream; they are never waited for and fall out of the early buffer.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gevent
import gevent.event

MAX_WAITERS = 256
MAX_EARLY = 64
_JOB_REPLY = re.compile(r"\+OK Job-UUID: ([0-9A-Za-z-]{1,64})\s*")


def job_uuid(reply: str) -> str | None:
    """The job uuid of a bgapi reply (`+OK Job-UUID: <uuid>`), or None."""
    m = _JOB_REPLY.fullmatch(reply)
    return m.group(1) if m else None


class Watch:
    """One action's window on the node's job results (see the module's docstring)."""

    def __init__(self, jobs: JobResults) -> None:
        self._jobs = jobs

    def wait(self, job: str | None, seconds: float) -> str | None:
        """The job's result body, or None if it did not come within `seconds`."""
        if job is None or seconds <= 0:
            return None
        return self._jobs._wait(job, seconds)


class JobResults:
    """Waiters for BACKGROUND_JOB results of one node."""

    def __init__(self) -> None:
        self._waiters: dict[str, gevent.event.AsyncResult] = {}
        self._early: OrderedDict[str, str] = OrderedDict()
        self._watches = 0

    def __len__(self) -> int:
        return len(self._waiters) + len(self._early)

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        self._watches += 1
        try:
            yield Watch(self)
        finally:
            self._watches -= 1
            if not self._watches:
                self._early.clear()

    def complete(self, event: Mapping[str, Any]) -> None:
        """A BACKGROUND_JOB event: hand its body to whoever waits for the job."""
        job = event.get("Job-UUID")
        if not isinstance(job, str):
            return
        body = event.get("_body")
        result = body if isinstance(body, str) else ""
        waiter = self._waiters.pop(job, None)
        if waiter is not None:
            waiter.set(result)
        elif self._watches:
            self._early[job] = result
            while len(self._early) > MAX_EARLY:
                self._early.popitem(last=False)

    def _wait(self, job: str, seconds: float) -> str | None:
        early = self._early.pop(job, None)
        if early is not None:
            return early
        if len(self._waiters) >= MAX_WAITERS or job in self._waiters:
            return None
        waiter = gevent.event.AsyncResult()
        self._waiters[job] = waiter
        try:
            return waiter.get(timeout=seconds)
        except gevent.Timeout:
            return None
        finally:
            self._waiters.pop(job, None)
