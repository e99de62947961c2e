"""What the switch knows about a call, shown by the API (issue #15): the real SIP call of the
s8 capture replayed byte for byte into a running daemon. The expected values are read from the
capture's own events, not written down here."""

from typing import Any

import orjson
import requests

from channelsd.standin.replay import load_frames

from conftest import CAPTURES, token, wait_until

SIP = CAPTURES / "json" / "s8_sip_call.events.raw.gz"


def events() -> list[tuple[Any, dict[str, Any]]]:
    frames = [f for f in load_frames(SIP) if f.event_name]
    return [(f, orjson.loads(f.raw.split(b"\n\n", 1)[1])) for f in frames]


def until(evs: list[tuple[Any, dict[str, Any]]], name: str, uuid: str) -> int:
    """Index just after the first `name` event of `uuid`."""
    for i, (_, e) in enumerate(evs):
        if e["Event-Name"] == name and e.get("Unique-ID") == uuid:
            return i + 1
    raise AssertionError(f"no {name} for {uuid} in the capture")


def last(evs: list[tuple[Any, dict[str, Any]]], upto: int, uuid: str, header: str) -> str:
    values = [e[header] for _, e in evs[:upto] if e.get("Unique-ID") == uuid and header in e]
    assert values, header
    return values[-1]


def test_a_sip_call_shows_its_media_signalling_hold_and_recording(
    switch: Any, make_daemon: Any
) -> None:
    evs = events()
    # The leg originated on the internal profile carries the account variables.
    sip_leg = next(e["Unique-ID"] for _, e in evs if e.get("variable_account_id") == "acc1")
    h = make_daemon([switch])
    path = f"/v2/accounts/acc1/channels/{sip_leg}"
    sent = 0

    def replay_to(n: int) -> None:
        nonlocal sent
        switch.send_frames([f for f, _ in evs[sent:n]])
        sent = n

    parked = until(evs, "CHANNEL_PARK", sip_leg)
    replay_to(parked)
    item = wait_until(lambda: h.api.get(path, "admin1").ok and h.api.data(path, "admin1"))
    want = {
        "read_codec": last(evs, parked, sip_leg, "Channel-Read-Codec-Name"),
        "read_rate": int(last(evs, parked, sip_leg, "Channel-Read-Codec-Rate")),
        "write_codec": last(evs, parked, sip_leg, "Channel-Write-Codec-Name"),
        "write_rate": int(last(evs, parked, sip_leg, "Channel-Write-Codec-Rate")),
        "remote_media_ip": last(evs, parked, sip_leg, "variable_remote_media_ip"),
        "remote_media_port": int(last(evs, parked, sip_leg, "variable_remote_media_port")),
        "sip_call_id": last(evs, parked, sip_leg, "variable_sip_call_id"),
        "user_agent": last(evs, parked, sip_leg, "variable_sip_user_agent"),
        "request_uri": last(evs, parked, sip_leg, "variable_sip_req_uri"),
        "application": last(evs, parked, sip_leg, "variable_current_application"),
        "endpoint": "sofia",
        "is_recording": False,
        "is_secure": False,
        "is_onhold": False,
    }
    assert {k: item.get(k) for k in want} == want
    listed = h.api.data("/v2/accounts/acc1/channels", "admin1")[0]
    assert (listed["endpoint"], listed["is_recording"], listed["is_secure"]) == (
        "sofia",
        False,
        False,
    )
    assert "sip_call_id" not in listed  # list items stay lean: details are in the single GET

    replay_to(until(evs, "CHANNEL_HOLD", sip_leg))
    wait_until(lambda: h.api.data(path, "admin1")["is_onhold"], what="held")
    replay_to(until(evs, "RECORD_START", sip_leg))
    wait_until(lambda: h.api.data(path, "admin1")["is_recording"], what="recording")
    replay_to(until(evs, "RECORD_STOP", sip_leg))
    wait_until(lambda: not h.api.data(path, "admin1")["is_recording"], what="recording stopped")
    assert h.api.data(path, "admin1")["is_onhold"] is False  # CHANNEL_UNHOLD came between


def test_a_call_that_ended_is_listed_with_why_and_how_long_and_the_streams_say_so(
    switch: Any, make_daemon: Any
) -> None:
    evs = events()
    sip_leg = next(e["Unique-ID"] for _, e in evs if e.get("variable_account_id") == "acc1")
    h = make_daemon([switch])
    base = h.api.base
    stream = requests.get(
        f"{base}/v2/accounts/acc1/channel_events",
        headers={"X-Auth-Token": token("admin1")},
        stream=True,
        timeout=10,
    )
    lines = stream.iter_lines()
    assert next(lines).startswith(b"id:")  # the snapshot

    def next_event(kind: bytes) -> dict[str, Any]:
        for line in lines:
            if line == b"event: " + kind:
                return orjson.loads(next(lines)[len(b"data: ") :])
        raise AssertionError("the stream ended")

    # Up to the hang-up first: the stream coalesces changes within its publish interval, and a
    # channel it never showed has nothing to destroy for this subscriber.
    hangup = until(evs, "CHANNEL_HANGUP", sip_leg)
    switch.send_frames([f for f, _ in evs[:hangup]])
    assert next_event(b"create")["uuid"] == sip_leg
    switch.send_frames([f for f, _ in evs[hangup:]])
    complete = next(
        e
        for _, e in evs
        if e["Event-Name"] == "CHANNEL_HANGUP_COMPLETE" and e["Unique-ID"] == sip_leg
    )
    want = {
        "uuid": sip_leg,
        "node": "fs1",
        "hangup_cause": complete["Hangup-Cause"],
        "hangup_disposition": complete["variable_sip_hangup_disposition"],
        "duration_seconds": int(complete["variable_duration"]),
        "billing_seconds": int(complete["variable_billsec"]),
        "mos": float(complete["variable_rtp_audio_in_mos"]),
    }
    ended = wait_until(
        lambda: h.api.data("/v2/accounts/acc1/channels?ended=true", "admin1"), what="ended"
    )
    assert [e["uuid"] for e in ended] == [sip_leg]
    assert {k: ended[0].get(k) for k in want} == want
    assert ended[0]["sip_call_id"] == complete["variable_sip_call_id"]  # and what it was
    assert next_event(b"destroy") == want  # the same through the stream
    stream.close()
    # Isolation and roles as for live lists.
    assert h.api.data("/v2/accounts/acc2/channels?ended=true", "admin2") == []
    assert h.api.get("/v2/accounts/acc1/channels?ended=true", "admin2").status_code == 403
    assert h.api.data("/v2/accounts/acc1/channels?ended=true", "user1") == []  # owner u1
    assert (
        h.api.data("/v2/accounts/acc1/channels?ended=true&filter_hangup_cause=USER_BUSY", "admin1")
        == []
    )
    assert len(h.api.data("/v2/channels?ended=true")) == 2  # both legs, for superduper
