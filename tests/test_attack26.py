"""Outside probes of the legs an action creates inheriting the acted-on channel's account and
realm (actions._tenant_variables): hostile row values, identity mappings other than the
default, and an attended transfer whose transferor is another account's leg."""

import re
import urllib.parse
from typing import Any

import pytest
from test_actions import ALICE, Call

from channelsd.config import ConfigError, parse

from conftest import config_dict, wait_until

POLICY = {
    "allowed_contexts": ["ctx2", "cf"],
    "allowed_media": ["tone_stream://", "local_stream://", "/srv/"],
}
# A valid domain name (validate.is_realm takes up to 253 characters) longer than 64.
LONG_REALM = "a" * 40 + "." + "b" * 40 + ".example"
ACTIONS = [
    ("p", {"action": "intercept", "target_type": "number", "target_id": "1234"}),
    ("p", {"action": "intercept", "target_type": "device", "target_id": "dev9"}),
    ("a", {"action": "eavesdrop", "target_type": "number", "target_id": "1234"}),
    ("a", {"action": "transfer", "target": "2000", "transfer_type": "attended"}),
]
ACTION_IDS = ["intercept-number", "intercept-device", "eavesdrop", "attended-transfer"]


def sent_since(switch: Any, mark: int) -> list[str]:
    return [c for _, c in switch.received[mark:] if c.startswith(("api uuid_", "bgapi"))]


@pytest.fixture
def call(switch: Any, make_daemon: Any) -> Call:
    h = make_daemon([switch], sync={"command_timeout": 1}, actions=POLICY)
    return Call(h, switch)


@pytest.fixture
def long_realm(switch: Any, make_daemon: Any) -> Call:
    h = make_daemon([switch], sync={"command_timeout": 1}, actions=POLICY)
    return Call(h, switch, {**ALICE, "domain_name": LONG_REALM})


@pytest.mark.parametrize(("leg", "data"), ACTIONS, ids=ACTION_IDS)
def test_a_long_valid_realm_does_not_refuse_the_actions_that_create_legs(
    long_realm: Call, leg: str, data: Any
) -> None:
    """Every other action takes a realm of up to 253 characters, and these took it before
    the created legs inherited it; `ecallmgr_Realm=<realm>` (a value of at most 64) refused
    them all, with a 400 blaming channel.realm for not being `name=value`."""
    assert long_realm.h.table.get(long_realm.p).realm == LONG_REALM
    resp = long_realm.post(getattr(long_realm, leg), {"data": data})
    assert resp.status_code != 400, resp.text
    assert any(f"ecallmgr_Realm={LONG_REALM}" in line for line in long_realm.sent())


# -- hostile row values on the paths that now read the realm (number targets did not) -----------

HOSTILE = [
    "acc1.example,ecallmgr_Account-ID=acc2",
    "acc1.example}user/evil",
    "{x=y}acc1.example",
    "acc1'.example",
    'acc1".example',
    "acc1 .example",
    "acc1^^:.example",
    "acc1\n.example",
    "acc1.ex\u00e4mple",
    "x=y",
    "a" * 300,
    "acc1.example=",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    ("leg", "data"), [ACTIONS[0], ACTIONS[2], ACTIONS[3]], ids=["intercept", "eavesdrop", "att"]
)
def test_a_hostile_realm_is_refused_and_nothing_is_sent(
    call: Call, leg: str, data: Any, value: str
) -> None:
    row = call.h.table.get(getattr(call, leg))
    original, row.realm = row.realm, value
    try:
        resp = call.post(getattr(call, leg), {"data": data})
    finally:
        row.realm = original
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["message"] == "validation error" and "channel.realm" in body["data"], body
    assert value not in resp.text
    assert call.sent() == []


@pytest.mark.parametrize("value", [v for v in HOSTILE if "\n" not in v])
def test_a_hostile_account_is_refused_and_nothing_is_sent(call: Call, value: str) -> None:
    row = call.h.table.get(call.p)
    original, row.account_id = row.account_id, value
    call.mark = len(call.switch.received)
    try:
        resp = call.h.api.request(
            "POST",
            f"/v2/accounts/{urllib.parse.quote(value, safe='')}/channels/{call.p}",
            "super",
            json={"data": ACTIONS[0][1]},
        )
    finally:
        row.account_id = original
    assert resp.status_code in (400, 404), resp.text
    assert call.sent() == []


# -- identity mappings other than the default ---------------------------------------------------


@pytest.mark.parametrize(
    "header", ["variable__acct", "variable_1acct", "variable_", "variable_" + "x" * 70]
)
def test_an_identity_variable_no_originate_can_set_is_the_configurations_fault(
    switch: Any, make_daemon: Any, header: str
) -> None:
    """The schema takes any header of [A-Za-z0-9_-] in a chain, and reading works with it. An
    account_id chain whose variable cannot be set in an originate's {…} block must be told
    to the operator as a configuration problem (at load, or a refusal naming
    config.identity.account_id), not as a 400 blaming the channel's account id for not being
    `name=value` on every intercept, eavesdrop and attended transfer."""
    identity = {"account_id": [header]}
    try:
        parse(config_dict([switch], identity=identity), "test.toml")
    except ConfigError:
        return  # told at load: fine
    h = make_daemon([switch], actions=POLICY, identity=identity)
    p, _ = switch.originate(dest="9003", variables={header[9:]: "acc1"})
    wait_until(lambda: h.table.get(p) is not None and h.table.get(p).account_id == "acc1")
    mark = len(switch.received)
    resp = h.api.request(
        "POST", f"/v2/accounts/acc1/channels/{p}", "admin1", json={"data": ACTIONS[0][1]}
    )
    assert resp.status_code == 400, resp.text
    assert "channel.account_id" not in resp.json()["data"], resp.text
    assert "config.identity.account_id" in resp.json()["data"], resp.text
    assert sent_since(switch, mark) == []


# -- cross-tenant: an attended transfer whose transferor is another account's leg ---------------


@pytest.fixture
def cross(switch: Any, make_daemon: Any) -> Any:
    """acc1's channel a bridged to acc2's phone b (acc1 called acc2's number); per-account
    dialplan contexts."""
    h = make_daemon(
        [switch], sync={"command_timeout": 1}, actions={**POLICY, "context": "ctx_{account_id}"}
    )
    va = {"account_id": "acc1", "owner_id": "user1", "domain_name": "acc1.example"}
    vb = {"account_id": "acc2", "owner_id": "user9", "domain_name": "acc2.example"}
    a, b = switch.bridged_call(variables_a=va, variables_b=vb)
    wait_until(lambda: h.table.get(a) and h.table.get(b) and h.table.get(a).other_leg == b)
    return h, switch, a, b


def test_a_tenant_cannot_make_a_leg_in_another_accounts_name(cross: Any) -> None:
    """acc1's admin asks an attended transfer by the peer on its own channel. The
    consultation leg was given the transferor's account (acc2) while it dials acc1's own
    context (ctx_acc1): `att_xfer::{ecallmgr_Account-ID=acc2,ecallmgr_Realm=acc2.example}
    loopback/2000/ctx_acc1`. acc1 thus places a call through its dialplan that is acc2's in
    every list (and, on Kazoo, in acc2's limits and billing), and cannot see or cancel the
    consultation it started. README: the created legs "belong to the account of the channel
    acted on". Either the leg is acc1's, or the action is refused with nothing sent."""
    h, switch, a, _ = cross
    before = {c["uuid"] for c in h.api.data("/v2/channels")}
    mark = len(switch.received)
    body = {"action": "transfer", "target": "2000", "transfer_type": "attended", "leg": "bleg"}
    resp = h.api.request("POST", f"/v2/accounts/acc1/channels/{a}", "admin1", json={"data": body})
    sent = sent_since(switch, mark)
    if resp.status_code != 200:
        assert sent == [], sent
        return
    line = next(c for c in sent if "att_xfer::" in c)
    assert re.findall(r"ecallmgr_Account-ID=([^,}]+)", line) in ([], ["acc1"]), line
    new = wait_until(lambda: [c for c in h.api.data("/v2/channels") if c["uuid"] not in before])
    assert {c.get("account_id") for c in new} <= {"acc1", None}, new
