"""A bridge whose callee still rings, in the stand-in, as FreeSWITCH ends it (issue #13).

``switch_ivr_originate`` + ``mod_dptools``' bridge: the caller hanging up cancels its ringing
callee (ORIGINATOR_CANCEL); a callee that refuses hangs the caller up with its cause; a ring
timeout is NO_ANSWER and the caller's dialplan goes on (here: nothing left, NORMAL_CLEARING).
And the SIP legs the demo uses carry what the s8 capture's SIP legs carry.  Every test talks to
the stand-in over a real ESL socket.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
import test_standin_actions
from test_standin_actions import index, seq

from channelsd.standin.channels.dialplan import DIALPLAN
from channelsd.standin.channels.sofia import SipEnd

from conftest import CAPTURES

esl = test_standin_actions.esl  # the same ESL-client fixture

ALICE = SipEnd("internal", "1001", "acme.example", "10.10.1.11", media_port=40000, call_id="c1")
BOB = SipEnd("internal", "1002", "10.10.1.12:5060", "10.10.1.12", media_port=40002, call_id="c2")
TRUNK = SipEnd(
    "external", "+12125550123", "sbc.example", "203.0.113.10", media_port=30000, gateway="gw1"
)


def ringing(switch: Any, sip: bool) -> tuple[str, str]:
    if sip:
        return switch.bridged_call(answer=False, sip_a=ALICE, sip_b=BOB)
    return switch.bridged_call(answer=False)


def last(events: list[dict[str, Any]], uid: str, name: str) -> dict[str, Any]:
    return events[
        max(
            i for i, e in enumerate(events) if e.get("Unique-ID") == uid and e["Event-Name"] == name
        )
    ]


@pytest.mark.parametrize("sip", [False, True], ids=["loopback-named", "sip"])
def test_caller_hangup_cancels_its_ringing_callee(switch, esl, sip):
    ev, c = esl(subscribe=True), esl()
    a, b = ringing(switch, sip)
    ev.events()
    assert c.api(f"uuid_kill {a}") == b"+OK\n"
    events = ev.events()
    hangups = {
        e["Unique-ID"]: e["Hangup-Cause"] for e in events if e["Event-Name"] == "CHANNEL_HANGUP"
    }
    assert hangups == {a: "NORMAL_CLEARING", b: "ORIGINATOR_CANCEL"}
    # the caller's bridge returns once the originate has ended its callee
    assert index(events, a, "CHANNEL_HANGUP") < index(events, b, "CHANNEL_HANGUP")
    assert index(events, b, "CHANNEL_HANGUP_COMPLETE") < index(
        events, a, "CHANNEL_EXECUTE_COMPLETE", Application="bridge"
    )
    assert seq(events, b) == ["HANGUP", "CALLSTATE:HANGUP", "HANGUP_COMPLETE", "DESTROY"]
    done = last(events, a, "CHANNEL_HANGUP_COMPLETE")
    assert done["variable_originate_disposition"] == "ORIGINATOR_CANCEL"
    assert done["variable_DIALSTATUS"] == "CANCEL"
    assert done["variable_originate_causes"] == f"{b};ORIGINATOR_CANCEL"
    assert c.api("show channels count").startswith(b"\n0 total")
    assert not switch.channels


def test_caller_of_a_dialplan_bridge_cancels_both_loopback_halves(switch, esl, monkeypatch):
    """Reference §0.1's 9014: ``bridge loopback/9004/default``, a callee that rings for ever.
    Killing the caller (9014-b) takes its twin, and the ringing callee pair goes
    ORIGINATOR_CANCEL (loopback twins die together, with the same cause)."""
    monkeypatch.setitem(DIALPLAN, "9014", [("bridge", "loopback/9004/default")])
    ev, c = esl(subscribe=True), esl()
    a, caller = switch.originate(dest="9014")
    names = {ch.name: ch.uuid for ch in switch.channels.values()}
    assert set(names) == {
        "loopback/9014-a",
        "loopback/9014-b",
        "loopback/9004-a",
        "loopback/9004-b",
    }
    assert not switch.channels[names["loopback/9004-a"]].answered
    ev.events()
    assert c.api(f"uuid_kill {caller}") == b"+OK\n"
    causes = {
        e["Channel-Name"]: e["Hangup-Cause"]
        for e in ev.events()
        if e["Event-Name"] == "CHANNEL_HANGUP_COMPLETE"
    }
    assert causes == {
        "loopback/9014-b": "NORMAL_CLEARING",
        "loopback/9014-a": "NORMAL_CLEARING",
        "loopback/9004-a": "ORIGINATOR_CANCEL",
        "loopback/9004-b": "ORIGINATOR_CANCEL",
    }
    assert not switch.channels


@pytest.mark.parametrize(
    ("cause", "dialstatus"), [("USER_BUSY", "BUSY"), ("CALL_REJECTED", "DONTCALL")]
)
def test_a_refusing_callee_hangs_its_caller_up_with_its_cause(switch, esl, cause, dialstatus):
    ev, c = esl(subscribe=True), esl()
    a, b = ringing(switch, sip=True)
    ev.events()
    assert c.api(f"uuid_kill {b} {cause}") == b"+OK\n"
    events = ev.events()
    done = last(events, a, "CHANNEL_HANGUP_COMPLETE")
    assert (done["Hangup-Cause"], done["variable_DIALSTATUS"]) == (cause, dialstatus)
    assert done["variable_originate_disposition"] == cause
    # mod_dptools hangs the caller up inside the bridge app: HANGUP before the app returns
    assert index(events, a, "CHANNEL_HANGUP") < index(
        events, a, "CHANNEL_EXECUTE_COMPLETE", Application="bridge"
    )
    assert not switch.channels


def test_ring_timeout_is_no_answer_and_the_dialplan_goes_on(switch, esl):
    """NO_ANSWER is "always a reason to continue": the bridge app returns first, then the
    caller, with nothing left to run, hangs up NORMAL_CLEARING."""
    ev = esl(subscribe=True)
    a, b = ringing(switch, sip=True)
    ev.events()
    assert switch.model.ring_timeout(a) == [b]
    events = ev.events()
    callee = last(events, b, "CHANNEL_HANGUP_COMPLETE")
    caller = last(events, a, "CHANNEL_HANGUP_COMPLETE")
    assert (callee["Hangup-Cause"], callee["variable_sip_hangup_disposition"]) == (
        "NO_ANSWER",
        "send_cancel",
    )
    assert (caller["Hangup-Cause"], caller["variable_DIALSTATUS"]) == (
        "NORMAL_CLEARING",
        "NOANSWER",
    )
    assert caller["variable_originate_disposition"] == "NO_ANSWER"
    assert index(events, a, "CHANNEL_EXECUTE_COMPLETE", Application="bridge") < index(
        events, a, "CHANNEL_HANGUP"
    )
    assert not switch.channels


def test_answered_and_picked_off_callees_leave_the_caller_alone(switch, esl):
    """Only a callee that fails while its caller waits in ``bridge`` ends the caller; a callee
    picked off by an interceptor leaves its caller to the interceptor."""
    a, b = ringing(switch, sip=True)
    switch.hangup(b, "PICKED_OFF")
    assert switch.model.locate(a) is not None and not switch.model.ringing_callees(
        switch.channels[a]
    )
    c, d = switch.bridged_call(sip_a=ALICE, sip_b=BOB)
    switch.hangup(d)  # an answered callee: the bridge ends, the caller follows (s2)
    assert c not in switch.channels


def test_a_transferred_caller_rings_a_new_callee_and_can_cancel_it(switch, esl):
    ev = esl(subscribe=True)
    a, b = switch.bridged_call(sip_a=ALICE, sip_b=BOB)
    switch.transfer(a, "1003")
    assert b not in switch.channels  # s2_transfer: the other party hangs up
    carol = SipEnd("internal", "1003", "10.10.1.13:5060", "10.10.1.13", media_port=40004)
    c = switch.model.dial(a, ("Carol", "1003"), sip=carol)
    assert [ch.uuid for ch in switch.model.ringing_callees(switch.channels[a])] == [c]
    ev.events()
    switch.hangup(a)
    events = ev.events()
    assert last(events, c, "CHANNEL_HANGUP_COMPLETE")["Hangup-Cause"] == "ORIGINATOR_CANCEL"
    assert not switch.channels


def s8_variable_names() -> set[str]:
    raw = gzip.decompress((CAPTURES / "json" / "s8_sip_call.events.raw.gz").read_bytes())
    names: set[str] = set()
    for chunk in raw.split(b"Content-Type: text/event-json\n\n")[1:]:
        body = json.JSONDecoder().raw_decode(chunk.decode())[0]
        names.update(k for k in body if k.startswith("variable_"))
    return names


def test_sip_legs_carry_what_s8s_sip_legs_carry(switch, esl):
    ev = esl(subscribe=True)
    a, b = switch.bridged_call(
        variables_a={"account_id": "acc1"},
        callee=("+12125550123", "+12125550123"),
        sip_a=ALICE,
        sip_b=TRUNK,
    )
    events = ev.events()
    legs = {e["Unique-ID"]: e for e in events if e["Event-Name"] == "CHANNEL_BRIDGE"}
    assert list(legs) == [a]
    caller = last(events, a, "CHANNEL_BRIDGE")
    callee = last(events, b, "CHANNEL_ANSWER")
    assert caller["Channel-Name"] == "sofia/internal/1001@acme.example"
    assert callee["Channel-Name"] == "sofia/external/+12125550123"  # through a gateway
    assert caller["Other-Leg-Channel-Name"] == callee["Channel-Name"]
    assert caller["Caller-Callee-ID-Number"] == "+12125550123"
    for e in (caller, callee):
        assert (e["Channel-Read-Codec-Name"], e["Channel-Read-Codec-Rate"]) == ("PCMU", "8000")
        assert e["Channel-Write-Codec-Bit-Rate"] == "64000"
        assert e["variable_read_codec"] == "PCMU"
        assert "variable_is_loopback" not in e and "variable_loopback_leg" not in e
    assert (caller["variable_sip_network_ip"], caller["variable_remote_media_port"]) == (
        "10.10.1.11",
        "40000",
    )
    assert caller["variable_sip_call_id"] == "c1"
    assert caller["variable_sip_req_uri"] == "+12125550123@acme.example"
    assert callee["variable_sip_gateway_name"] == "gw1"
    assert callee["variable_sip_req_uri"] == "+12125550123@sbc.example"
    assert callee["variable_remote_media_ip"] == "203.0.113.10"
    # the codec is set when media starts (s8: CODEC x2 right before the answer)
    codecs = [e for e in events if e["Event-Name"] == "CODEC" and e["Unique-ID"] == b]
    assert [
        e.get("channel-read-codec-name") or e.get("Channel-Write-Codec-Name") for e in codecs
    ] == [
        "PCMU",
        "PCMU",
    ]
    assert index(events, b, "CODEC") < index(events, b, "CHANNEL_ANSWER")
    # every sofia variable the stand-in sets is one a real SIP leg carried in s8
    ours = {
        k for e in events if "variable_sip_call_id" in e for k in e if k.startswith("variable_")
    }
    sofia = {k for k in ours if k.startswith(("variable_sip_", "variable_rtp_", "variable_sofia"))}
    # (but sip_gateway_name: s8 had no gateway; mod_sofia sets it on a gateway's legs)
    assert sofia and sofia - {"variable_sip_gateway_name"} <= s8_variable_names()


def test_sip_hangup_dispositions_and_recordings_closed_by_the_hangup(switch, esl):
    ev, c = esl(subscribe=True), esl()
    a, b = switch.bridged_call(sip_a=ALICE, sip_b=BOB)
    assert c.api(f"uuid_record {a} start /tmp/rec.wav") == b"+OK Success\n"
    switch.set_variable(b, "sip_hangup_disposition", "recv_bye")  # Bob's phone sent BYE
    switch.hangup(b)
    events = ev.events()
    stop = last(events, a, "RECORD_STOP")
    assert (stop["Record-File-Path"], stop["Record-Completion-Cause"]) == (
        "/tmp/rec.wav",
        "success-silence",
    )
    assert index(events, a, "RECORD_STOP") < index(events, a, "CHANNEL_HANGUP_COMPLETE")
    dispositions = {
        e["Unique-ID"]: e["variable_sip_hangup_disposition"]
        for e in events
        if e["Event-Name"] == "CHANNEL_HANGUP_COMPLETE"
    }
    assert dispositions == {b: "recv_bye", a: "send_bye"}
    x, y = ringing(switch, sip=False)  # loopback legs: no SIP, no disposition
    switch.hangup(x)
    assert all(
        "variable_sip_hangup_disposition" not in e
        for e in ev.events()
        if e["Event-Name"] == "CHANNEL_HANGUP_COMPLETE"
    )
