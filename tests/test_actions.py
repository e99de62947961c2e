"""POST actions and PUT metaflows over HTTP: the exact ESL text sent, the reply, the table after."""

from typing import Any

import gevent
import pytest

from channelsd.config import DEFAULT_MOH

from conftest import wait_until

ALICE = {
    "account_id": "acc1",
    "owner_id": "user1",
    "authorizing_id": "dev1",
    "domain_name": "acc1.example",
}
BOB = {"account_id": "acc1", "owner_id": "user2", "authorizing_id": "dev2"}
# What a leg the switch creates for an action on ALICE's channel inherits: her account and
# realm, in the variables the default identity mapping reads (actions._tenant_variables).
ALICE_IDENTITY = "ecallmgr_Account-ID=acc1,ecallmgr_Realm=acc1.example"


class Call:
    def __init__(self, h: Any, switch: Any, alice: dict[str, str] = ALICE) -> None:
        self.h, self.switch = h, switch
        self.a, self.b = switch.bridged_call(variables_a=alice, variables_b=BOB)
        self.p, self.p_twin = switch.originate(dest="9003", variables=alice)  # parked, unbridged
        wait_until(lambda: all(h.table.get(u) for u in (self.a, self.b, self.p, self.p_twin)))
        wait_until(lambda: h.table.get(self.a).other_leg == self.b)
        self.mark = len(switch.received)

    def sent(self) -> list[str]:
        """api/bgapi commands the switch received since the request began."""
        return [
            c for _, c in self.switch.received[self.mark :] if c.startswith(("api uuid_", "bgapi"))
        ]

    def post(self, uuid: str, body: Any = None, tok: str = "admin1", **kw: Any) -> Any:
        self.mark = len(self.switch.received)
        return self.h.api.request(
            "POST", f"/v2/accounts/acc1/channels/{uuid}", tok, json=body, **kw
        )

    def put(self, uuid: str, body: Any, tok: str = "admin1") -> Any:
        self.mark = len(self.switch.received)
        return self.h.api.request("PUT", f"/v2/accounts/acc1/channels/{uuid}", tok, json=body)


# The tenant policy these tests run under: two extra contexts, and media under /srv/.
POLICY = {
    "allowed_contexts": ["ctx2", "cf"],
    "allowed_media": ["tone_stream://", "local_stream://", "/srv/"],
}


@pytest.fixture
def call(switch: Any, make_daemon: Any) -> Call:
    h = make_daemon([switch], sync={"command_timeout": 1}, actions=POLICY)
    return Call(h, switch)


def ok(resp: Any, status: int, data: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "success" and body["data"] == data


def refused(resp: Any, key: str, rule: str) -> dict[str, Any]:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["message"] == "validation error", body
    assert rule in body["data"][key], body["data"]
    return body["data"][key][rule]


# -- hangup ------------------------------------------------------------------------------------


def test_hangup_kills_the_channel_and_it_leaves_the_list(call: Call) -> None:
    ok(call.post(call.p, {"data": {"action": "hangup"}}), 200, "hangup initiated")
    assert call.sent() == [f"api uuid_kill {call.p} NORMAL_CLEARING"]
    wait_until(lambda: call.h.table.get(call.p) is None, what="channel gone")
    resp = call.h.api.get(f"/v2/accounts/acc1/channels/{call.p}", "admin1")
    assert resp.status_code == 404


@pytest.mark.parametrize(
    ("cause", "sent"),
    [("user_busy", "USER_BUSY"), ("17", "17"), ("CALL_REJECTED", "CALL_REJECTED")],
)
def test_hangup_causes_are_checked_and_normalised(call: Call, cause: str, sent: str) -> None:
    ok(call.post(call.p, {"data": {"action": "hangup", "cause": cause}}), 200, "hangup initiated")
    assert call.sent() == [f"api uuid_kill {call.p} {sent}"]


@pytest.mark.parametrize(
    "cause", ["NOT_A_REAL_CAUSE", "999", "CALL_REJECTED extra", "", "${expr(17)}"]
)
def test_unknown_hangup_causes_are_refused_not_silently_normal_clearing(
    call: Call, cause: str
) -> None:
    refused(call.post(call.p, {"data": {"action": "hangup", "cause": cause}}), "cause", "format")
    assert call.sent() == []
    assert call.h.table.get(call.p) is not None


def test_action_from_top_level_and_query(call: Call) -> None:
    ok(call.post(call.p, {"action": "break"}), 200, "break initiated")
    assert call.sent() == [f"api uuid_break {call.p}"]
    ok(call.post(call.p, None, params={"action": "break", "all": "true"}), 200, "break initiated")
    assert call.sent() == [f"api uuid_break {call.p} all"]
    # data wins over the top level and the query string
    ok(
        call.post(
            call.p, {"action": "hangup", "data": {"action": "break"}}, params={"action": "x"}
        ),
        200,
        "break initiated",
    )


@pytest.mark.parametrize(
    "body", [{"data": {}}, {"data": {"action": "explode"}}, {"data": {"action": 7}}]
)
def test_unknown_or_missing_action_is_invalid_data(call: Call, body: Any) -> None:
    resp = call.post(call.p, body)
    assert resp.status_code == 400
    assert resp.json()["message"] == "invalid data"
    assert "transfer" in resp.json()["data"]["message"]
    assert call.sent() == []


# -- transfer ----------------------------------------------------------------------------------


def test_blind_transfer_of_the_channel_itself(call: Call) -> None:
    ok(
        call.post(call.a, {"data": {"action": "transfer", "target": "9001"}}),
        200,
        "transfer initiated",
    )
    assert call.sent() == [f"api uuid_transfer {call.a} 9001 XML default"]


def test_blind_transfer_of_the_other_leg_with_context(call: Call) -> None:
    body = {
        "data": {
            "action": "transfer",
            "target": "9001",
            "leg": "bleg",
            "Transfer-Type": "blind",
            "context": "ctx2",
        }
    }
    ok(call.post(call.a, body), 200, "transfer initiated")
    assert call.sent() == [f"api uuid_transfer {call.a} -bleg 9001 XML ctx2"]


def test_bleg_transfer_of_an_unbridged_channel_is_refused(call: Call) -> None:
    # FreeSWITCH would answer +OK and transfer the parked channel itself.
    resp = call.post(call.p, {"data": {"action": "transfer", "target": "9001", "leg": "bleg"}})
    assert resp.status_code == 400
    assert resp.json()["data"] == {
        "other_leg_call_id": {"required": {"message": "Channel is not bridged"}}
    }
    assert call.sent() == []


def test_transfer_needs_a_target(call: Call) -> None:
    detail = refused(call.post(call.a, {"data": {"action": "transfer"}}), "target", "required")
    assert detail["message"] == "No target destination specified"


def test_transfer_type_enum_error_names_the_allowed_values(call: Call) -> None:
    resp = call.post(
        call.a, {"data": {"action": "transfer", "target": "9001", "transfer-type": "x"}}
    )
    detail = refused(resp, "transfer_type", "enum")
    assert detail["target"] == ["attended", "blind"] and detail["value"] == "x"


def test_attended_transfer_runs_att_xfer_on_the_transferor(call: Call) -> None:
    body = {
        "data": {
            "action": "transfer",
            "target": "2000",
            "transfer_type": "attended",
            "moh": "/srv/moh.wav",
            "takeback_dtmf": "9",
        }
    }
    ok(call.post(call.a, body), 200, "transfer initiated")
    assert call.sent() == [
        f"api uuid_setvar {call.b} hold_music /srv/moh.wav",
        *attxfer_keys(call.a, cancel="9"),
        f"api uuid_broadcast {call.a} att_xfer::{{{ALICE_IDENTITY}}}loopback/2000/default",
    ]


def attxfer_keys(tor: str, cancel: str = "#") -> list[str]:
    """What every attended transfer sends first: all of att_xfer's keys set on the
    transferor, and any take-back binding a previous transfer left cleared."""
    return [
        f"api uuid_setvar {tor} attxfer_cancel_key {cancel}",
        f"api uuid_setvar {tor} attxfer_hangup_key *",
        f"api uuid_setvar {tor} attxfer_conf_key 0",
        f"api uuid_broadcast {tor} clear_digit_action::channelsd_takeback aleg",
    ]


def test_attended_transfer_needs_a_bridge(call: Call) -> None:
    resp = call.post(
        call.p, {"data": {"action": "transfer", "target": "2000", "transfer_type": "attended"}}
    )
    assert resp.status_code == 400 and call.sent() == []


# -- callflow and intercept ----------------------------------------------------------------------


def test_callflow_sends_the_channel_to_the_callflow_context(call: Call) -> None:
    ok(call.post(call.p, {"data": {"action": "callflow", "id": "3000"}}), 200, "callflow initiated")
    assert call.sent() == [f"api uuid_transfer {call.p} 3000 XML default"]
    refused(call.post(call.p, {"data": {"action": "callflow"}}), "id", "required")


def test_intercept_originates_the_interceptor(call: Call) -> None:
    body = {"data": {"action": "intercept", "target_type": "number", "target_id": "1234"}}
    ok(call.post(call.p, body), 200, "intercept initiated")
    assert call.sent() == [
        f"bgapi originate {{intercept_unbridged_only=true,{ALICE_IDENTITY}}}"
        f"loopback/1234/default &intercept({call.p})"
    ]


def test_intercept_of_a_device_uses_the_channel_realm(call: Call) -> None:
    # (the stand-in, like a switch without mod_dptools' user endpoint, cannot dial user/…:
    # the originate's job says -ERR CHAN_NOT_IMPLEMENTED, which is the answer)
    body = {
        "data": {
            "action": "intercept",
            "target_type": "device",
            "target_id": "dev9",
            "unbridged_only": False,
            "auto_answer": True,
        }
    }
    resp = call.post(call.a, body)
    assert resp.status_code == 502 and resp.json()["message"] == "-ERR CHAN_NOT_IMPLEMENTED"
    assert call.sent() == [
        "bgapi originate {intercept_unbridged_only=false,sip_auto_answer=true,"
        f"{ALICE_IDENTITY}}}user/dev9@acc1.example &intercept({call.a})"
    ]


def test_intercept_of_a_bridged_channel_with_unbridged_only_is_refused(call: Call) -> None:
    body = {"data": {"action": "intercept", "target_type": "user", "target_id": "user2"}}
    resp = call.post(call.a, body)
    assert resp.status_code == 400 and call.sent() == []
    detail = refused(
        call.post(call.a, {"data": {"action": "intercept", "target_id": "x"}}),
        "target_type",
        "required",
    )
    assert detail["message"] == "No target type specified"


# -- what FreeSWITCH answers ------------------------------------------------------------------


def test_a_channel_freeswitch_no_longer_has_is_404_with_its_reply(call: Call) -> None:
    call.switch.drop_event_names = {
        "CHANNEL_DESTROY",
        "CHANNEL_STATE",
        "CHANNEL_HANGUP",
        "CHANNEL_HANGUP_COMPLETE",
    }
    call.switch.drop_event_fraction = 1.0
    call.switch.hangup(call.p)  # the daemon never hears of it
    resp = call.post(call.p, {"data": {"action": "hangup"}})
    assert resp.status_code == 404
    body = resp.json()
    assert body["message"] == "-ERR No such channel!" and body["data"] == "uuid_kill"


def test_a_refused_command_is_502_with_freeswitch_reply(call: Call) -> None:
    # uuid_hold off on a SIP leg that is not held: FreeSWITCH answers -ERR Operation failed.
    s, _ = call.switch.bridged_call(
        variables_a=ALICE,
        variables_b=BOB,
        name_a="sofia/internal/1001@acc1.example",
        name_b="sofia/internal/1002@acc1.example",
    )
    wait_until(lambda: call.h.table.get(s) is not None)
    resp = call.put(
        s, {"action": "metaflow", "data": {"module": "hold_control", "data": {"action": "unhold"}}}
    )
    assert resp.status_code == 502, resp.text
    body = resp.json()
    assert body["message"] == "-ERR Operation failed" and body["data"] == "uuid_hold"
    assert call.sent() == [f"api uuid_hold off {s}"]


def test_a_disconnected_node_is_503_at_once(call: Call) -> None:
    call.switch.pause_accept(True)
    call.switch.drop_connections()
    wait_until(lambda: call.h.node().state == "down")
    resp = call.post(call.a, {"data": {"action": "hangup"}})
    assert resp.status_code == 503
    assert resp.json()["message"] == "freeswitch unavailable" and resp.json()["data"] == "fs1"


def test_a_switch_that_does_not_answer_is_504_within_the_timeout(call: Call) -> None:
    call.switch.hang_commands = True
    resp = call.post(call.a, {"data": {"action": "hangup"}})
    assert resp.status_code == 504
    assert resp.json()["data"] == "fs1"
    assert [c for c in call.sent() if "uuid_kill" in c] == [
        f"api uuid_kill {call.a} NORMAL_CLEARING"
    ]


def test_a_user_token_acts_only_on_its_own_channels(call: Call) -> None:
    resp = call.post(call.b, {"data": {"action": "hangup"}}, tok="user1")
    assert resp.status_code == 404 and call.sent() == []
    ok(call.post(call.a, {"data": {"action": "break"}}, tok="user1"), 200, "break initiated")


# -- metaflows ---------------------------------------------------------------------------------

MODULE_CASES = [
    ("hangup", {}, ["api uuid_kill {p} NORMAL_CLEARING"]),
    ("break", {"all": True}, ["api uuid_break {p} all"]),
    (
        "transfer",
        {"target": "9001", "Transfer-Type": "blind"},
        ["api uuid_transfer {p} 9001 XML default"],
    ),
    ("callflow", {"id": "3000", "context": "cf"}, ["api uuid_transfer {p} 3000 XML cf"]),
    (
        "intercept",
        {"target_type": "number", "target_id": "55"},
        [
            "bgapi originate {{intercept_unbridged_only=true,"
            + ALICE_IDENTITY
            + "}}loopback/55/default &intercept({p})"
        ],
    ),
    ("hold_control", {}, ["api uuid_hold toggle {p}"]),
    ("hold_control", {"action": "hold"}, ["api uuid_hold {p}"]),
    (
        "play",
        {"id": "/srv/sounds/hello.wav", "leg": "self"},
        ["api uuid_broadcast {p} /srv/sounds/hello.wav aleg"],
    ),
    (
        "tts",
        {"text": "Hello there, caller"},
        ["api uuid_broadcast {p} 'speak::flite|kal|Hello there, caller' aleg"],
    ),
    ("say", {"text": "1234"}, ["api uuid_broadcast {p} 'say::en number pronounced 1234' aleg"]),
    ("audio_level", {"level": 2}, ["api uuid_audio {p} start read level 2"]),
    ("audio_level", {"mute": True, "mode": "write"}, ["api uuid_audio {p} start write mute 1"]),
    ("audio_level", {"action": "stop"}, ["api uuid_audio {p} stop"]),
]


@pytest.mark.parametrize(("module", "data", "expected"), MODULE_CASES)
def test_each_module_sends_its_command(
    call: Call, module: str, data: dict[str, Any], expected: list[str]
) -> None:
    resp = call.put(call.p, {"action": "metaflow", "data": {"module": module, "data": data}})
    ok(resp, 201, "metaflow sent")
    assert call.sent() == [e.format(p=call.p) for e in expected]


def test_record_call_uses_a_server_path_and_toggles(call: Call) -> None:
    ok(
        call.put(call.a, {"action": "metaflow", "data": {"module": "record_call", "data": {}}}),
        201,
        "metaflow sent",
    )
    (start,) = call.sent()
    assert start.startswith(
        f"api uuid_record {call.a} start /var/lib/freeswitch/recordings/channelsd/{call.a}-"
    )
    path = start.split(" ")[4]
    assert path.endswith(".wav")
    ok(
        call.put(
            call.a,
            {"action": "metaflow", "data": {"module": "record_call", "data": {"action": "mask"}}},
        ),
        201,
        "metaflow sent",
    )
    assert call.sent() == [f"api uuid_record {call.a} mask {path}"]
    ok(
        call.put(call.a, {"action": "metaflow", "data": {"module": "record_call", "data": {}}}),
        201,
        "metaflow sent",
    )
    assert call.sent() == [f"api uuid_record {call.a} stop {path}"]


def test_resume_bridges_the_pair_and_refuses_a_loopback_twin(call: Call) -> None:
    ok(call.put(call.a, {"action": "metaflow", "data": {"module": "resume"}}), 201, "metaflow sent")
    assert call.sent() == [f"api uuid_bridge {call.a} {call.b}"]
    resp = call.put(call.p, {"action": "metaflow", "data": {"module": "resume"}})
    assert resp.status_code == 400 and call.sent() == []


def test_kazoo_documented_nested_shape_is_accepted(call: Call) -> None:
    body = {"action": "metaflow", "data": {"data": {"module": "break"}}}
    ok(call.put(call.p, body), 201, "metaflow sent")
    assert call.sent() == [f"api uuid_break {call.p}"]


def test_children_run_in_order(call: Call) -> None:
    flow = {
        "module": "hold_control",
        "data": {"action": "hold"},
        "children": {
            "_": {
                "module": "play",
                "data": {"id": "/srv/a.wav", "leg": "self"},
                "children": {"_": {"module": "break"}},
            }
        },
    }
    ok(call.put(call.p, {"action": "metaflow", "data": flow}), 201, "metaflow sent")
    assert call.sent() == [
        f"api uuid_hold {call.p}",
        f"api uuid_broadcast {call.p} /srv/a.wav aleg",
        f"api uuid_break {call.p}",
    ]


def test_a_failing_child_stops_the_walk_and_names_its_path(call: Call) -> None:
    last = {"module": "break", "children": {"_": {"module": "hold_control"}}}
    flow = {"module": "break", "children": {"_": {"module": "hangup", "children": {"_": last}}}}
    resp = call.put(call.p, {"action": "metaflow", "data": flow})
    # the hangup worked, so the channel is gone when the next break is sent
    assert resp.status_code == 404, resp.text
    assert resp.json()["path"] == "children._.children._"
    assert resp.json()["data"] == "uuid_break"
    assert call.sent() == [
        f"api uuid_break {call.p}",
        f"api uuid_kill {call.p} NORMAL_CLEARING",
        f"api uuid_break {call.p}",
    ]


def test_metaflow_validation_errors_in_kazoo_shape(call: Call) -> None:
    resp = call.put(
        call.a,
        {
            "action": "metaflow",
            "data": {"module": "transfer", "data": {"target": "1", "transfer_type": "x"}},
        },
    )
    detail = refused(resp, "data.transfer_type", "enum")
    assert detail == {
        "message": "Value not found in enumerated list of values",
        "target": ["attended", "blind"],
        "value": "x",
    }
    refused(call.put(call.a, {"action": "metaflow", "data": {}}), "module", "required")
    refused(
        call.put(call.a, {"action": "metaflow", "data": {"module": "explode"}}), "module", "enum"
    )
    bad_child = {"module": "break", "children": {"_": {"module": "play", "data": {"id": "a b"}}}}
    refused(
        call.put(call.a, {"action": "metaflow", "data": bad_child}), "children._.data.id", "format"
    )
    assert call.sent() == []


def test_put_needs_action_metaflow(call: Call) -> None:
    resp = call.put(call.a, {"action": "dance", "data": {"module": "break"}})
    assert resp.status_code == 400 and resp.json()["message"] == "invalid data"


# -- injection: nothing reaches the switch -----------------------------------------------------

HOSTILE = [
    "9001\n\napi system rm -rf /",
    "9001\r\napi uuid_kill x",
    "9001\nconsole_execute: true",
    "9001 XML default",
    "9001\u2028",
    "9001\u2029x",
    "9001\x85",
    "9001\x00",
    "${system(touch /tmp/pwned)}",
    "$${x}",
    "'quoted'",
    "a'b",
    '"dq"',
    "{origination_uuid=x}user/1",
    "[leg_timeout=1]x",
    "a|b",
    "^^:a:b",
    "a&b",
    "&system(id)",
    "a;;b",
    "playback::/etc/passwd",
    "x" * 600,
    "",
    "\t",
    "a\\b",
    "a`id`",
]
FIELDS = [
    ("transfer", "target", {}),
    ("transfer", "context", {"target": "9001"}),
    ("transfer", "dialplan", {"target": "9001"}),
    ("transfer", "moh", {"target": "9001", "transfer_type": "attended"}),
    ("transfer", "takeback_dtmf", {"target": "9001", "transfer_type": "attended"}),
    ("callflow", "id", {}),
    ("callflow", "context", {"id": "3000"}),
    ("intercept", "target_id", {"target_type": "number"}),
    ("hangup", "cause", {}),
]
PUT_FIELDS = [
    ("play", "id", {}),
    ("tts", "text", {}),
    ("tts", "voice", {"text": "hi"}),
    ("tts", "engine", {"text": "hi"}),
    ("say", "text", {}),
    ("say", "language", {"text": "1"}),
]


@pytest.mark.parametrize(("action", "field", "base"), FIELDS)
def test_hostile_values_in_post_fields_never_reach_the_switch(
    call: Call, action: str, field: str, base: dict[str, Any], figure: Any
) -> None:
    before = len(call.switch.received)
    for value in HOSTILE:
        resp = call.post(call.a, {"data": {"action": action, **base, field: value}})
        assert resp.status_code == 400, (field, value, resp.text)
        assert resp.json()["message"] == "validation error"
    assert call.switch.received[before:] == []
    figure(
        "injection corpus (values x fields), bytes sent: 0", cases=len(HOSTILE), held=len(HOSTILE)
    )


@pytest.mark.parametrize(("module", "field", "base"), PUT_FIELDS)
def test_hostile_values_in_metaflows_never_reach_the_switch(
    call: Call, module: str, field: str, base: dict[str, Any], figure: Any
) -> None:
    before = len(call.switch.received)
    tried = 0
    for value in HOSTILE:
        if module in ("tts",) and field == "text" and value in ("9001 XML default",):
            continue  # plain words with spaces are fine text
        resp = call.put(
            call.a,
            {"action": "metaflow", "data": {"module": module, "data": {**base, field: value}}},
        )
        assert resp.status_code == 400, (field, value, resp.text)
        tried += 1
    assert call.switch.received[before:] == []
    figure("injection corpus (values x fields), bytes sent: 0", cases=tried, held=tried)


def test_hostile_uuid_in_the_path_is_404_and_never_sent(call: Call) -> None:
    before = len(call.switch.received)
    for value in ("x%0Aapi%20status", "x%0D%0A", "..%2F..", "%E2%80%A8"):
        resp = call.h.api.request(
            "POST", f"/v2/accounts/acc1/channels/{value}", "admin1", json={"action": "hangup"}
        )
        assert resp.status_code == 404
    assert call.switch.received[before:] == []


# -- the table afterwards, seen through GET ------------------------------------------------------


def channel(call: Call, uuid: str) -> dict[str, Any]:
    return call.h.api.data(f"/v2/accounts/acc1/channels/{uuid}", "admin1")


def test_blind_transfer_moves_the_channel_to_the_new_extension(call: Call) -> None:
    ok(
        call.post(call.p, {"data": {"action": "transfer", "target": "9001"}}),
        200,
        "transfer initiated",
    )
    wait_until(lambda: channel(call, call.p)["destination"] == "9001", what="destination 9001")


def test_hold_shows_in_the_channel(call: Call) -> None:
    body = {"action": "metaflow", "data": {"module": "hold_control", "data": {"action": "hold"}}}
    ok(call.put(call.a, body), 201, "metaflow sent")
    wait_until(lambda: channel(call, call.a)["is_onhold"] is True, what="on hold")
    assert channel(call, call.a)["is_on_hold"] is True


def test_intercept_bridges_the_target_to_the_interceptor(call: Call) -> None:
    body = {"data": {"action": "intercept", "target_type": "number", "target_id": "9003"}}
    ok(call.post(call.p, body), 200, "intercept initiated")
    wait_until(
        lambda: channel(call, call.p).get("other_leg") not in (None, call.p_twin),
        what="target bridged to a new leg",
    )
    interceptor = channel(call, call.p)["other_leg"]
    assert call.h.table.get(interceptor) is not None


def test_resume_after_hangup_of_partner_is_refused(call: Call) -> None:
    call.switch.hangup(call.b)
    wait_until(lambda: call.h.table.get(call.b) is None)
    resp = call.put(call.a, {"action": "metaflow", "data": {"module": "resume"}})
    assert resp.status_code in (400, 404) and call.sent() == []


# -- FreeSWITCH's replies, each captured -ERR string -----------------------------------------


class FakeNode:
    """Answers every command with one fixed reply (the mapping alone, no socket)."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.sent: list[str] = []

    def api(self, command: str) -> str:
        self.sent.append(command)
        return self.reply

    bgapi = api


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ("-ERR No such channel!\n", 404),
        ("-ERR invalid uuid\n", 404),
        ("-ERR Invalid uuid\n", 404),
        ("-ERR Cannot locate session!\n", 404),
        ("-ERR Operation failed\n", 502),
        ("-ERROR\n", 502),
        ("-ERR nosuchcommand Command not found!\n", 502),
        ("-USAGE: <uuid> [cause]\n", 502),
        ("-ERR Cannot record session!\n", 502),
        ("", 502),
    ],
)
def test_each_captured_error_reply_maps_to_its_status(reply: str, status: int) -> None:
    from channelsd.actions import Actions
    from channelsd.envelope import ApiError
    from channelsd.table import ChannelTable
    from channelsd.tokens import Token

    table = ChannelTable()
    table.apply(
        "fs1", {"Event-Name": "CHANNEL_CREATE", "Unique-ID": "u1", "variable_account_id": "a"}
    )
    node = FakeNode(reply)
    actions = Actions(table, {"fs1": node})
    with pytest.raises(ApiError) as info:
        actions.post(
            table.get("u1"), {"data": {"action": "hangup"}}, {}, Token("0" * 64, "a", "admin")
        )
    assert info.value.status == status
    assert info.value.message == (reply.strip() or "no reply")
    assert info.value.data == "uuid_kill"
    assert node.sent == ["uuid_kill u1 NORMAL_CLEARING"]


def test_a_command_in_flight_when_the_node_drops_is_503_and_not_retried(call: Call) -> None:
    import gevent

    call.switch.hang_commands = True
    call.mark = len(call.switch.received)
    pending = gevent.spawn(
        call.h.api.request,
        "POST",
        f"/v2/accounts/acc1/channels/{call.a}",
        "admin1",
        json={"action": "hangup"},
    )
    wait_until(lambda: any("uuid_kill" in c for c in call.sent()), what="command sent")
    call.switch.pause_accept(True)
    call.switch.drop_connections()
    resp = pending.get(timeout=10)
    assert resp.status_code == 503
    call.switch.pause_accept(False)
    call.switch.hang_commands = False
    wait_until(lambda: call.h.node().state == "ready", what="reconnected")
    assert [c for c in call.sent() if "uuid_kill" in c] == [
        f"api uuid_kill {call.a} NORMAL_CLEARING"
    ]


@pytest.mark.parametrize("key", ["*", "0", "*1*1*1*1*", "E1", "*a", "1 2"])
def test_takeback_keys_att_xfer_would_misread_are_refused(call: Call, key: str) -> None:
    # one key: att_xfer reads * as complete and 0 as conference; a sequence: 2 to 8 DTMF keys
    body = {
        "data": {
            "action": "transfer",
            "target": "2000",
            "transfer_type": "attended",
            "takeback_dtmf": key,
        }
    }
    refused(call.post(call.a, body), "takeback_dtmf", "format")
    assert call.sent() == []


@pytest.mark.parametrize("keys", ["*1", "##", "0", "*"])
def test_a_takeback_sequence_is_a_digit_binding_that_sends_the_cancel_key(
    call: Call, keys: str
) -> None:
    body = {"data": {"action": "transfer", "target": "2000", "takeback_dtmf": keys}}
    if len(keys) == 1:
        refused(call.post(call.a, body), "takeback_dtmf", "format")
        return
    ok(call.post(call.a, body), 200, "transfer initiated")
    assert call.sent() == [
        f"api uuid_setvar {call.b} hold_music {DEFAULT_MOH}",
        *attxfer_keys(call.a, cancel="D"),
        f"api uuid_broadcast {call.a} 'bind_digit_action::channelsd_takeback,{keys},"
        f"api:uuid_recv_dtmf,{call.a} D' aleg",
        f"api uuid_broadcast {call.a} att_xfer::{{{ALICE_IDENTITY}}}loopback/2000/default",
    ]


KAZOO_MEDIA_ID = "4f0c8d2e9a7b4c1d8e6f5a3b2c1d0e9f"


def test_kazoos_documented_transfer_example_needs_a_media_template(call: Call) -> None:
    """{"action":"transfer","target":"2600","takeback_dtmf":"*1","moh":"media_id"}, with a
    real media id: refused clearly without [actions].media_template (end to end with one:
    test_conformance's take-back sequence test); the docs' placeholder is not a media id."""
    body = {"action": "transfer", "target": "2600", "takeback_dtmf": "*1", "moh": KAZOO_MEDIA_ID}
    detail = refused(call.post(call.a, body), "moh", "policy")
    # says exactly what to configure
    assert "set media_template in the [actions] section of channelsd.toml" in detail["message"]
    assert 'media_template = "/var/lib/media/{account_id}/{media_id}.wav"' in detail["message"]
    assert detail["value"] == KAZOO_MEDIA_ID
    refused(call.post(call.a, {**body, "moh": "media_id"}), "moh", "format")
    assert call.sent() == []


def test_kazoos_documented_transfer_example_is_an_attended_transfer(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon(
        [switch], actions={**POLICY, "media_template": "/srv/media/{account_id}/{media_id}.wav"}
    )
    call = Call(h, switch)
    body = {"action": "transfer", "target": "2600", "takeback_dtmf": "*1", "moh": KAZOO_MEDIA_ID}
    ok(call.post(call.a, body), 200, "transfer initiated")
    assert call.sent() == [
        f"api uuid_setvar {call.b} hold_music /srv/media/acc1/{KAZOO_MEDIA_ID}.wav",
        *attxfer_keys(call.a, cancel="D"),
        f"api uuid_broadcast {call.a} 'bind_digit_action::channelsd_takeback,*1,"
        f"api:uuid_recv_dtmf,{call.a} D' aleg",
        f"api uuid_broadcast {call.a} att_xfer::{{{ALICE_IDENTITY}}}loopback/2600/default",
    ]


@pytest.mark.parametrize("field", ["moh", "takeback_dtmf", "timeout"])
def test_attended_only_fields_make_a_transfer_attended_and_are_refused_for_blind(
    call: Call, field: str
) -> None:
    value = {"moh": "/srv/moh.wav", "takeback_dtmf": "9", "timeout": 20}[field]
    body = {"data": {"action": "transfer", "target": "2000", field: value}}
    ok(call.post(call.a, body), 200, "transfer initiated")
    assert call.sent()[-1].startswith(f"api uuid_broadcast {call.a} att_xfer::")
    body["data"]["transfer_type"] = "blind"
    assert refused(call.post(call.a, body), field, "not") == {
        "message": "Field applies to attended transfers only"
    }
    assert call.sent() == []


def test_an_attended_transfer_timeout_is_the_target_leg_timeout(call: Call) -> None:
    body = {"data": {"action": "transfer", "target": "2000", "timeout": 20}}
    ok(call.post(call.a, body), 200, "transfer initiated")
    assert call.sent()[-1] == (
        f"api uuid_broadcast {call.a} att_xfer::{{leg_timeout=20,{ALICE_IDENTITY}}}"
        "loopback/2000/default"
    )


def test_tts_language_is_refused_not_ignored(call: Call) -> None:
    flow = {"module": "tts", "data": {"text": "hello", "language": "en-us"}}
    resp = call.put(call.p, {"action": "metaflow", "data": flow})
    refused(resp, "data.language", "not")
    assert call.sent() == []


def test_intercept_can_call_self_false_refuses_the_channels_own_device(call: Call) -> None:
    body = {
        "data": {
            "action": "intercept",
            "target_type": "device",
            "target_id": "dev1",
            "can_call_self": False,
        }
    }
    detail = refused(call.post(call.p, body), "target_id", "not")
    assert "own device" in detail["message"] and detail["value"] == "dev1"
    body["data"]["target_id"] = "dev9"
    resp = call.post(call.p, body)  # not refused: sent (user/… is not dialable here: 502)
    assert resp.status_code == 502 and call.sent()[0].startswith("bgapi originate")
    body["data"].update(target_type="number", target_id="55")
    refused(call.post(call.p, body), "can_call_self", "not")
    body["data"]["can_call_self"] = True
    ok(call.post(call.p, body), 200, "intercept initiated")


def test_attended_transfer_end_to_end_through_the_table(call: Call) -> None:
    body = {
        "data": {
            "action": "transfer",
            "target": "2000",
            "transfer_type": "attended",
            "moh": "/srv/moh.wav",
        }
    }
    ok(call.post(call.a, body), 200, "transfer initiated")
    # Consultation: the transferor is bridged to the new target leg.
    wait_until(
        lambda: channel(call, call.a).get("other_leg") not in (None, call.b), what="consulting"
    )
    target = channel(call, call.a)["other_leg"]

    # The target leg carries no account variables: look at it system-wide.
    def system(uuid: str) -> dict[str, Any]:
        return call.h.api.data(f"/v2/channels?filter_uuid={uuid}", "super")[0]

    assert system(target)["destination"] == "2000"
    # The transferor hangs up: the transferee and the target are bridged together.
    ok(call.post(call.a, {"data": {"action": "hangup"}}), 200, "hangup initiated")
    wait_until(
        lambda: channel(call, call.b).get("other_leg") == target,
        what="transferee bridged to target",
    )
    assert system(target)["other_leg"] == call.b
    wait_until(lambda: call.h.table.get(call.a) is None, what="transferor gone")


def test_a_recording_started_as_its_call_ends_leaves_nothing_behind(call: Call) -> None:
    """The call ends while its recording starts: the destroy is read before the +OK, and no
    RECORD_START ever comes. Nothing may remember that recording (found by an attack: one
    entry per such call, forever)."""
    answer = call.switch.api.execute

    def ends_meanwhile(command: str, arg: str) -> bytes:
        if command == "uuid_record" and " start " in arg:
            call.switch.hangup(arg.split()[0])  # the call ends as the recording starts ...
            gevent.sleep(0.05)  # ... and the +OK is read after the destroy
            return b"+OK Success\n"
        return answer(command, arg)

    call.switch.api.execute = ends_meanwhile
    actions = call.h.daemon.ctx.actions
    body = {"action": "metaflow", "data": {"module": "record_call", "data": {"action": "start"}}}
    ok(call.put(call.p, body), 201, "metaflow sent")
    wait_until(lambda: call.h.table.get(call.p) is None, what="the call gone")
    assert len(actions.inflight) == 0
