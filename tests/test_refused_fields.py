"""A field is never accepted and ignored: Kazoo's documented fields channelsd does not act on are
refused with the reason, any other key a module does not take is refused, and those it can act
on safely are implemented (record_call's options: test_record_call; eavesdrop's can_call_self
here). Nothing is sent for a refused request.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_actions import ALICE, Call, ok, refused

# (module, the field, a value a Kazoo client sends, words the refusal must say)
KAZOO_FIELDS = [
    ("record_call", "url", "https://rec.example/upload", "does not upload"),
    ("record_call", "method", "put", "does not upload"),
    ("record_call", "label", "x", "no recording documents"),
    ("record_call", "media_name", "call.mp3", "no recording documents"),
    ("record_call", "origin", "x", "no recording documents"),
    ("tts", "terminators", ["#"], "playback_terminators"),
    ("callflow", "flow", {"module": "hangup"}, "callflow engine"),
    ("callflow", "captures", ["9003"], "send the number as id"),
    ("callflow", "collected", "9003", "send the number as id"),
    ("transfer", "captures", ["no_match"], "none"),
    ("transfer", "ringback", "tone_stream://%(2000,4000,440,480)", "transfer_ringback"),
    ("eavesdrop", "unbridged_only", True, "bridged_only"),
]
BASE = {
    "record_call": {"action": "start"},
    "tts": {"text": "hello there"},
    "callflow": {"id": "9003"},
    "transfer": {"target": "2000", "transfer_type": "attended", "moh": "/srv/moh.wav"},
    "eavesdrop": {"target_type": "number", "target_id": "9003"},
}
POST_ACTIONS = {"callflow", "transfer", "eavesdrop"}


@pytest.fixture
def call(switch: Any, make_daemon: Any) -> Call:
    return Call(
        make_daemon([switch], actions={"allowed_media": ["/srv/", "tone_stream://"]}), switch
    )


def put(call: Call, module: str, data: dict[str, Any]) -> Any:
    return call.put(call.a, {"action": "metaflow", "data": {"module": module, "data": data}})


@pytest.mark.parametrize(("module", "field", "value", "why"), KAZOO_FIELDS)
def test_kazoos_fields_channelsd_does_not_act_on_are_refused_with_the_reason(
    call: Call, module: str, field: str, value: Any, why: str
) -> None:
    detail = refused(
        put(call, module, {**BASE[module], field: value}), f"data.{field}", "additionalProperties"
    )
    assert detail["message"].startswith("Field is not supported: ") and why in detail["message"]
    assert call.sent() == []
    if module not in POST_ACTIONS:
        return
    # POST: in data, at the top level and in the query string alike
    body = {"action": module, **BASE[module], field: value}
    refused(call.post(call.a, {"data": body}), field, "additionalProperties")
    refused(call.post(call.a, body), field, "additionalProperties")
    if isinstance(value, str | bool):
        query = {field: str(value).lower()}
        refused(
            call.post(call.a, {"data": {"action": module, **BASE[module]}}, params=query),
            field,
            "additionalProperties",
        )
    assert call.sent() == []


@pytest.mark.parametrize("module", ["hangup", "break", "tts", "record_call", "transfer", "resume"])
def test_a_key_a_module_does_not_take_is_refused(call: Call, module: str) -> None:
    data = {**BASE.get(module, {}), "bogus_option": 1}
    detail = refused(put(call, module, data), "data.bogus_option", "additionalProperties")
    assert detail["message"] == f"Field is not one the {module} module takes: refused, not ignored"
    assert call.sent() == []


def test_a_key_in_a_child_is_named_by_its_path(call: Call) -> None:
    flow = {
        "module": "break",
        "children": {"_": {"module": "hangup", "data": {"cuase": "USER_BUSY"}}},
    }
    refused(
        call.put(call.a, {"action": "metaflow", "data": flow}),
        "children._.data.cuase",
        "additionalProperties",
    )
    flow = {"module": "break", "children": {"_": {"module": "hangup", "dat": {}}}}
    refused(
        call.put(call.a, {"action": "metaflow", "data": flow}),
        "children._.dat",
        "additionalProperties",
    )
    assert call.sent() == []


def test_post_data_may_hold_only_the_actions_fields(call: Call) -> None:
    body = {"data": {"action": "hangup", "cause": "USER_BUSY", "force": True}}
    refused(call.post(call.p, body), "force", "additionalProperties")
    # the envelope's own keys at the top level and in the query are not the action's fields
    body = {"data": {"action": "break"}, "auth_token": "ignored-here", "verb": "POST"}
    ok(call.post(call.p, body, params={"pretty_print": "true"}), 200, "break initiated")
    # Kazoo's alias spellings are the same field
    body = {"data": {"action": "transfer", "target": "9003", "Transfer-Type": "blind"}}
    ok(call.post(call.p, body), 200, "transfer initiated")


def test_eavesdrop_can_call_self_false_refuses_the_channels_own_device(call: Call) -> None:
    data = {"action": "eavesdrop", "target_type": "device", "target_id": ALICE["authorizing_id"]}
    detail = refused(
        call.post(call.a, {"data": {**data, "can_call_self": False}}), "target_id", "not"
    )
    assert "own device" in detail["message"]
    assert call.sent() == []
    # allowed (the default): sent; user/… cannot be dialled on the stand-in (502)
    resp = call.post(call.a, {"data": data})
    assert resp.status_code == 502 and call.sent()[0].startswith("bgapi originate")
