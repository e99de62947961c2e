"""Listen in (issue #15): POST `eavesdrop` and the `eavesdrop` metaflow module, end to end over
real sockets: the exact ESL line the daemon sends, what the stand-in's `eavesdrop` application
then does (the listener leg, the media bug on the target, the DTMF keys, who ends what), the
refusals (nothing sent), and the stand-in's own model of the application against what
FreeSWITCH's source says and the s8 capture shows of a media bug event.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from test_actions import ALICE, ALICE_IDENTITY, Call, ok, refused
from test_standin import Client

from channelsd import gate
from channelsd.standin.replay import load_frames

from conftest import CAPTURES, wait_until

WATCHED = (
    "json MEDIA_BUG_START MEDIA_BUG_STOP CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE "
    "CHANNEL_HANGUP CHANNEL_CALLSTATE CHANNEL_DESTROY"
)


@pytest.fixture
def call(switch: Any, make_daemon: Any) -> Call:
    return Call(make_daemon([switch], sync={"command_timeout": 1}), switch)


@pytest.fixture
def events(switch: Any) -> Any:
    clients: list[Client] = []

    def watch() -> Client:
        c = Client(switch.port)
        c.login()
        c.subscribe(WATCHED)
        clients.append(c)
        return c

    yield watch
    for c in clients:
        c.close()


def esl(switch: Any) -> Client:
    c = Client(switch.port)
    c.login()
    return c


def post(call: Call, uuid: str, **data: Any) -> Any:
    return call.post(uuid, {"data": {"action": "eavesdrop", **data}})


def line(call: Call, uuid: str, dtmf: str, aleg: str, bleg: str, endpoint: str) -> str:
    variables = (
        f"eavesdrop_enable_dtmf={dtmf},eavesdrop_whisper_aleg={aleg},eavesdrop_whisper_bleg={bleg}"
    )
    return f"bgapi originate {{{variables},{ALICE_IDENTITY}}}{endpoint} &eavesdrop({uuid})"


def listener_of(call: Call, target: str) -> Any:
    """The stand-in's running eavesdrop on `target`, once the listener has answered."""
    model = call.switch.model
    return wait_until(
        lambda: next((e for e in model.eavesdrops.values() if e.target == target), None),
        what="the listener eavesdropping",
    )


def destroyed(seen: list[tuple[str, str, str]], uuid: str) -> int:
    """Index of `uuid`'s CHANNEL_DESTROY in `seen`."""
    return next(i for i, s in enumerate(seen) if s[:2] == ("CHANNEL_DESTROY", uuid))


def named(evs: list[list[tuple[str, Any]]]) -> list[tuple[str, str, str]]:
    """(event, Unique-ID, what: the application or the media bug function) of each event."""
    out = []
    for pairs in evs:
        e = dict(pairs)
        what = e.get("Application") or e.get("Media-Bug-Function") or e.get("Hangup-Cause", "")
        if e["Event-Name"] == "CHANNEL_CALLSTATE":
            what = e["Channel-Call-State"]
        out.append((e["Event-Name"], e["Unique-ID"], what))
    return out


# -- the three modes: the line, then what the switch does ---------------------------------------

# (request fields, eavesdrop_whisper_aleg, eavesdrop_whisper_bleg, the stand-in's mode)
MODES = [
    ({}, "false", "false", "listen"),
    ({"mode": "listen"}, "false", "false", "listen"),
    ({"mode": "whisper"}, "false", "true", "whisper-self"),
    ({"mode": "whisper", "whisper_leg": "self"}, "false", "true", "whisper-self"),
    ({"mode": "whisper", "whisper_leg": "peer"}, "true", "false", "whisper-peer"),
    ({"mode": "barge"}, "true", "true", "barge"),
]


@pytest.mark.parametrize(("fields", "aleg", "bleg", "mode"), MODES)
def test_each_mode_rings_the_target_and_listens_in(
    call: Call, events: Any, fields: dict[str, Any], aleg: str, bleg: str, mode: str
) -> None:
    ev = events()
    resp = post(call, call.a, target_type="number", target_id="9003", **fields)
    ok(resp, 200, "eavesdrop initiated")
    assert call.sent() == [line(call, call.a, "true", aleg, bleg, "loopback/9003/default")]

    e = listener_of(call, call.a)
    assert (e.mode, e.dtmf) == (mode, True)
    listener = call.switch.channels[e.listener]
    assert listener.name == "loopback/9003-a" and listener.answered
    assert (listener.app, listener.app_data, listener.app_running) == ("eavesdrop", call.a, True)
    seen = named(ev.json_events())
    assert ("CHANNEL_EXECUTE", e.listener, "eavesdrop") in seen
    assert seen[-1] == ("MEDIA_BUG_START", call.a, "eavesdrop")
    # The call itself is untouched: still bridged, on the switch and in the daemon's table.
    assert call.switch.channels[call.a].bridge_peer == call.b
    assert call.h.table.get(call.a).other_leg == call.b
    wait_until(lambda: call.h.table.get(e.listener) is not None, what="the listener in the table")


def test_the_metaflow_module_sends_the_same_line(call: Call) -> None:
    body = {
        "action": "metaflow",
        "data": {
            "module": "eavesdrop",
            "data": {"target_type": "number", "target_id": "9003", "mode": "barge"},
        },
    }
    ok(call.put(call.a, body), 201, "metaflow sent")
    assert call.sent() == [line(call, call.a, "true", "true", "true", "loopback/9003/default")]
    assert listener_of(call, call.a).mode == "barge"


def test_a_device_is_dialled_through_the_intercept_templates(call: Call) -> None:
    resp = post(
        call,
        call.a,
        target_type="device",
        target_id="dev9",
        auto_answer=True,
        dtmf_controls=False,
    )
    # the stand-in cannot dial user/… (as a switch without the user endpoint): the job's
    # -ERR is the answer, not "initiated"
    assert resp.status_code == 502 and resp.json()["message"] == "-ERR CHAN_NOT_IMPLEMENTED"
    endpoint = "user/dev9@acc1.example"  # [actions].intercept_endpoints.device, the row's realm
    expected = line(call, call.a, "false", "false", "false", endpoint)
    assert call.sent() == [expected.replace("_bleg=false,", "_bleg=false,sip_auto_answer=true,")]


def test_listening_to_a_parked_channel_alone_is_allowed(call: Call, events: Any) -> None:
    # A caller in an IVR or parked can be listened to (and whispered to, as self).
    ok(post(call, call.p, target_type="number", target_id="9003"), 200, "eavesdrop initiated")
    assert listener_of(call, call.p).mode == "listen"
    ok(
        post(call, call.p, target_type="number", target_id="9003", mode="whisper"),
        200,
        "eavesdrop initiated",
    )
    wait_until(lambda: len(call.switch.model.eavesdrops) == 2, what="a second listener")


def test_a_channel_with_early_media_can_be_listened_to(call: Call) -> None:
    # FreeSWITCH's eavesdrop needs the target's media up: answered or early media.
    call.h.table.apply(
        "fs1",
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": "early-1",
            "Channel-Call-State": "EARLY",
            "Answer-State": "early",
            "variable_account_id": "acc1",
            "variable_domain_name": "acc1.example",
        },
    )
    ok(post(call, "early-1", target_type="number", target_id="9003"), 200, "eavesdrop initiated")
    assert call.sent() == [line(call, "early-1", "true", "false", "false", "loopback/9003/default")]


# -- who ends what ------------------------------------------------------------------------------


def test_the_listener_hanging_up_leaves_the_call_untouched(call: Call, events: Any) -> None:
    ok(
        post(call, call.a, target_type="number", target_id="9003", mode="barge"),
        200,
        "eavesdrop initiated",
    )
    e = listener_of(call, call.a)
    phone = call.switch.channels[e.listener].loopback_peer  # the operator's end of the leg
    ev = events()
    call.switch.hangup(phone)
    seen = named(ev.json_events())
    stop = seen.index(("MEDIA_BUG_STOP", call.a, "eavesdrop"))
    assert seen.index(("CHANNEL_EXECUTE_COMPLETE", e.listener, "eavesdrop")) > stop
    assert destroyed(seen, e.listener) > stop
    assert [s for s in seen if s[1] in (call.a, call.b)] == [
        ("MEDIA_BUG_STOP", call.a, "eavesdrop")
    ]
    assert call.switch.model.eavesdrops == {}
    assert call.switch.channels[call.a].bridge_peer == call.b
    assert call.switch.channels[call.b].bridge_peer == call.a
    wait_until(lambda: call.h.table.get(e.listener) is None, what="the listener gone")
    assert call.h.table.get(call.a).other_leg == call.b
    assert call.h.table.get(call.b) is not None


def test_the_eavesdropped_channel_hanging_up_ends_the_listener(call: Call, events: Any) -> None:
    ok(post(call, call.a, target_type="number", target_id="9003"), 200, "eavesdrop initiated")
    e = listener_of(call, call.a)
    phone = call.switch.channels[e.listener].loopback_peer
    ev = events()
    call.switch.hangup(call.a)
    seen = named(ev.json_events())
    # The bug leaves in the target's hangup state, before its call state turns HANGUP ...
    stop = seen.index(("MEDIA_BUG_STOP", call.a, "eavesdrop"))
    assert seen[stop + 1] == ("CHANNEL_CALLSTATE", call.a, "HANGUP")
    # ... then the listener's loop ends, its app returns, and with nothing left it hangs up.
    done = seen.index(("CHANNEL_EXECUTE_COMPLETE", e.listener, "eavesdrop"))
    assert seen[done + 1] == ("CHANNEL_HANGUP", e.listener, "NORMAL_CLEARING")
    assert done > destroyed(seen, call.a)
    assert destroyed(seen, phone) > done
    assert call.switch.model.eavesdrops == {}
    for gone in (call.a, call.b, e.listener, phone):
        wait_until(lambda u=gone: call.h.table.get(u) is None, what="the legs gone")


def test_dtmf_keys_switch_modes_and_star_stops(call: Call, events: Any) -> None:
    ok(post(call, call.a, target_type="number", target_id="9003"), 200, "eavesdrop initiated")
    e = listener_of(call, call.a)
    c = esl(call.switch)
    for key, mode in (("1", "whisper-peer"), ("2", "whisper-self"), ("3", "barge")):
        assert c.api(f"uuid_recv_dtmf {e.listener} {key}").startswith(b"+OK")
        assert e.mode == mode
    c.api(f"uuid_recv_dtmf {e.listener} 0#5")  # 0: back to listening; # and 5 do nothing
    assert e.mode == "listen" and call.switch.model.eavesdrops == {e.listener: e}
    ev = events()
    c.api(f"uuid_recv_dtmf {e.listener} *")
    seen = named(ev.json_events())
    assert seen[:3] == [
        ("MEDIA_BUG_STOP", call.a, "eavesdrop"),
        ("CHANNEL_EXECUTE_COMPLETE", e.listener, "eavesdrop"),
        ("CHANNEL_HANGUP", e.listener, "NORMAL_CLEARING"),
    ]
    assert call.switch.model.eavesdrops == {}
    assert call.switch.channels[call.a].bridge_peer == call.b
    c.close()


def test_without_dtmf_controls_the_keys_do_nothing(call: Call) -> None:
    ok(
        post(call, call.a, target_type="number", target_id="9003", dtmf_controls=False),
        200,
        "eavesdrop initiated",
    )
    e = listener_of(call, call.a)
    c = esl(call.switch)
    c.api(f"uuid_recv_dtmf {e.listener} 3*")
    assert e.mode == "listen" and call.switch.model.eavesdrops == {e.listener: e}
    c.close()


# -- refusals: nothing is sent -----------------------------------------------------------------


def test_a_ringing_channel_is_refused(call: Call) -> None:
    # eavesdrop would wait ~6 s for media, then hang the listener up: a ring for nothing.
    ringing, _ = call.switch.originate(dest="9003", answer=False, variables=ALICE)
    wait_until(lambda: call.h.table.get(ringing) is not None, what="the ringing leg")
    assert call.h.table.get(ringing).answered is False
    detail = refused(
        post(call, ringing, target_type="number", target_id="9003"), "answered", "state"
    )
    assert "no media" in detail["message"]
    assert call.sent() == []


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"mode": "whisper", "whisper_leg": "peer"}, "peer"),
        ({"mode": "barge"}, "barge"),
        ({"bridged_only": True}, "bridged_only"),
        ({"bridged_only": True, "mode": "whisper"}, "(bridged_only)"),
        ({"bridged_only": True, "mode": "barge"}, "barge is heard by both"),
    ],
)
def test_what_needs_a_partner_is_refused_on_a_channel_alone(
    call: Call, fields: dict[str, Any], why: str
) -> None:
    resp = post(call, call.p, target_type="number", target_id="9003", **fields)
    detail = refused(resp, "other_leg_call_id", "required")
    assert detail["message"].startswith("Channel is not bridged") and why in detail["message"]
    assert call.sent() == []
    assert call.switch.model.eavesdrops == {}


def test_a_partner_the_table_no_longer_has_counts_as_none(call: Call) -> None:
    row = call.h.table.get(call.a)
    original, row.other_leg = row.other_leg, "0f0f0f0f-gone"
    try:
        resp = post(call, call.a, target_type="number", target_id="9003", mode="barge")
        refused(resp, "other_leg_call_id", "required")
    finally:
        row.other_leg = original
    assert call.sent() == []


@pytest.mark.parametrize(
    ("fields", "key", "rule"),
    [
        ({"whisper_leg": "peer"}, "mode", "required"),  # whisper_leg only with whisper
        ({"mode": "listen", "whisper_leg": "self"}, "mode", "enum"),
        ({"mode": "barge", "whisper_leg": "peer"}, "mode", "enum"),
        ({"mode": "spy"}, "mode", "enum"),
        ({"mode": "whisper", "whisper_leg": "both"}, "whisper_leg", "enum"),
        ({"bridged_only": "maybe"}, "bridged_only", "type"),
        ({"target_type": "gateway"}, "target_type", "enum"),
        ({"target_id": "1000 &system(id)"}, "target_id", "format"),
    ],
)
def test_invalid_fields_are_refused(
    call: Call, fields: dict[str, Any], key: str, rule: str
) -> None:
    data = {"target_type": "number", "target_id": "9003", **fields}
    refused(post(call, call.a, **data), key, rule)
    assert call.sent() == []


@pytest.mark.parametrize("name", ["all", "ALL", "All"])
def test_a_channel_named_all_is_never_eavesdropped(call: Call, name: str) -> None:
    # `eavesdrop all` would listen to every channel of the switch, every account's.
    call.h.table.apply(
        "fs1",
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": name,
            "Answer-State": "answered",
            "Channel-Call-State": "ACTIVE",
            "variable_account_id": "acc1",
        },
    )
    wait_until(lambda: call.h.table.get(name) is not None, what="the row")
    detail = refused(
        post(call, name, target_type="number", target_id="9003"), "channel.uuid", "format"
    )
    assert "every channel" in detail["message"] and "value" not in detail
    assert call.sent() == []
    with pytest.raises(gate.Refusal):
        gate.compose("eavesdrop-app", uuid=gate.check("uuid", name, "channel.uuid"))
    ok_uuid = gate.check("uuid", f"{name}x", "channel.uuid")  # a uuid that starts so is fine
    assert gate.compose("eavesdrop-app", uuid=ok_uuid).text == f"&eavesdrop({name}x)"


def test_target_id_is_required(call: Call) -> None:
    detail = refused(post(call, call.a, target_type="user"), "target_id", "required")
    assert detail["message"] == "No target id specified"
    assert call.sent() == []


# -- the stand-in's eavesdrop application on its own --------------------------------------------


def originate_listener(switch: Any, target: str, variables: str = "") -> tuple[Client, str]:
    c = esl(switch)
    block = f"{{{variables}}}" if variables else ""
    reply = c.api(f"originate {block}loopback/9003/default &eavesdrop({target})").decode()
    assert reply.startswith("+OK "), reply
    return c, reply.split()[1]


@pytest.mark.parametrize("target", ["", "no-such-uuid", "itself"])
def test_the_app_returns_at_once_without_a_target(switch: Any, events: Any, target: str) -> None:
    ev = events()
    c = esl(switch)
    own = str(uuid.uuid4())
    arg = own if target == "itself" else target
    reply = c.api(
        f"originate {{origination_uuid={own}}}loopback/9003/default &eavesdrop({arg})"
    ).decode()
    assert reply == f"+OK {own}\n"  # answered, then the app ran
    seen = named(ev.json_events())
    assert ("CHANNEL_EXECUTE", own, "eavesdrop") in seen
    done = seen.index(("CHANNEL_EXECUTE_COMPLETE", own, "eavesdrop"))
    assert seen[done + 1] == ("CHANNEL_HANGUP", own, "NORMAL_CLEARING")
    assert not any(s[0] == "MEDIA_BUG_START" for s in seen)
    assert switch.model.eavesdrops == {} and own not in switch.channels
    c.close()


def test_a_target_without_media_ends_the_app(switch: Any) -> None:
    ringing, _ = switch.originate(dest="9003", answer=False)
    c, listener = originate_listener(switch, ringing)
    assert switch.model.eavesdrops == {}
    assert listener not in switch.channels
    c.close()


def test_eavesdrop_require_group_needs_the_targets_group(switch: Any) -> None:
    a, b = switch.bridged_call(variables_a={"eavesdrop_group": "sales,support"})
    c, _ = originate_listener(switch, a, "eavesdrop_require_group=billing")
    assert switch.model.eavesdrops == {}
    c2, listener = originate_listener(switch, a, "eavesdrop_require_group=support")
    assert switch.model.eavesdrops[listener].target == a
    c.close()
    c2.close()


def test_a_media_bug_event_is_laid_out_as_the_capture_shows(switch: Any, events: Any) -> None:
    ev = events()
    a, _ = switch.bridged_call()
    c, listener = originate_listener(switch, a)
    switch.hangup(listener)
    mine = {
        dict(pairs)["Event-Name"]: pairs
        for pairs in ev.json_events()
        if dict(pairs)["Event-Name"].startswith("MEDIA_BUG")
    }
    frames = load_frames(CAPTURES / "json" / "s8_sip_call.events.raw.gz")
    real = {}
    for f in frames:
        if f.event_name and f.event_name.startswith("MEDIA_BUG"):
            real[f.event_name] = list(orjson.loads(f.raw.split(b"\n\n", 1)[1]).items())
    assert set(mine) == set(real) == {"MEDIA_BUG_START", "MEDIA_BUG_STOP"}
    for name in real:
        head = [k for k, _ in real[name]][: [k for k, _ in real[name]].index("Channel-State")]
        assert [k for k, _ in mine[name]][: len(head)] == head, name
        calling = ("Event-Calling-File", "Event-Calling-Function", "Event-Calling-Line-Number")
        assert [dict(mine[name])[k] for k in calling] == [dict(real[name])[k] for k in calling]
        assert any(k.startswith("variable_") for k, _ in mine[name])
        assert dict(mine[name])["Media-Bug-Target"] == a
    c.close()
