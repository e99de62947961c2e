"""Intercept and eavesdrop read their originate job's result (channelsd.jobs): FreeSWITCH's
`+OK Job-UUID` only says the originate is under way; an `-ERR` in the BACKGROUND_JOB within
[actions].job_wait is the answer (502 with the switch's reply), no result yet means the target
rings (200 "… initiated"). End to end on the stand-in, and the waiters themselves.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import pytest
from test_actions import Call

from channelsd.jobs import MAX_EARLY, MAX_WAITERS, JobResults, job_uuid

from conftest import wait_until


@pytest.fixture
def call(switch: Any, make_daemon: Any) -> Call:
    return Call(make_daemon([switch], actions={"job_wait": 0.5}), switch)


def intercept(call: Call, uuid: str, kind: str, target: str) -> Any:
    body = {"action": "intercept", "target_type": kind, "target_id": target}
    return call.post(uuid, {"data": body})


def eavesdrop(call: Call, uuid: str, kind: str, target: str) -> Any:
    body = {"action": "eavesdrop", "target_type": kind, "target_id": target}
    return call.post(uuid, {"data": body})


@pytest.mark.parametrize("send", [intercept, eavesdrop])
def test_an_endpoint_the_switch_cannot_dial_is_502_with_its_reply(call: Call, send: Any) -> None:
    """[actions].intercept_endpoints.device is user/…: a switch that cannot dial it answers the
    bgapi `+OK Job-UUID`, then the job `-ERR CHAN_NOT_IMPLEMENTED`, and nothing happens."""
    uuid = call.p if send is intercept else call.a
    resp = send(call, uuid, "device", "dev9")
    assert resp.status_code == 502, resp.text
    body = resp.json()
    assert body["message"] == "-ERR CHAN_NOT_IMPLEMENTED" and body["data"] == "originate"
    (line,) = call.sent()
    assert line.startswith("bgapi originate ") and "user/dev9@acc1.example" in line
    assert len(call.h.node().jobs) == 0  # nothing kept


@pytest.mark.parametrize("send", [intercept, eavesdrop])
def test_a_target_that_rings_is_initiated_once_job_wait_passes(call: Call, send: Any) -> None:
    """9004 rings and never answers: the job has no result yet, the target rings."""
    uuid = call.p if send is intercept else call.a
    began = time.monotonic()
    resp = send(call, uuid, "number", "9004")
    assert resp.status_code == 200 and resp.json()["data"].endswith(" initiated"), resp.text
    assert time.monotonic() - began < 5  # a bound against hangs, not a speed check
    ringing = wait_until(
        lambda: [c for c in call.switch.model.channels.values() if c.name == "loopback/9004-a"]
    )
    assert ringing[0].alive and not ringing[0].answered
    assert len(call.h.node().jobs) == 0


def test_a_target_that_answers_is_initiated_at_once(switch: Any, make_daemon: Any) -> None:
    """The job says +OK <uuid> as soon as the interceptor answered: no need to wait."""
    call = Call(make_daemon([switch], actions={"job_wait": 30}), switch)
    began = time.monotonic()
    resp = intercept(call, call.p, "number", "9003")
    assert resp.status_code == 200 and resp.json()["data"] == "intercept initiated"
    assert time.monotonic() - began < 10  # the job came; job_wait (30 s) was not waited out
    wait_until(lambda: call.h.table.get(call.p).other_leg not in (None, call.p_twin))


def test_a_refused_job_for_a_busy_target_is_502(call: Call) -> None:
    """9009 hangs up USER_BUSY at once: the job says -ERR USER_BUSY."""
    resp = intercept(call, call.p, "number", "9009")
    assert resp.status_code == 502 and resp.json()["message"] == "-ERR USER_BUSY"


def test_job_wait_zero_answers_at_once(switch: Any, make_daemon: Any) -> None:
    call = Call(make_daemon([switch], actions={"job_wait": 0}), switch)
    resp = intercept(call, call.p, "number", "9009")
    assert resp.status_code == 200  # as before: the command is under way


# -- the waiters ---------------------------------------------------------------------------------


def job(uuid: str, body: str) -> dict[str, Any]:
    return {"Event-Name": "BACKGROUND_JOB", "Job-UUID": uuid, "_body": body}


def test_a_result_that_comes_before_the_reply_is_found() -> None:
    jobs = JobResults()
    with jobs.watch() as watch:
        jobs.complete(job("j1", "-ERR NO_ANSWER\n"))  # the event overtook the bgapi reply
        assert watch.wait("j1", 0.01) == "-ERR NO_ANSWER\n"
    assert len(jobs) == 0


def test_a_result_that_comes_while_waiting_is_handed_over() -> None:
    jobs = JobResults()
    gevent.spawn_later(0.02, jobs.complete, job("j1", "+OK abc\n"))
    with jobs.watch() as watch:
        assert watch.wait("j1", 5) == "+OK abc\n"
    assert len(jobs) == 0


def test_no_result_in_time_is_none_and_nothing_is_kept() -> None:
    jobs = JobResults()
    with jobs.watch() as watch:
        assert watch.wait("j1", 0.01) is None
        assert watch.wait(None, 1) is None
    jobs.complete(job("j1", "+OK late\n"))  # nobody waits any more, no watch is open
    assert len(jobs) == 0


def test_other_clients_jobs_are_kept_only_while_a_watch_is_open_and_only_a_few() -> None:
    jobs = JobResults()
    jobs.complete(job("other", "+OK\n"))
    assert len(jobs) == 0
    with jobs.watch():
        for i in range(3 * MAX_EARLY):
            jobs.complete(job(f"other{i}", "+OK\n"))
        assert len(jobs) == MAX_EARLY
    assert len(jobs) == 0


def test_waiters_are_bounded() -> None:
    jobs = JobResults()
    results: list[Any] = []
    with jobs.watch() as watch:
        group = [
            gevent.spawn(lambda i=i: results.append(watch.wait(f"j{i}", 1.0)))
            for i in range(MAX_WAITERS + 10)
        ]
        # The ten beyond got None at once, while the others still wait (a fixed 10 ms sleep
        # here was not always enough for 266 greenlets to start on a busy machine).
        wait_until(lambda: len(results) >= 10, timeout=0.9, what="the ten beyond the bound")
        assert results == [None] * 10 and len(jobs) == MAX_WAITERS
        gevent.joinall(group)
    assert results.count(None) == MAX_WAITERS + 10 and len(jobs) == 0


@pytest.mark.parametrize(
    ("reply", "job"),
    [
        (
            "+OK Job-UUID: 7f4de4bc-17d7-11dd-b7a0-db4edd065621\n",
            "7f4de4bc-17d7-11dd-b7a0-db4edd065621",
        ),
        ("+OK Job-UUID: x y", None),
        ("-ERR no", None),
        ("", None),
    ],
)
def test_the_job_uuid_of_a_reply(reply: str, job: str | None) -> None:
    assert job_uuid(reply.strip()) == job


def test_the_node_hands_background_jobs_to_its_waiters(call: Call) -> None:
    node = call.h.node()
    with node.jobs.watch() as watch:
        reply = node.bgapi("uuid_kill 00000000-0000-0000-0000-000000000000")
        assert watch.wait(job_uuid(reply.strip()), 5) == "-ERR No such channel!\n"
