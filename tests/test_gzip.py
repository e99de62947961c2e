"""Large lists in gzip for the clients that accept it, over real sockets, both serving paths.

A list answered again within its second (ListCache kept it) goes out in gzip to a client whose
Accept-Encoding takes it; the body is the head and list compressed once, the per-request tail
as stored blocks: every decoder must read it as the very answer a raw client gets.
"""

import gzip
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import gevent
import gevent.event
import orjson
import pytest
import requests
from gevent.pywsgi import WSGIServer
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd import gzipped, listing
from channelsd.api import create_app
from channelsd.channel import GREGORIAN_OFFSET as GREGORIAN
from channelsd.gzipped import accepts_gzip, compress

from conftest import Harness, preparing, token, wait_until

ACC1 = {"account_id": "acc1", "owner_id": "user1"}
ACC2 = {"account_id": "acc2", "owner_id": "user2"}
SMALL = 64 * 1024
PATHS = ("/v2/channels", "/v2/accounts/acc1/channels", "/v2/accounts/acc2/channels")


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300),
    st.binary(max_size=5000),
    st.binary(max_size=140_000),
    st.integers(min_value=1, max_value=6000),
)
def test_the_spliced_stream_reads_as_head_list_and_tail(
    head: bytes, data: bytes, tail: bytes, piece: int
) -> None:
    """Compressed a slice at a time (of `piece` bytes), pausing between slices, and any tail
    spliced after it: one gzip member of head, list and tail."""
    pauses: list[None] = []
    with mock.patch.object(gzipped, "COMPRESS_SLICE", piece):
        body = b"".join(compress(head, data, lambda: pauses.append(None)).answer(tail))
    assert gzip.decompress(body) == head + data + tail
    assert zlib.decompress(body, 47) == head + data + tail  # one member, nothing after it
    assert len(pauses) == max(0, -(-len(data) // piece) - 1)  # between slices, not after


@pytest.mark.parametrize(
    "header, takes",
    [
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("GZIP", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("br", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding_is_read_with_its_q_values(header: str | None, takes: bool) -> None:
    assert accepts_gzip(header) is takes


@pytest.fixture
def served(switch: Any, make_daemon: Any) -> Iterator[dict[str, str]]:
    """The daemon (fast path in front), and the same app without it over the same table."""
    for _ in range(150):
        switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    h = make_daemon([switch])
    wait_until(lambda: len(h.table) >= 300, what="300 channels")
    h.daemon.ctx.lists.gzip_above = SMALL  # (the default needs ~1,000 channels)
    app = create_app(replace(h.daemon.ctx, fast_lists=False, metrics=None))
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    yield {"fast": h.api.base, "flask": f"http://127.0.0.1:{server.server_port}", "h": h}
    server.stop()


def get(base: str, path: str, encoding: str | None = "gzip") -> tuple[requests.Response, bytes]:
    """The answer and its body exactly as it came off the wire (not decoded by requests)."""
    headers = {"X-Auth-Token": token("super"), "Accept-Encoding": encoding or "identity"}
    resp = requests.get(base + path, headers=headers, timeout=10, stream=True)
    return resp, resp.raw.read(decode_content=False)


def comparable(body: bytes) -> Any:
    doc = orjson.loads(body)
    for key in ("request_id", "timestamp"):
        doc.pop(key)
    for item in doc["data"]:
        item.pop("elapsed_s")
    return doc


@pytest.mark.parametrize("path", ["/v2/channels", "/v2/accounts/acc1/channels"])
@pytest.mark.parametrize("which", ["fast", "flask"])
def test_a_list_asked_again_goes_in_gzip_and_reads_as_the_raw_one(
    served: dict[str, Any], which: str, path: str
) -> None:
    base = served[which]
    first, raw = get(base, path)
    assert first.status_code == 200 and len(raw) >= SMALL
    # The first answer of a list goes as it is: one client polling gains nothing from gzip.
    assert "Content-Encoding" not in first.headers
    assert first.headers["Vary"] == "Accept-Encoding"
    again, body = wait_until(lambda: _gzipped(base, path), what="a gzip answer")
    assert again.headers["Vary"] == "Accept-Encoding"
    assert int(again.headers["Content-Length"]) == len(body) < len(raw) // 4
    assert comparable(gzip.decompress(body)) == comparable(raw)
    assert zlib.decompress(body, 47) == gzip.decompress(body)
    assert orjson.loads(gzip.decompress(body))["request_id"] == again.headers["X-Request-ID"]


def _gzipped(base: str, path: str) -> tuple[requests.Response, bytes] | None:
    # (two in a row are kept for the rest of their wall-clock second: a second may turn over)
    get(base, path)
    resp, body = get(base, path)
    return (resp, body) if resp.headers.get("Content-Encoding") == "gzip" else None


@pytest.mark.parametrize("encoding", [None, "gzip;q=0", "br"])
def test_a_client_that_does_not_take_gzip_never_gets_it(
    served: dict[str, Any], encoding: str | None
) -> None:
    for which in ("fast", "flask"):
        for _ in range(4):
            resp, body = get(served[which], "/v2/channels", encoding)
            assert "Content-Encoding" not in resp.headers
            assert len(orjson.loads(body)["data"]) == 300


def test_a_changed_list_goes_raw_then_gzip_again(served: dict[str, Any], switch: Any) -> None:
    base = served["fast"]
    wait_until(lambda: _gzipped(base, "/v2/channels"), what="a gzip answer")
    switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    wait_until(lambda: len(served["h"].table) >= 302, what="the new call")
    resp, body = get(base, "/v2/channels")
    assert "Content-Encoding" not in resp.headers  # a new list: built, answered once, raw
    assert len(orjson.loads(body)["data"]) == 302
    again, zipped = wait_until(lambda: _gzipped(base, "/v2/channels"), what="gzip again")
    assert len(orjson.loads(gzip.decompress(zipped))["data"]) == 302


def test_small_lists_are_never_compressed(served: dict[str, Any], switch: Any) -> None:
    switch.bridged_call(variables_a={"account_id": "small"}, variables_b={"account_id": "small"})
    wait_until(lambda: len(served["h"].table) >= 302, what="the small account's call")
    for _ in range(4):
        resp, body = get(served["fast"], "/v2/accounts/small/channels")
        assert "Content-Encoding" not in resp.headers and len(body) < SMALL


def test_clients_asking_while_it_is_compressed_wait_for_it(served: dict[str, Any]) -> None:
    """Several dashboards at once: none is handed the raw list because another request is
    compressing it (12 MB each to a dozen clients held the compressing one back)."""

    base = served["fast"]
    for _ in range(20):
        second = int(time.time())
        get(base, "/v2/channels")  # built and answered once: the next ones compress
        answers = gevent.joinall([gevent.spawn(get, base, "/v2/channels") for _ in range(8)])
        if int(time.time()) != second:
            continue  # a wall-clock second turned over: the list was built anew meanwhile
        assert [g.value[0].headers.get("Content-Encoding") for g in answers] == ["gzip"] * 8
        return
    raise AssertionError("no second without a turn-over in 20 tries")


def test_a_list_in_demand_is_ready_in_gzip_when_the_next_second_begins(
    served: dict[str, Any],
) -> None:
    """Dashboards polling the system list: its next second's version is built and compressed
    before that second begins, so its first asker already gets gzip (nobody waits on a
    build), with every channel there and elapsed_s as of the new second."""
    base = served["fast"]
    wait_until(lambda: _gzipped(base, "/v2/channels"), what="a gzip answer")
    second = int(time.time())
    time.sleep(second + 1.05 - time.time())
    resp, body = get(base, "/v2/channels")
    assert int(time.time()) == second + 1  # (asked within the new second)
    assert resp.headers.get("Content-Encoding") == "gzip"
    doc = orjson.loads(gzip.decompress(body))
    assert len(doc["data"]) == 300
    # timestamp + elapsed_s is the answer's now, in whole seconds: the new second's
    assert {i["timestamp"] + i["elapsed_s"] for i in doc["data"]} == {second + 1 + GREGORIAN}


def _settled(h: Harness) -> None:
    """Every node ready and the system list unchanged for 0.5 s: ListCache keeps a list only
    while its scope does not move, and a daemon just started may still be reconciling (its
    refreshes and the end of its stale period move every list) while a test begins."""
    h.wait_ready()

    def still() -> bool:
        gen = h.table._rows.gen
        time.sleep(0.5)
        return h.table._rows.gen == gen

    wait_until(still, timeout=15, what="a table that has settled")


def _compressions(
    h: Harness, monkeypatch: pytest.MonkeyPatch, before: Callable[[bool], Any]
) -> list[tuple[bool, float, float]]:
    """Every compression as (the preparer's, began, ended). `before(the preparer's)` runs
    ahead of each real compression: a busy machine's wait, a failure."""
    lists = h.daemon.ctx.lists
    real = listing.compress
    seen: list[tuple[bool, float, float]] = []

    def compress(head: bytes, data: bytes, pause: Callable[[], None]) -> Any:
        began = time.time()
        by_preparer = preparing(lists)
        before(by_preparer)
        done = real(head, data, pause)
        seen.append((by_preparer, began, time.time()))
        return done

    monkeypatch.setattr(listing, "compress", compress)
    return seen


def test_a_preparation_that_outlasts_its_second_is_waited_for_not_done_again(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy machine compressing the system list for the next second can end after that
    second began (0.1-0.5 s). Its askers then wait for it: built and compressed again beside
    it, each dashboard at the turn waited on a second compression and the first one was
    thrown away."""
    _settled(served["h"])

    def slow(by_preparer: bool) -> None:
        if by_preparer:  # ends 0.2 s into the next second
            gevent.sleep(int(time.time()) + 1.2 - time.time())

    seen = _compressions(served["h"], monkeypatch, slow)
    base = served["fast"]
    wait_until(lambda: _gzipped(base, "/v2/channels"), what="a gzip answer")
    answers: list[tuple[float, str | None]] = []
    end = time.time() + 3.5
    while time.time() < end:  # a dashboard polling without pause
        resp, _ = get(base, "/v2/channels")
        answers.append((time.time(), resp.headers.get("Content-Encoding")))
    prepared = [s for s in seen if s[0]]
    assert len(prepared) >= 2, seen
    first = prepared[0][2]
    assert [s for s in seen if not s[0] and s[1] > first] == []
    assert {encoding for at, encoding in answers if at > first} == {"gzip"}


def test_a_killed_preparation_lets_its_waiters_go(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preparer killed while the next second's askers wait for its compression: they
    are answered (raw), and the next ask compresses the list itself."""
    _settled(served["h"])

    lists = served["h"].daemon.ctx.lists
    started = gevent.event.Event()

    def never(by_preparer: bool) -> None:
        if by_preparer:
            started.set()
            gevent.sleep(60)

    seen = _compressions(served["h"], monkeypatch, never)
    base = served["fast"]
    wait_until(lambda: _gzipped(base, "/v2/channels"), what="a gzip answer")
    assert started.wait(3)  # the preparer compresses the next second's list, for ever
    preparer = lists._preparer
    time.sleep(max(0.0, int(time.time()) + 1.1 - time.time()))  # into that next second
    waiting = gevent.spawn(get, base, "/v2/channels")
    wait_until(lambda: lists._memos and not waiting.ready(), what="an ask waiting")
    gevent.sleep(0.2)
    assert not waiting.ready()  # (it waits for the preparer's compression)
    preparer.kill()
    resp, body = waiting.get(timeout=5)
    assert resp.status_code == 200 and "Content-Encoding" not in resp.headers
    assert len(orjson.loads(body)["data"]) == 300
    again, _ = get(base, "/v2/channels")
    assert again.headers.get("Content-Encoding") == "gzip"
    assert not seen[-1][0]  # the last compression was an asker's


@pytest.fixture
def three(switch: Any, make_daemon: Any) -> Harness:
    """Three lists above gzip_above: the system list (420), acc1's (300), acc2's (120)."""
    for _ in range(150):
        switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
    for _ in range(60):
        switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
    h = make_daemon([switch])
    wait_until(lambda: len(h.table) >= 420, what="420 channels")
    h.daemon.ctx.lists.gzip_above = SMALL
    return h


def _sleep_until(at: float) -> None:
    time.sleep(max(0.0, at - time.time()))


def _all_in_demand(h: Harness) -> int | None:
    """Every list asked for twice early in a second, before the preparer's round (PREPARE_LEAD
    before its end): that second, or None when the asks ran late (tried again)."""
    _sleep_until(int(time.time()) + 1.05)
    second = int(time.time())
    for _ in range(2):
        for path in PATHS:
            get(h.api.base, path)
    return second if time.time() < second + 0.6 else None


def test_the_lists_in_demand_are_compressed_side_by_side_for_the_next_second(
    three: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three lists in demand at once, each compression slow (a busy machine): the preparer
    compresses them side by side, so that each list's askers at the turn wait for their own
    list only. One after the other (found by the outside attack), an asker of the third list
    waited for the first two lists' compressions too: three times as long."""
    _settled(three)
    slow = {"on": False}

    def busy(by_preparer: bool) -> None:
        if slow["on"]:
            gevent.get_hub().threadpool.apply(time.sleep, (0.5,))  # (busy: the CPU's time)

    seen = _compressions(three, monkeypatch, busy)
    for path in PATHS:
        wait_until(lambda p=path: _gzipped(three.api.base, p), what=f"{path} in gzip")
    second = wait_until(lambda: _all_in_demand(three), timeout=10, what="a second to ask in")
    slow["on"] = True
    _sleep_until(second + 1.02)  # the turn: each dashboard asks its list
    asked = [gevent.spawn(get, three.api.base, p) for p in PATHS]
    gevent.joinall(asked, raise_error=True, timeout=20)
    slow["on"] = False
    assert [g.value[0].status_code for g in asked] == [200] * 3
    prepared = [(began, ended) for by_preparer, began, ended in seen if by_preparer]
    prepared = [(b, e) for b, e in prepared if second < b < second + 1]  # that round's
    assert len(prepared) == 3, seen
    assert max(b for b, _ in prepared) < min(e for _, e in prepared)  # all at once


def test_a_preparer_dying_of_a_base_exception_lets_its_waiters_go(
    three: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preparer's compression raises a BaseException that is not GreenletExit (and not a
    system error), while the next second's askers of every list wait: all are answered."""
    _settled(three)
    arm = {"on": False}

    class Boom(BaseException):
        pass

    def dying(by_preparer: bool) -> None:
        if arm["on"] and by_preparer:
            gevent.sleep(1.0)  # into the next second, its askers waiting
            raise Boom()

    _compressions(three, monkeypatch, dying)
    for path in PATHS:
        wait_until(lambda p=path: _gzipped(three.api.base, p), what=f"{path} in gzip")
    _sleep_until(int(time.time()) + 1.05)
    second = int(time.time())
    for path in PATHS:
        get(three.api.base, path)
    arm["on"] = True
    _sleep_until(second + 1.05)
    jobs = [gevent.spawn(get, three.api.base, p) for p in PATHS]
    gevent.joinall(jobs, timeout=8)
    arm["on"] = False
    assert all(j.ready() for j in jobs), "askers hang on the dead preparer"
    for j in jobs:
        assert j.value[0].status_code == 200
    for path in PATHS:
        wait_until(lambda p=path: _gzipped(three.api.base, p), what=f"{path} in gzip again")


def test_a_late_preparation_answers_with_its_seconds_elapsed(
    three: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preparer's compression ends 1.3 s into the next second (past the one after): every
    answer's items still add up to the answer's own timestamp (timestamp + elapsed_s)."""
    _settled(three)
    arm = {"on": False}

    def late(by_preparer: bool) -> None:
        if arm["on"] and by_preparer:
            gevent.sleep(int(time.time()) + 2.3 - time.time())

    _compressions(three, monkeypatch, late)
    wait_until(lambda: _gzipped(three.api.base, PATHS[0]), what="gzip")
    _sleep_until(int(time.time()) + 1.05)
    second = int(time.time())
    get(three.api.base, PATHS[0])
    arm["on"] = True
    bad = []
    end = second + 4.2
    while time.time() < end:
        resp, body = get(three.api.base, PATHS[0])
        raw = gzip.decompress(body) if resp.headers.get("Content-Encoding") == "gzip" else body
        doc = orjson.loads(raw)
        parsed = datetime.strptime(doc["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        stamp = int(parsed.replace(tzinfo=UTC).timestamp())
        sums = {i["timestamp"] + i["elapsed_s"] for i in doc["data"]}
        if sums != {stamp + GREGORIAN}:
            bad.append((resp.headers.get("Content-Encoding"), stamp, sums))
    arm["on"] = False
    assert bad == []
