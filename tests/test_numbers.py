"""Hostile numbers: never a 500, never a Unicode digit on an ESL line.

`"²".isdigit()` is true and `int("²")` raises; a 64-digit integer cannot be shown in an error
body (orjson refuses integers beyond 64 bits); a 10,000-digit string exceeds Python's integer
digit limit; `int("١٧")` is 17. Causes are ASCII digits 1-127 or FreeSWITCH's names; integer
fields are ASCII digits or JSON numbers.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_actions import Call
from test_gate import RecordingNode

from channelsd.actions import Actions
from channelsd.envelope import ApiError
from channelsd.table import ChannelTable
from channelsd.tokens import Token

HOSTILE_NUMBERS = [
    "²",
    "-²",
    "١٧",
    "𝟏𝟕",
    "1" * 64,
    "9" * 10_000,
    "0x11",
    "1_7",
    " 17",
    "17\n",
    "+17",
    "1e1",
    "17.0",
]


@pytest.fixture
def call(switch: Any, make_daemon: Any) -> Call:
    return Call(make_daemon([switch]), switch)


def check_400(call: Call, resp: Any, key: str) -> None:
    assert resp.status_code == 400, (key, resp.status_code, resp.text[:200])
    body = resp.json()
    assert body["message"] == "validation error" and key in body["data"], body["data"]
    assert call.sent() == []


@pytest.mark.parametrize("value", [*HOSTILE_NUMBERS, "0", "128", "999"])
def test_hostile_causes_are_400_from_body_and_query(call: Call, value: str, figure: Any) -> None:
    check_400(call, call.post(call.p, {"data": {"action": "hangup", "cause": value}}), "cause")
    resp = call.post(call.p, None, params={"action": "hangup", "cause": value})
    if len(value) > 8000:  # the HTTP server's own limit on a request line
        assert resp.status_code == 414 and call.sent() == []
    else:
        check_400(call, resp, "cause")
    figure("hostile numbers (causes and integer fields)", cases=2, held=2)


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
@pytest.mark.parametrize(
    ("module", "field"), [("audio_level", "level"), ("record_call", "time_limit")]
)
def test_hostile_integer_text_is_400(
    call: Call, module: str, field: str, value: str, figure: Any
) -> None:
    resp = call.put(
        call.a, {"action": "metaflow", "data": {"module": module, "data": {field: value}}}
    )
    check_400(call, resp, f"data.{field}")
    body = {"data": {"action": "transfer", "target": "9001", "timeout": value}}
    check_400(call, call.post(call.a, body), "timeout")
    figure("hostile numbers (causes and integer fields)", cases=2, held=2)


@pytest.mark.parametrize(
    "raw",
    [
        b"18446744073709551615",  # 2**64 - 1: an int after parsing
        b"1" + b"0" * 63,  # a float after parsing
        b"-9223372036854775809",
        b"1e308",
        b"3.5",
    ],
)
def test_huge_json_numbers_are_400_with_a_body_that_serialises(call: Call, raw: bytes) -> None:
    body = b'{"action":"metaflow","data":{"module":"audio_level","data":{"level":' + raw + b"}}}"
    call.mark = len(call.switch.received)
    resp = call.h.api.request(
        "PUT",
        f"/v2/accounts/acc1/channels/{call.a}",
        "admin1",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    check_400(call, resp, "data.level")


def test_an_integral_json_float_is_sent_as_an_integer(call: Call) -> None:
    body = {"action": "metaflow", "data": {"module": "audio_level", "data": {"level": 3.0}}}
    resp = call.put(call.a, body)
    assert resp.status_code == 201, resp.text
    assert call.sent() == [f"api uuid_audio {call.a} start read level 3"]


@pytest.mark.parametrize(
    "value",
    [
        [[[[[[]]]]]],
        {"a": {"b": 1}},
        [1] * 100,
    ],
)
def test_refused_objects_are_not_echoed(call: Call, value: Any) -> None:
    # An echoed array or object is the client's depth: orjson refuses more than 254 levels.
    deep: Any = []
    for _ in range(400):
        deep = [deep]
    for v in (value, deep):
        resp = call.post(call.a, {"data": {"action": "hangup", "cause": v}})
        check_400(call, resp, "cause")
        assert "value" not in resp.json()["data"]["cause"]["type"]
    resp = call.post(call.a, {"data": {"action": deep}})
    assert resp.status_code == 400 and resp.json()["message"] == "invalid data"


ACTIONS_TABLE = ChannelTable()
ACTIONS_TABLE.apply(
    "fs1", {"Event-Name": "CHANNEL_CREATE", "Unique-ID": "u1", "variable_account_id": "a"}
)
TOKEN = Token("0" * 64, "a", "admin")
NON_ASCII_DIGITS = st.text(
    alphabet=st.characters(categories=("Nd", "No")), min_size=1, max_size=12
).filter(lambda s: not s.isascii())


def refused_without_sending(call: Any) -> bool:
    node = RecordingNode()
    actions = Actions(ACTIONS_TABLE, {"fs1": node})
    try:
        call(actions)
    except ApiError as err:
        assert err.status == 400 and node.sent == []
        return True
    return False


@settings(max_examples=200, derandomize=True, deadline=None)
@given(value=NON_ASCII_DIGITS)
def test_no_unicode_digits_pass_as_a_cause_or_an_integer(value: str) -> None:
    ch = ACTIONS_TABLE.get("u1")
    body = {"data": {"action": "hangup", "cause": value}}
    assert refused_without_sending(lambda a: a.post(ch, body, {}, TOKEN))
    assert refused_without_sending(
        lambda a: a.post(ch, None, {"action": "hangup", "cause": value}, TOKEN)
    )
    flow = {"action": "metaflow", "data": {"module": "audio_level", "data": {"level": value}}}
    assert refused_without_sending(lambda a: a.put(ch, flow, {}, TOKEN))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(value=st.integers(min_value=-(10**30), max_value=10**30))
def test_any_ascii_integer_text_is_sent_in_range_or_refused(value: int) -> None:
    ch = ACTIONS_TABLE.get("u1")
    node = RecordingNode()
    actions = Actions(ACTIONS_TABLE, {"fs1": node})
    flow = {"action": "metaflow", "data": {"module": "audio_level", "data": {"level": str(value)}}}
    if -4 <= value <= 4:
        actions.put(ch, flow, {}, TOKEN)
        assert node.sent == [f"uuid_audio u1 start read level {value}"]
    else:
        with pytest.raises(ApiError) as info:
            actions.put(ch, flow, {}, TOKEN)
        assert info.value.status == 400 and node.sent == []
