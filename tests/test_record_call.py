"""record_call acts on channelsd's own recordings only (paths it generated for the channel under
record_dir), beside whatever the dialplan or Kazoo records; its paths never repeat; Kazoo's
recording options become the recording's own variables. End to end on the stand-in.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_conformance import POLICY, Bed, ok, refused
from test_standin import Client

from conftest import wait_until

RECORD_DIR = "/var/lib/freeswitch/recordings/channelsd"
DIALPLANS = "/var/rec/Alice Archer-1001.wav"  # a dialplan names files after the caller


@pytest.fixture
def bed(switch: Any, make_daemon: Any) -> Bed:
    return Bed(make_daemon([switch], actions=POLICY), switch)


def record(bed: Bed, uuid: str, **data: Any) -> Any:
    return bed.put(uuid, "record_call", **data)


def recording(bed: Bed, uuid: str) -> list[str]:
    """What the switch records on the channel now."""
    return list(bed.legs[uuid].recordings)


def started(bed: Bed) -> str:
    (line,) = [c for c in bed.sent() if " start " in c]
    return line.split(" ")[4]


def someone_else_records(bed: Bed, uuid: str, path: str) -> None:
    bed.sw.model.record(uuid, "start", path)  # the dialplan's record_session, Kazoo's, ...
    wait_until(lambda: path in bed.h.table.get(uuid).recordings, what="RECORD_START")


def test_a_stop_never_stops_someone_elses_recording(bed: Bed) -> None:
    c = bed.std()
    someone_else_records(bed, c.a2, DIALPLANS)
    for action in ("stop", "mask", "unmask"):
        detail = refused(record(bed, c.a2, action=action), 400, "action")
        assert "not recording" in detail["state"]["message"]
        assert "started by someone else" in detail["state"]["message"]
    assert bed.sent() == [] and recording(bed, c.a2) == [DIALPLANS]
    # toggle: channelsd is not recording, so it starts its own, beside the dialplan's
    ok(record(bed, c.a2), 201)
    ours = started(bed)
    assert ours.startswith(f"{RECORD_DIR}/{c.a2}-")
    assert recording(bed, c.a2) == [DIALPLANS, ours]
    ok(record(bed, c.a2), 201)  # toggle again: stops its own only
    assert bed.sent() == [f"api uuid_record {c.a2} stop {ours}"]
    assert recording(bed, c.a2) == [DIALPLANS]


def test_a_start_works_beside_someone_elses_recording(bed: Bed) -> None:
    c = bed.std()
    someone_else_records(bed, c.a2, "/var/rec/compliance-1.wav")
    ok(record(bed, c.a2, action="start"), 201)
    assert recording(bed, c.a2) == ["/var/rec/compliance-1.wav", started(bed)]
    # but not a second one of its own
    detail = refused(record(bed, c.a2, action="start"), 400, "action")
    assert "already recording" in detail["state"]["message"]


def test_a_stop_stops_channelsds_own_and_nothing_else(bed: Bed) -> None:
    c = bed.std()
    ok(record(bed, c.a2, action="start"), 201)
    ours = started(bed)
    wait_until(lambda: bed.row(c.a2)["is_recording"], what="RECORD_START")
    someone_else_records(bed, c.a2, "/var/rec/compliance-2.wav")  # started after ours
    ok(record(bed, c.a2, action="stop"), 201)
    assert bed.sent() == [f"api uuid_record {c.a2} stop {ours}"]
    assert recording(bed, c.a2) == ["/var/rec/compliance-2.wav"]
    wait_until(lambda: bed.h.table.get(c.a2).recordings == ("/var/rec/compliance-2.wav",))
    assert bed.row(c.a2)["is_recording"]  # the compliance recording goes on


def test_recording_paths_never_repeat(bed: Bed) -> None:
    """start, stop, start within a second: a second file of the same name would overwrite
    the first."""
    p, _ = bed.parked()
    paths = []
    for action in ("start", "stop", "start", "stop", "start"):
        ok(record(bed, p, action=action), 201)
        if action == "start":
            paths.append(started(bed))
    assert len(set(paths)) == 3
    for path in paths:
        assert re.fullmatch(
            re.escape(f"{RECORD_DIR}/{p}-") + r"[0-9]{8}T[0-9]{6}-[0-9a-f]{8}\.wav", path
        )


def test_a_stop_right_after_a_start_finds_it_before_its_event(bed: Bed) -> None:
    p, _ = bed.parked()
    with bed.sw.events_held():
        ok(record(bed, p, action="start"), 201)
        ours = started(bed)
        ok(record(bed, p, action="stop"), 201)
        assert bed.sent() == [f"api uuid_record {p} stop {ours}"]
        # and a start right after that stop is not "already recording"
        ok(record(bed, p, action="start"), 201)
        again = started(bed)
    assert again != ours and recording(bed, p) == [again]
    wait_until(lambda: bed.h.table.get(p).recordings == (again,), what="the events")


def test_a_metaflow_can_start_and_stop_in_one_go(bed: Bed) -> None:
    p, _ = bed.parked()
    flow = {
        "module": "record_call",
        "data": {"action": "start"},
        "children": {"_": {"module": "record_call", "data": {"action": "stop"}}},
    }
    bed.mark = len(bed.sw.received)
    resp = bed.h.api.request(
        "PUT",
        f"/v2/accounts/acc1/channels/{p}",
        "admin1",
        json={"action": "metaflow", "data": flow},
    )
    ok(resp, 201)
    start, stop = bed.sent()
    assert stop == start.replace(" start ", " stop ") and recording(bed, p) == []


@pytest.mark.parametrize(
    ("fields", "args", "variables"),
    [
        ({"record_min_sec": 30}, "0 {record_min_sec=30}", {"record_min_sec": "30"}),
        ({"record_sample_rate": 16000}, "0 {record_sample_rate=16000}", None),
        # JSON 8000.0 is the enum's 8000; the line says 8000 (the variable kind now allows a
        # dot, for realms, so the value's form is the daemon's to fix).
        ({"record_sample_rate": 8000.0}, "0 {record_sample_rate=8000}", None),
        ({"record_min_sec": 30.0}, "0 {record_min_sec=30}", {"record_min_sec": "30"}),
        ({"record_on_answer": True}, "0 {record_answer_req=true}", None),
        ({"record_on_bridge": True}, "0 {record_bridge_req=true}", None),
        ({"record_on_answer": False}, "", {}),
        (
            {"time_limit": 60, "record_min_sec": 5, "record_on_answer": True},
            "60 {record_min_sec=5,record_answer_req=true}",
            {"record_min_sec": "5", "record_answer_req": "true"},
        ),
    ],
)
def test_kazoo_recording_options_are_the_recordings_own_variables(
    bed: Bed, fields: dict[str, Any], args: str, variables: dict[str, str] | None
) -> None:
    """Given in uuid_record's {…} block, they apply to this recording only: nothing is set on
    the channel, where every later recording (the dialplan's too) would inherit them."""
    p, _ = bed.parked()
    before = dict(bed.legs[p].variables)
    ok(record(bed, p, action="start", **fields), 201)
    (line,) = bed.sent()
    path = started(bed)
    assert line == f"api uuid_record {p} start {path}" + (f" {args}" if args else "")
    if variables is not None:
        assert bed.legs[p].recording_vars[path] == variables
    assert bed.legs[p].variables == before


@pytest.mark.parametrize(
    "field",
    [
        {"time_limit": 5},
        {"record_min_sec": 5},
        {"record_sample_rate": 8000},
        {"record_on_answer": True},
        {"record_on_bridge": False},
    ],
)
def test_start_options_are_refused_where_nothing_starts(bed: Bed, field: dict[str, Any]) -> None:
    p, _ = bed.parked()
    ok(record(bed, p, action="start"), 201)
    (name,) = field
    detail = refused(record(bed, p, action="stop", **field), 400, f"data.{name}")
    assert detail == {
        "not": {"message": "Field applies to starting a recording (start or toggle) only"}
    }
    assert bed.sent() == []


def test_an_invalid_sample_rate_is_refused(bed: Bed) -> None:
    p, _ = bed.parked()
    refused(
        record(bed, p, action="start", record_sample_rate=12345), 400, "data.record_sample_rate"
    )
    assert bed.sent() == []


def test_the_stand_in_starts_a_path_already_recording_once(switch: Any) -> None:
    """FreeSWITCH (switch_ivr_record_session_event): "Already recording" -- +OK, and neither a
    second media bug nor a second RECORD_START."""
    watch = Client(switch.port)
    watch.login()
    watch.subscribe("json RECORD_START")
    p, _ = switch.originate(dest="9003")
    for extra in (" 0 {record_min_sec=3}", ""):
        reply = switch.api.execute("uuid_record", f"{p} start /r/a.wav{extra}")
        assert reply == b"+OK Success\n"
    starts = [dict(e).get("Record-File-Path") for e in watch.json_events()]
    assert starts == ["/r/a.wav"]
    ch = switch.model.channels[p]
    assert ch.recordings == ["/r/a.wav"]
    assert ch.recording_vars["/r/a.wav"] == {"record_min_sec": "3"}
    watch.close()
