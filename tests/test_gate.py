"""One gate for every ESL line: hostile values from every source never reach the switch.

Every field of every action and metaflow module (read from the schemas, so a new field is
covered without touching this file) gets hostile values from the request; every channel-row
value that reaches a line gets them from the table (the row altered in place, as a hostile
dialplan or a SIP header mapped into an identity chain would leave it); every configuration
value that reaches a line gets them from a configuration swapped in at run time (past the
start-up check, as if it had been missed). Each must be a 400 in Kazoo's validation-error shape
naming the field, with nothing sent to the stand-in (`switch.received`).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channelsd import gate
from channelsd.actions import POST_ACTIONS, Actions
from channelsd.jsonschemas import MODULES, module_schema
from channelsd.tokens import Token

from conftest import Harness, config_dict, wait_until

SCALE = int(os.environ.get("RELIABILITY_SCALE", "1"))
EXAMPLES = 8 * SCALE

# Refused by every kind: line ends, quotes, blocks, expansions, app and command separators.
UNIVERSAL = [
    "\r",
    "\n",
    "\r\n",
    "\u2028",
    "\u2029",
    "\x85",
    "\x00",
    "\t",
    "'",
    '"',
    "{",
    "}",
    "}{x}",
    "${",
    "${system(id)}",
    "|",
    "&",
    " &system(touch /tmp/pwned)",
    "::",
    ";;",
    "^^",
    "\\",
    "`",
    "[",
    "]",
    "$",
]
# Also refused by every kind but free text (which speaks any script, with spaces).
NOT_TEXT = [" ", " USER_BUSY", "١٧", "𝟏𝟕", "²", "\u00a0", "é"]
SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


def hostile(kind: str) -> st.SearchStrategy[str]:
    tokens = UNIVERSAL + ([] if kind == "text" else NOT_TEXT)
    pieces = st.lists(
        st.tuples(st.sampled_from(tokens), SAFE | st.just("")), min_size=1, max_size=3
    )
    return st.builds(lambda head, rest: head + "".join(t + s for t, s in rest), SAFE, pieces)


ALICE = {"account_id": "acc1", "owner_id": "user1", "domain_name": "acc1.example"}
BOB = {"account_id": "acc1", "owner_id": "user2", "domain_name": "acc1.example"}
# Every row and configuration value reaches a line somewhere under this configuration.
ACTIONS_CONFIG = {
    "context": "ctx_{account_id}",
    "callflow_context": "cf_{account_id}",
    "allowed_contexts": ["shared"],
    "allowed_dialplans": ["XML"],
    "attended_dialstring": "loopback/{target}-{account_id}@{realm}/{context}",
    "allowed_media": ["tone_stream://", "/var/lib/media/{account_id}/"],
    "media_template": "/var/lib/media/{account_id}/{media_id}.wav",
    "intercept_endpoints": {
        "device": "user/{target_id}@{realm}",
        "user": "sofia/{account_id}/{target_id}@{realm}",
        "number": "loopback/{target_id}/{context}",
    },
}
MEDIA_ID = "0123456789abcdef0123456789abcdef"


class Target:
    """A daemon on a stand-in with a bridged pair a-b and a parked leg p, all of acc1."""

    def __init__(self, h: Harness, switch: Any) -> None:
        self.h, self.switch = h, switch
        self.a, self.b = switch.bridged_call(variables_a=ALICE, variables_b=BOB)
        self.p, _ = switch.originate(dest="9003", variables=ALICE)
        wait_until(lambda: all(h.table.get(u) for u in (self.a, self.b, self.p)))
        wait_until(lambda: h.table.get(self.a).other_leg == self.b)
        wait_until(lambda: h.table.get(self.p).realm == "acc1.example")
        self.actions: Actions = h.daemon.ctx.actions

    def leg(self, name: str) -> str:
        return getattr(self, name)

    def request(
        self, method: str, uuid: str, body: Any, account: str = "acc1", tok: str = "admin1"
    ):
        path = f"/v2/accounts/{urllib.parse.quote(account, safe='')}/channels/{uuid}"
        return self.h.api.request(method, path, tok, json=body)

    def control(self, method: str, uuid: str, body: Any) -> list[str]:
        """The same request against a node that answers +OK to everything, with the row as
        it is: the gate lets the benign case through, so a refusal is the hostile value's."""
        node = RecordingNode()
        actions = Actions(self.h.table, {"fs1": node}, self.actions.cfg)
        ch = self.h.table.get(uuid)
        call = actions.post if method == "POST" else actions.put
        call(ch, body, {}, Token("0" * 64, "acc1", "admin"))
        return node.sent


class RecordingNode:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def api(self, line: str) -> str:
        self.sent.append(line)
        return "+OK\n"

    bgapi = api


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    from channelsd.config import parse
    from channelsd.daemon import Daemon
    from channelsd.standin.server import StandinSwitch

    switch = StandinSwitch(hostname="gate")
    switch.start()
    daemon = Daemon(parse(config_dict([switch], actions=ACTIONS_CONFIG), "gate.toml"))
    daemon.start()
    h = Harness(daemon)
    h.wait_ready()
    yield Target(h, switch)
    daemon.stop()
    switch.stop()


def reached(switch: Any, mark: int, value: str | None = None) -> list[str]:
    """Packets since `mark` that are action commands, or that carry the hostile value."""
    out = []
    for _, raw in switch.received[mark:]:
        words = raw.split(" ", 2)
        is_action = len(words) > 1 and words[0] in ("api", "bgapi") and words[1] in gate.COMMANDS
        if is_action or (value and value.strip() and value in raw):
            out.append(raw)
    return out


def assert_refused(t: Target, resp: Any, key: str, value: str, mark: int) -> None:
    assert resp.status_code == 400, (key, value, resp.status_code, resp.text)
    body = resp.json()
    assert body["status"] == "error" and body["message"] == "validation error", body
    assert key in body["data"], (key, body["data"])
    assert reached(t.switch, mark, value) == []


# -- cases: every field, every source ----------------------------------------------------------

# module -> (leg it runs on, data that makes it valid and reach the switch)
BASE: dict[str, tuple[str, dict[str, Any]]] = {
    "hangup": ("p", {}),
    "break": ("p", {}),
    "transfer": ("a", {"target": "9001"}),
    "callflow": ("p", {"id": "3000"}),
    "intercept": ("p", {"target_type": "number", "target_id": "55"}),
    "eavesdrop": ("a", {"target_type": "number", "target_id": "55"}),
    "hold_control": ("p", {}),
    "play": ("a", {"id": "tone_stream://%(100,100,440)"}),
    "tts": ("p", {"text": "hello"}),
    "say": ("p", {"text": "1"}),
    "record_call": ("p", {}),
    "resume": ("a", {}),
    "audio_level": ("p", {}),
}
ATTENDED = {"target": "9001", "transfer_type": "attended"}
# Fields that only act within a variant of the module's base data.
FIELD_BASE = {
    ("transfer", "moh"): ATTENDED,
    ("transfer", "takeback_dtmf"): ATTENDED,
    ("eavesdrop", "whisper_leg"): {"target_type": "number", "target_id": "55", "mode": "whisper"},
}


def request_cases() -> list[tuple[str, str, str, str]]:
    """(method, module, field, kind) for every declared field of every module."""
    cases = []
    for module in MODULES:
        for name, prop in module_schema(module).get("properties", {}).items():
            kind = prop.get("format", "not-a-string")
            cases.append(("PUT", module, name, kind))
            if module in POST_ACTIONS:
                cases.append(("POST", module, name, kind))
    return cases


def body_for(method: str, module: str, data: dict[str, Any]) -> dict[str, Any]:
    if method == "POST":
        return {"data": {"action": module, **data}}
    return {"action": "metaflow", "data": {"module": module, "data": data}}


REQUEST_CASES = request_cases()


def test_every_module_field_is_enumerated() -> None:
    # The list is read from the schemas: a vacuous read would make the test below vacuous.
    assert len(REQUEST_CASES) >= 50
    assert {m for _, m, _, _ in REQUEST_CASES} == set(MODULES) - {"resume"}


@pytest.mark.parametrize(("method", "module", "field", "kind"), REQUEST_CASES)
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hostile_request_values_never_reach_the_switch(
    target: Target, figure: Any, method: str, module: str, field: str, kind: str, data: Any
) -> None:
    leg, base = BASE[module]
    base = FIELD_BASE.get((module, field), base)
    value = data.draw(hostile(kind), label=field)
    mark = len(target.switch.received)
    resp = target.request(method, target.leg(leg), body_for(method, module, {**base, field: value}))
    assert_refused(target, resp, field if method == "POST" else f"data.{field}", value, mark)
    figure("gate: hostile request values (every field of every module)", cases=1, held=1)


# (module, data, leg, row attribute, its kind, whose row: channel or other_leg)
ROW_CASES: list[tuple[str, dict[str, Any], str, str, str, str]] = [
    *((m, BASE[m][1], BASE[m][0], "uuid", "uuid", "channel") for m in MODULES),
    ("transfer", ATTENDED, "a", "uuid", "uuid", "other_leg"),
    ("resume", {}, "a", "uuid", "uuid", "other_leg"),
    ("intercept", {"target_type": "device", "target_id": "1000"}, "p", "realm", "realm", "channel"),
    ("intercept", {"target_type": "user", "target_id": "1000"}, "p", "realm", "realm", "channel"),
    ("transfer", ATTENDED, "a", "realm", "realm", "channel"),
    ("transfer", {**ATTENDED, "leg": "bleg"}, "a", "realm", "realm", "other_leg"),
    ("transfer", {**ATTENDED, "leg": "bleg"}, "a", "account_id", "account-id", "other_leg"),
    ("transfer", {"target": "9001"}, "a", "account_id", "account-id", "channel"),
    ("callflow", {"id": "3000"}, "p", "account_id", "account-id", "channel"),
    (
        "intercept",
        {"target_type": "number", "target_id": "5"},
        "p",
        "account_id",
        "account-id",
        "channel",
    ),
    (
        "intercept",
        {"target_type": "user", "target_id": "5"},
        "p",
        "account_id",
        "account-id",
        "channel",
    ),
    ("eavesdrop", {"target_type": "device", "target_id": "1000"}, "a", "realm", "realm", "channel"),
    (
        "eavesdrop",
        {"target_type": "user", "target_id": "5", "mode": "barge"},
        "a",
        "account_id",
        "account-id",
        "channel",
    ),
    # The legs an action creates inherit the account and realm (actions._tenant_variables).
    (
        "intercept",
        {"target_type": "device", "target_id": "1000"},
        "p",
        "account_id",
        "account-id",
        "channel",
    ),
    (
        "eavesdrop",
        {"target_type": "device", "target_id": "1000"},
        "a",
        "account_id",
        "account-id",
        "channel",
    ),
    ("transfer", ATTENDED, "a", "account_id", "account-id", "channel"),
    ("play", {"id": "/var/lib/media/acc1/x.wav"}, "a", "account_id", "account-id", "channel"),
    ("play", {"id": MEDIA_ID}, "a", "account_id", "account-id", "channel"),
]


def methods(module: str) -> tuple[str, ...]:
    return ("PUT", "POST") if module in POST_ACTIONS else ("PUT",)


def row_of(t: Target, leg: str, role: str) -> Any:
    ch = t.h.table.get(t.leg(leg))
    return ch if role == "channel" else t.h.table.get(ch.other_leg)


def test_every_row_case_reaches_the_switch_when_benign(target: Target) -> None:
    for module, fields, leg, attr, _, role in ROW_CASES:
        for method in methods(module):
            sent = target.control(method, target.leg(leg), body_for(method, module, fields))
            value = getattr(row_of(target, leg, role), attr)
            assert any(value in line for line in sent), (module, attr, sent)


@pytest.mark.parametrize(("module", "fields", "leg", "attr", "kind", "role"), ROW_CASES)
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hostile_row_values_never_reach_the_switch(
    target: Target,
    figure: Any,
    module: str,
    fields: dict[str, Any],
    leg: str,
    attr: str,
    kind: str,
    role: str,
    data: Any,
) -> None:
    row = row_of(target, leg, role)
    # The channel's own account is in the URL: only a superduper token reaches a channel of
    # an account with such a name (its other leg's account is never checked by the API), and
    # a `/` in it would route elsewhere.
    own_account = role == "channel" and attr == "account_id"
    values = hostile(kind).filter(lambda v: "/" not in v) if own_account else hostile(kind)
    value = data.draw(values, label=f"{role}.{attr}")
    account, tok = (value, "super") if own_account else ("acc1", "admin1")
    original = getattr(row, attr)
    setattr(row, attr, value)
    try:
        for method in methods(module):
            mark = len(target.switch.received)
            body = body_for(method, module, fields)
            resp = target.request(method, target.leg(leg), body, account, tok)
            assert_refused(target, resp, f"{role}.{attr}", value, mark)
            assert value not in resp.text  # a row may be another account's: never echoed
            figure("gate: hostile values from the switch (row fields x modules)", cases=1, held=1)
    finally:
        setattr(row, attr, original)


# (config key, module, data, leg, kind of the value); the key in the error is config.actions.<key>
CONFIG_CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("dialplan", "transfer", {"target": "9001"}, "a", "dialplan"),
    ("dialplan", "callflow", {"id": "3000"}, "p", "dialplan"),
    ("context", "transfer", {"target": "9001"}, "a", "context"),
    ("context", "intercept", {"target_type": "number", "target_id": "5"}, "p", "context"),
    ("callflow_context", "callflow", {"id": "3000"}, "p", "context"),
    ("attended_dialstring", "transfer", ATTENDED, "a", "endpoint"),
    ("moh", "transfer", ATTENDED, "a", "media"),
    ("record_dir", "record_call", {}, "p", "file-path"),
    (
        "intercept_endpoints.device",
        "intercept",
        {"target_type": "device", "target_id": "1"},
        "p",
        "endpoint",
    ),
    (
        "intercept_endpoints.user",
        "intercept",
        {"target_type": "user", "target_id": "1"},
        "p",
        "endpoint",
    ),
    (
        "intercept_endpoints.number",
        "intercept",
        {"target_type": "number", "target_id": "1"},
        "p",
        "endpoint",
    ),
    ("context", "eavesdrop", {"target_type": "number", "target_id": "5"}, "a", "context"),
    *(
        (
            f"intercept_endpoints.{kind}",
            "eavesdrop",
            {"target_type": kind, "target_id": "1", "mode": "whisper", "whisper_leg": "peer"},
            "a",
            "endpoint",
        )
        for kind in ("device", "user", "number")
    ),
    ("allowed_contexts[0]", "transfer", {"target": "9001", "context": "shared"}, "a", "context"),
    ("allowed_dialplans[0]", "transfer", {"target": "9001", "dialplan": "xml"}, "a", "dialplan"),
    ("allowed_media[0]", "play", {"id": "tone_stream://%(1,1,440)"}, "a", "media-root"),
    ("media_template", "play", {"id": MEDIA_ID}, "a", "media"),
]


def with_value(cfg: Any, key: str, value: str) -> Any:
    if key.startswith("intercept_endpoints."):
        kind = key.split(".", 1)[1]
        return dataclasses.replace(
            cfg, intercept_endpoints={**cfg.intercept_endpoints, kind: value}
        )
    if key.endswith("[0]"):
        name = key[:-3]
        return dataclasses.replace(cfg, **{name: (value, *getattr(cfg, name)[1:])})
    return dataclasses.replace(cfg, **{key: value})


def test_every_config_case_reaches_the_switch_when_benign(target: Target) -> None:
    for _, module, fields, leg, _ in CONFIG_CASES:
        for method in methods(module):
            assert target.control(method, target.leg(leg), body_for(method, module, fields))


@pytest.mark.parametrize(("key", "module", "fields", "leg", "kind"), CONFIG_CASES)
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_hostile_config_values_never_reach_the_switch(
    target: Target,
    figure: Any,
    key: str,
    module: str,
    fields: dict[str, Any],
    leg: str,
    kind: str,
    data: Any,
) -> None:
    value = data.draw(hostile(kind), label=key)
    original = target.actions.cfg
    target.actions.cfg = with_value(original, key, value)
    try:
        for method in methods(module):
            mark = len(target.switch.received)
            resp = target.request(method, target.leg(leg), body_for(method, module, fields))
            assert_refused(target, resp, f"config.actions.{key}", value, mark)
            figure("gate: hostile configuration values (keys x actions)", cases=1, held=1)
    finally:
        target.actions.cfg = original


# -- the reported attacks, end to end --------------------------------------------------------


def test_a_uuid_with_a_cause_in_it_cannot_hang_up_another_accounts_call(
    target: Target, figure: Any
) -> None:
    victim, _ = target.switch.originate(dest="9003", variables={"account_id": "acc2"})
    wait_until(lambda: target.h.table.get(victim) is not None)
    row = target.h.table.get(target.p)
    original = row.uuid
    row.uuid = f"{victim} USER_BUSY"  # as a switch that let a dialplan pick it would send
    try:
        mark = len(target.switch.received)
        resp = target.request("POST", target.p, {"data": {"action": "hangup"}})
        assert_refused(target, resp, "channel.uuid", victim, mark)
    finally:
        row.uuid = original
    assert victim in target.switch.channels
    target.switch.hangup(victim)
    figure("gate: hostile values from the switch (row fields x modules)", cases=1, held=1)


@pytest.mark.parametrize(
    "realm",
    [
        "acc1.example &system(touch /tmp/pwned)",
        "acc1.example}{x}",
        "acc1.example'",
        "${system(id)}",
        "acc1.example|sofia/gw/1",
        "acc1.example\u2028api status",
        "acc1.example\napi status",
    ],
)
def test_a_hostile_realm_from_the_switch_is_refused_not_dialled(
    target: Target, realm: str, figure: Any
) -> None:
    # Through the real path: the stand-in's events carry the variable, ingest makes the row.
    uuid, _ = target.switch.originate(dest="9003", variables={**ALICE, "domain_name": realm})
    wait_until(lambda: (ch := target.h.table.get(uuid)) is not None and ch.realm == realm)
    mark = len(target.switch.received)
    body = {"data": {"action": "intercept", "target_type": "device", "target_id": "1000"}}
    resp = target.request("POST", uuid, body)
    assert_refused(target, resp, "channel.realm", realm, mark)
    target.switch.hangup(uuid)
    figure("gate: hostile values from the switch (row fields x modules)", cases=1, held=1)


def test_a_row_with_a_hostile_unique_id_is_never_acted_on(target: Target, figure: Any) -> None:
    victim, _ = target.switch.originate(dest="9003", variables={"account_id": "acc2"})
    wait_until(lambda: target.h.table.get(victim) is not None)
    hostile_id = f"{victim} USER_BUSY"
    target.h.table.apply(
        "fs1",
        {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": hostile_id,
            "variable_account_id": "acc1",
            "Answer-State": "answered",
        },
    )
    mark = len(target.switch.received)
    resp = target.request("POST", urllib.parse.quote(hostile_id), {"data": {"action": "hangup"}})
    # Either ingest never made it a row (404) or the gate refused it (400): never sent.
    assert resp.status_code in (400, 404), resp.text
    assert reached(target.switch, mark, victim) == []
    assert victim in target.switch.channels
    target.switch.hangup(victim)
    figure("gate: hostile values from the switch (row fields x modules)", cases=1, held=1)


# -- the gate's own structure --------------------------------------------------------------------


def test_only_gated_commands_leave_actions() -> None:
    """api()/bgapi() are called in one place, and it takes a Command."""
    tree = ast.parse((Path(__file__).parent.parent / "channelsd" / "actions.py").read_text())
    callers = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute) and node.attr in ("api", "bgapi"):
                    callers.append(fn.name)
    assert set(callers) == {"_send"}
    with pytest.raises(TypeError):
        Actions.__dict__["_send"](None, RecordingNode(), "uuid_kill x", None)


def test_a_command_takes_only_checked_values() -> None:
    uuid = gate.check("uuid", "abc-123", "channel.uuid")
    assert gate.Command("uuid_kill", uuid).line == "uuid_kill abc-123"
    with pytest.raises(TypeError):
        gate.Command("uuid_kill", "abc-123")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        gate.Checked("uuid", "x y", "f", object())
    with pytest.raises(ValueError):
        gate.Command("system", uuid)
    uuid.text = "abc 123"  # altered after the gate: caught when the line is made
    with pytest.raises(gate.Refusal):
        gate.Command("uuid_kill", uuid)


def test_a_template_result_is_checked_again() -> None:
    target = gate.check("extension", "1000", "target")
    realm = gate.check("realm", "acc1.example", "channel.realm")
    ok = gate.fill("user/{t}@{r}", "tpl", "endpoint", {"t": target, "r": realm})
    assert ok.text == "user/1000@acc1.example"
    for template in ("user/{t}@{r} &x", "user/{t}|{r}", "{{{t}}}", "{t!r}", "{t:>20}", "{t.x}"):
        with pytest.raises(gate.Refusal) as info:
            gate.fill(template, "tpl", "endpoint", {"t": target, "r": realm})
        assert info.value.field == "tpl"
    with pytest.raises(TypeError):
        gate.fill("{t}", "tpl", "endpoint", {"t": "1000"})  # type: ignore[dict-item]
