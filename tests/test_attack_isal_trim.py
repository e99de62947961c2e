"""Attacks from outside on two changes: the large lists' gzip compressed on the hub with ISA-L
in paused slices (channelsd/gzipped.py, ListCache in channelsd/listing.py), and malloc_trim
kept from a busy daemon's every ten seconds (channelsd/memory.py).

The memory tests use glibc's real malloc_trim and the process's real resident size, with the
Trimmer's clock and CPU time moved by the test (a "busy" process is one whose CPU time the
test advances). The gzip tests go over real sockets to a real daemon. "Failed before the
fix" names the first form of the change (a busy daemon trimmed only once it had grown 8 MiB
since its last trim; the preparer's compression always bulk work).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import orjson
import pytest
import requests
from test_gzip import comparable, get

from channelsd import gzipped, listing, memory, turns
from channelsd.gzipped import Compressed

from conftest import Harness, TurnClock, bulk_crowd, preparing, token, wait_until

MiB = 1 << 20


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# A glibc heap block: more than pymalloc's 512 B (so malloc's), less than the mmap threshold.
BLOCK = 4000


# -- memory.Trimmer with glibc's heap ----------------------------------------------------------


class _Times:
    """The Trimmer's clock and CPU time, moved by the test; its ticks as the loop monitor's."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.used = 0.0

    def clock(self) -> float:
        return self.now

    def cpu(self) -> float:
        return self.used

    def trimmer(self) -> memory.Trimmer:
        t = memory.Trimmer(every=memory.TRIM_EVERY, clock=self.clock, cpu=self.cpu)
        assert t.available, "glibc's malloc_trim is needed here"
        return t

    def ticks(self, t: memory.Trimmer, seconds: float, busy: float) -> None:
        """`seconds` of the daemon's 0.25 s ticks with `busy` of a core used; a trim started
        by a tick is waited for (in its worker thread) before the next tick."""
        for _ in range(round(seconds / 0.25)):
            self.now += 0.25
            self.used += 0.25 * busy
            t.tick()
            running = t._running
            if running is not None:
                wait_until(running.ready, timeout=10, what="the trim's thread")


@pytest.fixture(autouse=False)
def clean_heap() -> Iterator[None]:
    """The heap trimmed before and after: what a test before left freed but resident would
    be reused by this one's churn and hide its growth."""
    trim = memory._malloc_trim()
    assert trim is not None, "glibc's malloc_trim is needed here"
    trim(0)
    yield
    trim(0)


def _heap(mib: float) -> list[bytearray]:
    """`mib` MiB of glibc heap blocks, written (resident)."""
    return [bytearray(b"x") * BLOCK for _ in range(int(mib * MiB) // BLOCK)]


def _churn(mib: float) -> bytearray:
    """A second's answers of `mib` MiB built and let go, freed but resident: the small block
    made after them (returned, to keep) holds the heap's top, as the live set does in the
    daemon, so glibc's free() cannot give the pages back by itself."""
    work = _heap(mib)
    pin = bytearray(b"p") * BLOCK
    del work
    return pin


def test_a_burst_is_given_back_while_the_daemon_stays_busy(clean_heap: None) -> None:
    """README: `memory.py` gives freed pages back "so that the resident size comes back down
    after a burst". A burst (a reconcile of thousands after a blip, the day's peak) grew the
    heap by 64 MiB; then the daemon goes on at 0.3 of a core (ordinary traffic: not QUIET).
    The burst's pages go back within BUSY_TRIM_EVERY. Failed before the fix: the last trim
    ran while the burst was live (the growth rule), so the baseline was the peak and the
    churn after it never "grew" 8 MiB past it (no trim in a busy minute)."""
    times = _Times()
    t = times.trimmer()
    burst = _heap(64)
    pins = [_churn(0)]
    times.ticks(t, seconds=12, busy=0.9)  # the burst, live
    peak = resident_bytes()
    del burst  # its calls ended: freed, and glibc keeps the pages
    assert resident_bytes() > peak - 8 * MiB
    for _ in range(60):  # a minute of ordinary traffic: a little churn every second
        pins.append(_churn(1))
        times.ticks(t, seconds=1, busy=0.3)
    given_back = (peak - resident_bytes()) / MiB
    assert given_back >= 48, (
        f"the burst's 64 MiB, freed, still resident a minute later ({given_back:.1f} MiB "
        f"given back, {t.trims} trims)"
    )
    assert t.trims == 1  # a sixth of the trims a busy minute had before


def test_a_busy_daemon_whose_working_set_does_not_grow_is_not_trimmed_every_interval(
    clean_heap: None,
) -> None:
    """The change's promise (memory.py): "a busy daemon that only churns gives back what churn
    left, without a pause every ten seconds". Growth is measured from the size the last trim
    left, so a trim that gives back 8 MiB or more of pages the daemon reuses at once (each
    second's answers: the system list of 10,000 channels alone is 12 MB of JSON, its gzip and
    the next second's copy) re-arms itself: the churn of the next second "grows" the process
    past TRIM_GROWTH again, and the busy daemon is trimmed at every interval, exactly as before
    the change, holding glibc's heap lock each time. Here the working set is 32 MiB a second
    and never grows after the first second. Failed before the fix (a trim every 10 s)."""
    times = _Times()
    t = times.trimmer()
    pins = []
    for _ in range(61):  # a busy minute, its high-water mark reached in the first second
        pins.append(_churn(32))
        times.ticks(t, seconds=1, busy=0.9)
    assert t.trims <= 1, f"{t.trims} trims in a busy minute whose working set did not grow"


def test_a_quiet_daemon_gives_a_burst_back_with_real_pages(clean_heap: None) -> None:
    """The commit's other promise, with glibc's real heap (tests/test_memory_trim.py models
    the pages): the calls stop, the first quiet tick once TRIM_EVERY has passed gives the
    burst back (a regression guard: the quiet rule measured per tick must see an idle daemon
    as quiet)."""
    times = _Times()
    t = times.trimmer()
    burst = _heap(64)
    pins = [_churn(0)]
    times.ticks(t, seconds=3, busy=0.9)
    peak = resident_bytes()
    del burst
    times.ticks(t, seconds=11, busy=0.01)  # the calls stopped
    assert t.trims == 1
    assert peak - resident_bytes() >= 48 * MiB
    del pins


# -- gzip over real sockets: lists of several COMPRESS_SLICEs, at the real threshold -----------
ACC1 = {"account_id": "acc1", "owner_id": "user1"}


@pytest.fixture(scope="module")
def big_switch() -> Iterator[Any]:
    from channelsd.standin.server import StandinSwitch

    sw = StandinSwitch(hostname="standin-big")
    sw.start()
    for _ in range(2000):  # 4,000 channels: the system list ~2.4 MB, three slices
        sw.bridged_call(variables_a=ACC1, variables_b=ACC1, caller=("Zoë \u00e9\u20ac", "1001"))
    yield sw
    sw.stop()


@pytest.fixture
def big(big_switch: Any, make_daemon: Any) -> Harness:
    h = make_daemon([big_switch])
    wait_until(lambda: len(h.table) >= 4000, timeout=30, what="4,000 channels")
    return h


# the fast lane's path, and the application's (a query string: the lane declines it)
BIG_PATHS = ["/v2/channels", "/v2/channels?paginate=false", "/v2/accounts/acc1/channels"]


def _gzip_answer(base: str, path: str) -> tuple[requests.Response, bytes, bytes]:
    """A raw answer of `path`, then one in gzip within the same second (tried again when a
    second turned over): (the gzip answer, its body off the wire, the raw body)."""
    for _ in range(20):
        _, raw = get(base, path, "identity")
        resp, body = get(base, path)
        if resp.headers.get("Content-Encoding") == "gzip":
            return resp, body, raw
    raise AssertionError("no gzip answer in 20 tries")


def _decoded_everywhere(body: bytes) -> bytes:
    """`body` decoded by Python's gzip, by zlib as one member with nothing after it, and by
    the gzip program: all must agree."""
    one = gzip.decompress(body)
    d = zlib.decompressobj(47)
    assert d.decompress(body) == one and d.eof and d.unused_data == b""
    assert shutil.which("gzip"), "the gzip program is needed: the check of a third decoder"
    out = subprocess.run(["gzip", "-dc"], input=body, capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stderr == b"" and out.stdout == one
    return one


@pytest.mark.parametrize("piece", [gzipped.COMPRESS_SLICE, 4093, 65535, 65536 + 7])
@pytest.mark.parametrize("path", BIG_PATHS)
def test_a_list_of_many_slices_reads_as_the_raw_one_in_every_decoder(
    big: Harness, monkeypatch: pytest.MonkeyPatch, path: str, piece: int
) -> None:
    """The real threshold (1 MiB) and lists of several slices (the real 1 MiB, and odd sizes
    that cut the UTF-8 of the callers' names "Zoë é€" anywhere), both serving paths, asked
    by a request that compresses (pace) and by the preparer (turns.pause) for the next
    second: one gzip member, the very raw answer."""
    monkeypatch.setattr(gzipped, "COMPRESS_SLICE", piece)
    lists = big.daemon.ctx.lists
    real = listing.compress
    by: set[bool] = set()  # the compressions' authors: True for the preparer

    def compress(head: bytes, data: bytes, pause: Any) -> Any:
        by.add(preparing(lists))
        return real(head, data, pause)

    monkeypatch.setattr(listing, "compress", compress)
    base = big.api.base
    for _ in range(2):  # an asker's compression, then (a second later) the preparer's
        resp, body, raw = _gzip_answer(base, path)
        assert len(raw) > 2 * gzipped.COMPRESS_SLICE or piece != gzipped.COMPRESS_SLICE
        assert len(raw) >= gzipped.GZIP_ABOVE
        assert int(resp.headers["Content-Length"]) == len(body)
        doc = _decoded_everywhere(body)
        assert comparable(doc) == comparable(raw)
        assert orjson.loads(doc)["request_id"] == resp.headers["X-Request-ID"]
        time.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))
    assert by == {True, False}  # both an asker's compression and the preparer's were read


def test_curl_reads_the_spliced_gzip_of_a_big_list(big: Harness) -> None:
    """curl --compressed (libcurl's zlib, inflating as the body streams in) reads the answer
    of a list of several slices as the raw one, the tail's stored blocks included."""
    assert shutil.which("curl"), "curl is needed: the check of a second decoder"
    base = big.api.base
    for _ in range(20):
        _, raw = get(base, "/v2/channels", "identity")
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--compressed",
                "-D",
                "-",
                "-H",
                f"X-Auth-Token: {token('super')}",
                base + "/v2/channels",
            ],
            capture_output=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        head, _, doc = out.stdout.partition(b"\r\n\r\n")
        if b"content-encoding: gzip" in head.lower():
            assert comparable(doc) == comparable(raw)
            return
    raise AssertionError("curl never got gzip")


def test_many_askers_and_clients_that_vanish_while_it_is_compressed(
    big: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Twelve clients ask at once while the list is compressed in small slices (the
    compressing request pauses hundreds of times), and three more send the request and
    close at once, one of them as the compressing asker: every answer that arrives is 200,
    reads as one gzip member of the same list, and nothing is logged at ERROR."""
    monkeypatch.setattr(gzipped, "COMPRESS_SLICE", 8191)
    base = big.api.base
    host, port = big.daemon.http_address
    request = (
        f"GET /v2/channels HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
        f"X-Auth-Token: {token('super')}\r\n\r\n"
    ).encode()

    def vanish() -> None:
        import socket

        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(request)

    for _ in range(20):
        second = int(time.time())
        get(base, "/v2/channels", "identity")  # answered once: the next ask compresses
        vanish()  # the asker that compresses, gone before its answer
        jobs = [gevent.spawn(get, base, "/v2/channels") for _ in range(12)]
        jobs += [gevent.spawn(vanish) for _ in range(2)]
        gevent.joinall(jobs, timeout=20, raise_error=True)
        if int(time.time()) != second:
            continue
        answers = [j.value for j in jobs if j.value is not None]
        assert [r.status_code for r, _ in answers] == [200] * 12
        assert {r.headers.get("Content-Encoding") for r, _ in answers} == {"gzip"}
        docs = {orjson.dumps(comparable(_decoded_everywhere(body))) for _, body in answers}
        assert len(docs) == 1
        break
    else:
        raise AssertionError("no second without a turn-over in 20 tries")
    gevent.sleep(0.5)
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []


def test_a_call_that_comes_while_the_preparer_compresses_is_in_every_answer_after_it(
    big: Harness, big_switch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preparer's compression of the next second's list paused for long between slices
    (a busy hub: its turns come late), so that it is still under way when that second begins
    and a call comes meanwhile: every answer asked once the call is in the table has it, in
    gzip or not (no Compressed of the list before it is handed out)."""
    lists = big.daemon.ctx.lists
    monkeypatch.setattr(gzipped, "COMPRESS_SLICE", 128 * 1024)
    real_pause = turns.pause

    def late(*a: Any) -> None:
        if preparing(lists):
            gevent.sleep(0.04)  # ~20 slices: the compression lasts ~0.8 s
        real_pause(*a)

    monkeypatch.setattr(turns, "pause", late)
    base = big.api.base
    _gzip_answer(base, "/v2/channels")  # in demand: the preparer works for the next second
    before = len(big.table)
    time.sleep(max(0.0, int(time.time()) + 1.1 - time.time()))  # the preparer compressing
    assert lists._preparer is not None
    big_switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: len(big.table) >= before + 2, what="the new call")
    seen = []
    end = time.time() + 2.5
    while time.time() < end:
        resp, body = get(base, "/v2/channels")
        gz = resp.headers.get("Content-Encoding") == "gzip"
        doc = orjson.loads(gzip.decompress(body) if gz else body)
        seen.append((gz, len(doc["data"])))
    assert {n for _, n in seen} == {before + 2}, seen
    assert any(gz for gz, _ in seen)


def _list_bytes(size: int) -> bytes:
    item = b'{"uuid":"%032x","caller_id_name":"Zo\xc3\xab","elapsed_s":%d},'
    out = b"[" + b"".join(item % (i, i % 977) for i in range(size // 70)) + b"{}]"
    return out[:size]


def test_askers_at_the_turn_do_not_wait_behind_every_readers_turns(turn_clock: TurnClock) -> None:
    """The preparer compresses the next second's list as bulk work (turns.pause) and that
    second's askers (requests) wait for it (ListCache.gzip: state.get()). Twenty nodes'
    readers at full speed (1 ms turns) are in line: each of the list's slices waits behind
    all of them, so the askers wait ~20 reader turns per slice, ~220 for a 12 MiB list
    (~110-220 ms at TURN-sized turns, on top of the compression's 4-12 ms); compressing it
    themselves they would wait for no reader's turn. Before the change the thread pool
    compressed it beside the readers. A request waiting on bulk work should not have the
    bulk work's priority: once one waits, the slices are paced as a request's. Failed before
    the fix (a priority inversion: 222 turns)."""
    clock = turn_clock
    data = _list_bytes(12 * MiB)
    log: list[int] = []
    crowd = bulk_crowd(clock, 20, 400, log)  # twenty nodes' readers, ingesting
    gevent.sleep(0.005)  # the readers are in line
    pending = gevent.event.AsyncResult()
    memo: list[Any] = [None, 0, data, pending]

    def preparer_compression() -> None:
        listing._compressed(memo, b'{"data":', listing._AGAIN, turns.pause)

    compressing = gevent.spawn(preparer_compression)
    asked = len(log)  # an asker arrives at the turn of the second and waits for it
    state = pending.get(timeout=30)
    waited = len(log) - asked
    assert isinstance(state, Compressed)
    assert gzip.decompress(b"".join(state.answer(b"}"))) == b'{"data":' + data + b"}"
    compressing.join()
    for g in crowd:
        g.kill()
    assert waited <= 2 * 20, f"the askers waited for {waited} turns of the readers' bulk work"


def test_a_stopped_daemon_leaves_no_preparer_behind(big: Harness) -> None:
    """Found by the attack's teardown: the preparer of the next second's lists outlived the
    daemon's stop (it builds and compresses once more, up to a second later), and a test
    after it found it in the bulk-work line. Failed before the fix: alive after the stop."""
    lists = big.daemon.ctx.lists
    _gzip_answer(big.api.base, "/v2/channels")  # in demand: the preparer works
    preparer = lists._preparer
    assert preparer is not None
    big.daemon.stop()
    gevent.sleep(0.01)  # (a kill is delivered at the hub's next turn)
    assert preparer.dead
