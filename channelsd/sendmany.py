"""A publish's bytes to a crowd of sockets, written off the hub.

A thousand subscribers of one account get the same bytes at each publish. Written from the
hub, the kernel's part of those sends (copying, the loopback's delivery, waking each reader)
was what remained of the crowd's cost to ingest (BENCHMARKS.md, issue #16). The Courier writes
a publish's sends in one call of `channelsd_sendmany` (C, built by `pip install` from
channelsd/sendmany.c) in a native thread, which holds no interpreter lock while it sends: the
hub goes on reading the switches meanwhile, on another core.

What a socket's owner (an Addressee) promises and gets:
* `claim(data)` is asked on the hub: the descriptor to write `data` to now, or None when the
  owner keeps it itself (it is busy writing, or it queued it, or it is closing);
* from a claim to its `sent(data, n)` nothing else writes the socket and the descriptor stays
  open (the owner holds its own duplicate, closed only once no send is in flight);
* `sent` is told on the hub how many bytes the socket took (the rest is the owner's to write,
  before anything else), or -errno.

Publishes are carried one after another: a publish made while another is on its way waits for
it, and each call returns once its own publish is sent (a subscriber's events stay in order,
since each publisher makes one publish at a time: channelsd.cadence). The websocket hub and
the event streams share the daemon's courier; a carrier that also carried whatever was
queued behind it never returned while the other publisher kept publishing, and its own
publisher published nothing meanwhile (found by an outside attack).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from gevent.lock import Semaphore
from gevent.monkey import get_original
from gevent.threadpool import ThreadPool

from channelsd import builds

log = logging.getLogger(__name__)

try:
    from channelsd_sendmany import send_each as _send_each
except ImportError:  # built optionally: see setup.py
    _send_each = None

# The thread's nice value above the process's. Its sends are background work beside ingest:
# on a machine short of CPU the kernel runs the hub (and whatever else runs there) first,
# and the sends fill the gaps, later by a publish or two (1,000 websocket subscribers, three
# runs each: ingest 0.84-0.87x of none at +10, 0.78-0.86x at +0; the subscribers' lag p99
# the same, BENCHMARKS.md).
NICE = 10

# Below this many bytes in one publish the native thread's hand-over (a wake-up and two
# passes of the interpreter lock) costs more than the sends it would take off the hub.
THREAD_BYTES = 64 * 1024

# After a thread could not be started (the system's thread limit), publishes go from the hub
# this long before a start is tried again: not a failed start and a warning every publish.
START_RETRY_SECONDS = 30.0


SendEach = Callable[[Sequence[int], Sequence[bytes]], list[int]]


class Addressee(Protocol):
    """The owner of one socket a Courier writes to."""

    def claim(self, data: bytes) -> int | None: ...

    def sent(self, data: bytes, n: int) -> None: ...


def send_each_python(fds: Sequence[int], datas: Sequence[bytes]) -> list[int]:
    """send_each's definition, and what runs where the C could not be built (on the hub: in a
    thread it would take the interpreter lock at every send). The descriptors are the
    sockets' non-blocking ones (a duplicate shares the flag)."""
    out = []
    for fd, data in zip(fds, datas, strict=True):
        view = memoryview(data)
        off = 0
        while off < len(view):
            try:
                n = os.write(fd, view[off:])
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            except OSError as exc:
                if off == 0:
                    off = -(exc.errno or errno.EIO)
                break
            if n == 0:
                break
            off += n
        out.append(off)
    return out


_native_id = get_original("threading", "get_native_id")  # the kernel's, even once patched


def _yield_to_ingest() -> int | None:
    """In the courier's thread: lower its priority (Linux keeps a nice value per thread).
    Its id, or None where the priority could not be changed (the sends go on regardless)."""
    tid = _native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + NICE)
    except OSError:
        return None
    return tid


def built() -> bool:
    """Whether the C sends are installed."""
    return _send_each is not None


def install_warning() -> str | None:
    """What `check` and `run` warn of when the C sends are missing."""
    if _send_each is not None:
        return None
    return builds.missing(
        "channelsd_sendmany",
        "live events go to their subscribers from the main thread (the same events, for "
        "ingest slowed by a crowd of subscribers)",
    )


# (a module name of its own: tests make it fail as at the open-file limit, and only here)
_dup = os.dup


class Line:
    """An addressee's duplicate of its socket for the courier's thread, and the bytes on their
    way to it. Closed only once no send is on its way: closed under the thread's send, its
    number could be given to the next client's socket, which would get the bytes."""

    __slots__ = ("fd", "in_flight", "_closing")

    def __init__(self) -> None:
        self.fd = -1  # -1: none yet (or closed); -2: none to be had (EMFILE)
        self.in_flight: bytes | None = None  # claimed and not yet told `sent`
        self._closing = False  # closed while a send was on its way: closed as it lands

    def open(self, sock: socket.socket) -> bool:
        """The duplicate, made at the first call: False when none can be had (out of
        descriptors), and the owner writes everything itself."""
        if self.fd == -1 and not self._closing:
            try:
                self.fd = _dup(sock.fileno())
            except OSError:
                self.fd = -2
        return self.fd >= 0

    def take(self, data: bytes) -> int:
        """Claim the line for `data` (open, nothing on its way): its descriptor."""
        self.in_flight = data
        return self.fd

    def landed(self) -> None:
        """The courier told how its send went."""
        self.in_flight = None
        if self._closing:
            self.close()

    def close(self) -> bool:
        """Close the duplicate now, or as the send on its way lands: True in that case."""
        if self.in_flight is not None:
            self._closing = True
            return True
        self._closing = False
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        return False


class Courier:
    """Carries each publish's (addressee, bytes) pairs to their sockets, in order."""

    def __init__(self, thread_bytes: int = THREAD_BYTES, send: SendEach | None = None) -> None:
        self.thread_bytes = thread_bytes
        # send_each (C) unless told otherwise; None where it is not built: then
        # send_each_python, on the hub.
        self._send = send if send is not None else _send_each
        # One thread of its own: in gevent's shared pool, DNS lookups and trims could hold
        # every thread while publishes queued behind them.
        self._pool: ThreadPool | None = None
        self._turn = Semaphore()  # held by the publish on its way
        self._closed = False
        self._start_failed_at: float | None = None  # the last failed start (monotonic)
        self.threaded = 0  # publishes sent from the native thread (for tests)
        self.thread_id: int | None = None  # the thread's, once it runs (and is niced)

    def __call__(self, pairs: list[tuple[Addressee, bytes]]) -> None:
        """Send a publish (on the hub), after the one on its way: returns once it is sent."""
        with self._turn:
            self._carry(pairs)

    @property
    def waiting(self) -> int:
        """Publishes (and a close) waiting for the one on its way."""
        return self._turn.linkcount()

    def _carry(self, pairs: list[tuple[Addressee, bytes]]) -> None:
        claimed: list[Addressee] = []
        fds: list[int] = []
        datas: list[bytes] = []
        total = 0
        for addressee, data in pairs:
            fd = addressee.claim(data)
            if fd is not None:
                claimed.append(addressee)
                fds.append(fd)
                datas.append(data)
                total += len(data)
        if not claimed:
            return
        job = None
        if self._send is not None and total >= self.thread_bytes:
            try:
                pool = self._thread()
                if pool is not None:
                    # (spawn waits only for the thread's slot, before it queues the job:
                    # killed there, the job was never queued)
                    job = pool.spawn(self._send, fds, datas)
            except BaseException:
                # Killed while the thread started or before the job was queued: nothing went
                # out, and nobody may stay claimed (a stream's greenlet waits for its claim).
                self._tell(claimed, datas, [0] * len(claimed))
                raise
        if job is None:  # small, not built, closed, or no thread to be had: from the hub
            send = self._send if self._send is not None else send_each_python
            try:
                sent = send(fds, datas)
            except BaseException:
                self._tell(claimed, datas, None)  # as from the thread: nobody stays claimed
                raise
            self._tell(claimed, datas, sent)
            return
        self.threaded += 1
        try:
            sent = job.get()
        except BaseException:
            # Killed while the thread sends, or the call failed: the owners learn when the
            # thread is done, and never before (their descriptors stay open and nobody else
            # writes meanwhile).
            job.rawlink(lambda done: self._tell(claimed, datas, done.value))
            raise
        self._tell(claimed, datas, sent)

    def _thread(self) -> ThreadPool | None:
        """The thread, started at the first publish that needs it (which waits for it); None
        once closed (what is still carried during a stop goes from the hub, no thread starts
        anew) and while no thread can be started (the system's limit: tried again after
        START_RETRY_SECONDS)."""
        if self._pool is None and not self._closed:
            failed = self._start_failed_at
            if failed is not None and time.monotonic() - failed < START_RETRY_SECONDS:
                return None
            pool = self._pool = ThreadPool(1)
            try:
                self.thread_id = pool.apply(_yield_to_ingest)
            except Exception as exc:
                # The pool keeps the start's task queued for a thread it may start later:
                # dropped (with its thread, if one started), so that no publish's job ever waits
                # in that queue (a job left there after its owners were told would write to
                # their descriptors later, or to whichever sockets had their numbers by then).
                self._pool = None
                pool.kill()
                if failed is None:
                    log.warning(
                        "courier thread not started (%s): sending from the main "
                        "thread, trying again every %gs",
                        exc,
                        START_RETRY_SECONDS,
                    )
                self._start_failed_at = time.monotonic()
                return None
            if failed is not None:
                self._start_failed_at = None
                log.info("courier thread started after a failed start")
        return None if self._closed else self._pool

    def close(self) -> None:
        """Let the thread go, once the publish on its way is done (in a greenlet: it waits).
        Later publishes go from the hub."""
        self._closed = True
        # Holding the turn, no publish is between its claims and its job: one waiting for
        # the thread's slot meanwhile would queue its job to a pool with no thread left.
        # Jobs of publishes killed while out are waited for by kill().
        with self._turn:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.kill()

    @staticmethod
    def _tell(claimed: list[Addressee], datas: list[bytes], sent: list[int] | None) -> None:
        if sent is None:  # the call itself failed: what was taken is unknown
            sent = [-errno.EIO] * len(claimed)
        for addressee, data, n in zip(claimed, datas, sent, strict=True):
            addressee.sent(data, n)
