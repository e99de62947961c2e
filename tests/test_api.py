"""Every route, role and error shape of the spec, over HTTP against a daemon fed by the stand-in."""

import csv
import io
from typing import Any

import pytest

from conftest import TOKENS, Harness, token, wait_until

ACC1_ALICE = {
    "ecallmgr_Account-ID": "acc1",
    "ecallmgr_Owner-ID": "user1",
    "ecallmgr_Authorizing-ID": "dev1",
    "ecallmgr_Authorizing-Type": "device",
    "ecallmgr_Username": "alice",
    "ecallmgr_Realm": "acc1.example",
    "presence_id": "alice@acc1.example",
}
ACC1_BOB = {
    "ecallmgr_Account-ID": "acc1",
    "ecallmgr_Owner-ID": "user2",
    "ecallmgr_Authorizing-ID": "dev2",
    "ecallmgr_Authorizing-Type": "device",
}
ACC2_CAROL = {"account_id": "acc2", "owner_id": "user3", "authorizing_id": "dev3"}
ENVELOPE_KEYS = {"data", "status", "request_id", "auth_token", "timestamp", "node", "version"}


class World:
    """Three calls in two accounts, known to the daemon."""

    def __init__(self, h: Harness, switch: Any) -> None:
        self.h = h
        self.api = h.api
        self.alice_a, self.alice_b = switch.bridged_call(
            variables_a=ACC1_ALICE,
            variables_b=ACC1_BOB,
            caller=("Alice", "1001"),
            callee=("Bob", "1002"),
        )
        self.bob_a, self.bob_b = switch.bridged_call(
            variables_a=ACC1_BOB, variables_b={"ecallmgr_Account-ID": "acc1"}
        )
        self.carol_a, self.carol_b = switch.bridged_call(
            variables_a=ACC2_CAROL, variables_b=ACC2_CAROL
        )
        self.all = {self.alice_a, self.alice_b, self.bob_a, self.bob_b, self.carol_a, self.carol_b}
        wait_until(lambda: {c.uuid for c in h.table.all()} >= self.all, what="calls in the table")
        wait_until(lambda: h.table.get(self.alice_a).other_leg == self.alice_b, what="bridge")


@pytest.fixture
def world(switch: Any, make_daemon: Any) -> World:
    h = make_daemon([switch], identity={"device_owners": {"dev9": "user1"}})
    return World(h, switch)


def uuids(items: list[dict[str, Any]]) -> list[str]:
    return [i["uuid"] for i in items]


def test_account_list_envelope_and_content_type(world: World) -> None:
    resp = world.api.get("/v2/accounts/acc1/channels", "admin1", headers={"X-Request-ID": "req-42"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["X-Request-ID"] == "req-42"
    body = resp.json()
    assert set(body) == ENVELOPE_KEYS
    assert body["status"] == "success" and body["request_id"] == "req-42"
    assert body["auth_token"] == token("admin1")
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 20
    got = body["data"]
    assert set(uuids(got)) == {world.alice_a, world.alice_b, world.bob_a, world.bob_b}
    assert got == sorted(got, key=lambda i: (i["timestamp"], i["uuid"]))
    alice = next(i for i in got if i["uuid"] == world.alice_a)
    assert alice["account_id"] == "acc1" and alice["owner_id"] == "user1"
    assert alice["authorizing_id"] == "dev1" and alice["authorizing_type"] == "device"
    assert alice["username"] == "alice" and alice["realm"] == "acc1.example"
    assert alice["presence_id"] == "alice@acc1.example"
    assert alice["other_leg"] == world.alice_b
    assert alice["custom_channel_vars"]["Account-ID"] == "acc1"
    assert alice["node"] == "fs1" and alice["stale"] is False
    assert isinstance(alice["answered"], bool) and alice["is_onhold"] is False
    assert alice["timestamp"] > 63_000_000_000  # Gregorian seconds
    assert alice["bridge_id"]
    assert "call_id" not in alice  # single-GET names only on the single GET


def test_request_id_is_generated_when_absent_or_unsafe(world: World) -> None:
    for headers in ({}, {"X-Request-ID": "bad id\twith spaces"}):
        resp = world.api.get("/v2/accounts/acc1/channels", "admin1", headers=headers)
        rid = resp.json()["request_id"]
        assert len(rid) == 32 and int(rid, 16) >= 0
        assert resp.headers["X-Request-ID"] == rid


def test_system_wide_list_is_for_superduper_only(world: World) -> None:
    data = world.api.data("/v2/channels", "super")
    assert set(uuids(data)) == world.all
    resp = world.api.get("/v2/channels", "admin1")
    assert resp.status_code == 403
    body = resp.json()
    assert (body["status"], body["error"], body["message"]) == ("error", "403", "forbidden")
    assert body["data"]["message"] == "forbidden"
    assert "auth_token" not in body


def test_system_wide_list_disabled_names_the_setting(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch], api={"system_wide_channels_list": False})
    resp = h.api.get("/v2/channels", "super")
    assert resp.status_code == 403
    assert "system_wide_channels_list" in resp.json()["data"]["reason"]


@pytest.mark.parametrize(
    "kw",
    [
        {},  # no token at all
        {"headers": {"X-Auth-Token": "not-a-token"}},
        {"headers": {"Authorization": "Bearer not-a-token"}},
        {"headers": {"X-Auth-Token": ""}},  # present but empty
        {"params": {"auth_token": "not-a-token"}},
        {"json": {"auth_token": "not-a-token"}},
    ],
)
def test_one_401_shape_for_missing_and_unknown_tokens(world: World, kw: dict[str, Any]) -> None:
    # Kazoo's own system error (cb_context:add_system_error('invalid_credentials')), the
    # same whether a token was missing or wrong: the answer tells a prober nothing.
    resp = world.api.get("/v2/accounts/acc1/channels", tok=None, **kw)
    assert resp.status_code == 401
    assert resp.headers["Content-Type"] == "application/json"
    body = resp.json()
    assert (body["status"], body["error"], body["message"]) == (
        "error",
        "401",
        "invalid_credentials",
    )
    assert body["data"] == {"message": "invalid credentials"}
    assert "auth_token" not in body


@pytest.mark.parametrize("where", ["bearer", "bare", "query", "body", "body-data"])
def test_token_may_come_from_header_bearer_query_or_body(world: World, where: str) -> None:
    t = token("admin1")
    kw: dict[str, Any] = {}
    if where == "bearer":
        kw["headers"] = {"Authorization": f"Bearer {t}"}
    elif where == "bare":
        kw["headers"] = {"Authorization": t}
    elif where == "query":
        kw["params"] = {"auth_token": t}
    elif where == "body":
        kw["json"] = {"auth_token": t}
    else:
        kw["json"] = {"data": {"auth_token": t}}
    resp = world.api.get("/v2/accounts/acc1/channels", tok=None, **kw)
    assert resp.status_code == 200, resp.text


def test_accounts_are_isolated_and_descendants_allowed(world: World) -> None:
    resp = world.api.get("/v2/accounts/acc2/channels", "admin1")
    assert resp.status_code == 403
    assert world.api.data("/v2/accounts/acc1-sub/channels", "admin1") == []
    assert set(uuids(world.api.data("/v2/accounts/acc2/channels", "admin2"))) == {
        world.carol_a,
        world.carol_b,
    }
    # Another account's channel is 404 through one's own account, as in Kazoo.
    resp = world.api.get(f"/v2/accounts/acc1/channels/{world.carol_a}", "admin1")
    assert resp.status_code == 404
    assert resp.json()["data"] == [world.carol_a]
    assert resp.json()["message"] == "bad identifier"


def test_user_token_sees_only_its_owners_channels(world: World) -> None:
    data = world.api.data("/v2/accounts/acc1/channels", "user1")
    assert uuids(data) == [world.alice_a]
    assert uuids(world.api.data("/v2/accounts/acc1/users/user1/channels", "user1")) == [
        world.alice_a
    ]
    resp = world.api.get("/v2/accounts/acc1/users/user2/channels", "user1")
    assert resp.status_code == 403
    resp = world.api.get(f"/v2/accounts/acc1/channels/{world.bob_a}", "user1")
    assert resp.status_code == 404
    assert (
        world.api.data(f"/v2/accounts/acc1/channels/{world.alice_a}", "user1")["uuid"]
        == world.alice_a
    )
    assert world.api.data("/v2/accounts/acc1/devices/dev2/channels", "user1") == []


def test_user_and_device_routes(world: World) -> None:
    # Bob owns his own call's a-leg and the b-leg of Alice's call to him.
    got = uuids(world.api.data("/v2/accounts/acc1/users/user2/channels", "admin1"))
    assert set(got) == {world.alice_b, world.bob_a}
    got = uuids(world.api.data("/v2/accounts/acc1/devices/dev1/channels", "admin1"))
    assert got == [world.alice_a]
    assert world.api.data("/v2/accounts/acc1/devices/nope/channels", "admin1") == []


def test_user_route_includes_channels_of_the_users_known_devices(world: World, switch: Any) -> None:
    a, _ = switch.bridged_call(
        variables_a={"account_id": "acc1", "authorizing_id": "dev9"}, variables_b={}
    )
    wait_until(lambda: world.h.table.get(a) is not None)
    got = uuids(world.api.data("/v2/accounts/acc1/users/user1/channels", "admin1"))
    assert set(got) == {world.alice_a, a}


def test_single_channel_has_both_naming_styles(world: World) -> None:
    data = world.api.data(f"/v2/accounts/acc1/channels/{world.alice_a}", "admin1")
    assert data["uuid"] == data["call_id"] == world.alice_a
    assert data["other_leg"] == data["other_leg_call_id"] == world.alice_b
    assert data["direction"] == data["call_direction"]
    assert data["elapsed_s"] == data["elapsed_seconds"]
    assert data["is_onhold"] is data["is_on_hold"] is False
    assert data["caller_id_number"] == "1001"


def test_unknown_channel_is_404_at_once(world: World) -> None:
    resp = world.api.get("/v2/accounts/acc1/channels/deadbeef-0000", "admin1")
    assert resp.status_code == 404
    assert resp.json()["data"] == ["deadbeef-0000"]


def test_methods_not_allowed_are_405(world: World) -> None:
    for method, path in (
        ("POST", "/v2/accounts/acc1/channels"),
        ("DELETE", f"/v2/accounts/acc1/channels/{world.alice_a}"),
        ("PATCH", "/v2/channels"),
        ("PUT", "/v2/accounts/acc1/users/user1/channels"),
    ):
        resp = world.api.request(method, path, "admin1")
        assert resp.status_code == 405, (method, path)
        body = resp.json()
        assert body["message"] == "invalid_method"
        assert body["data"]["message"] == "method not allowed"


def test_unknown_paths_are_404_in_the_envelope(world: World) -> None:
    for path in ("/v2/nope", "/", "/v2/accounts/acc1/widgets", "/v2/accounts/acc1/channels/a/b"):
        resp = world.api.get(path, "admin1")
        assert resp.status_code == 404
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json()["status"] == "error"


def test_cors_preflight_needs_no_token(world: World) -> None:
    resp = world.api.request(
        "OPTIONS",
        "/v2/accounts/acc1/channels",
        tok=None,
        headers={"Origin": "https://portal.example", "Access-Control-Request-Method": "GET"},
    )
    assert 200 <= resp.status_code < 300
    h = resp.headers
    assert h["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in h["Access-Control-Allow-Methods"].split(",")}
    assert methods >= {"GET", "PUT", "POST", "DELETE", "OPTIONS"}
    allow = h["Access-Control-Allow-Headers"].lower()
    for name in ("content-type", "x-auth-token", "x-kazoo-cluster-id", "x-request-id"):
        assert name in allow
    assert "x-request-id" in h["Access-Control-Expose-Headers"].lower()
    # and every normal answer carries them too
    assert (
        world.api.get("/v2/accounts/acc1/channels", "admin1").headers["Access-Control-Allow-Origin"]
        == "*"
    )


def test_filters(world: World, switch: Any) -> None:
    switch.hold(world.alice_a)
    wait_until(lambda: world.h.table.get(world.alice_a).is_onhold)
    path = "/v2/accounts/acc1/channels"
    assert uuids(world.api.data(path, "admin1", params={"filter_is_onhold": "true"})) == [
        world.alice_a
    ]
    got = world.api.data(
        path, "admin1", params={"filter_not_owner_id": "user1", "_": "1700000000000"}
    )
    assert world.alice_a not in uuids(got) and world.bob_a in uuids(got)
    got = world.api.data(path, "admin1", params={"has_key": "owner_id", "paginate": "false"})
    assert set(uuids(got)) == {world.alice_a, world.alice_b, world.bob_a}
    got = world.api.data(path, "admin1", params={"key_missing": "owner_id"})
    assert uuids(got) == [world.bob_b]
    got = world.api.data(path, "admin1", params={"filter_custom_channel_vars.Owner-ID": "user2"})
    assert set(uuids(got)) == {world.alice_b, world.bob_a}


def test_csv_by_accept_header_and_query(world: World) -> None:
    for kw in ({"headers": {"Accept": "text/csv"}}, {"params": {"accept": "csv"}}):
        resp = world.api.get("/v2/accounts/acc1/channels", "admin1", **kw)
        assert resp.status_code == 200
        # names its charset: names and numbers are UTF-8, and a spreadsheet guesses otherwise
        assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
        lines = resp.text.strip().splitlines()
        header = lines[0].split(",")
        assert "uuid" in header and "custom_channel_vars.Account-ID" in header
        assert len(lines) == 5


def test_csv_keeps_e164_numbers_and_guards_formulas(switch: Any, make_daemon: Any) -> None:
    h = make_daemon([switch])
    a, _ = switch.bridged_call(
        variables_a={"account_id": "acc1"},
        variables_b={"account_id": "acc1"},
        caller=('=HYPERLINK("http://evil")', "+15552084410"),
    )
    wait_until(lambda: h.table.get(a) is not None)
    resp = h.api.get("/v2/accounts/acc1/channels", "admin1", params={"accept": "csv"})
    rows = {r["uuid"]: r for r in csv.DictReader(io.StringIO(resp.text))}
    item = {i["uuid"]: i for i in h.api.data("/v2/accounts/acc1/channels", "admin1")}[a]
    number = next(k for k, v in item.items() if v == "+15552084410")
    name = next(k for k, v in item.items() if v == '=HYPERLINK("http://evil")')
    assert rows[a][number] == "+15552084410"  # what a script reads back is what the JSON says
    assert rows[a][name] == "'" + item[name]


def test_pretty_print(world: World) -> None:
    for kw in ({"params": {"pretty_print": "true"}}, {"headers": {"X-Pretty-Print": "true"}}):
        resp = world.api.get("/v2/accounts/acc1/channels", "admin1", **kw)
        assert resp.text.startswith("{\n  ")
    assert "\n" not in world.api.get("/v2/accounts/acc1/channels", "admin1").text


def test_bodies_invalid_empty_and_oversized(world: World) -> None:
    path = "/v2/accounts/acc1/channels"
    resp = world.api.get(
        path, "admin1", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["message"] == "invalid json"
    assert body["data"]["json"]["invalid"]["target"] == "body"
    resp = world.api.get(path, "admin1", data=b"", headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    resp = world.api.get(
        path, "admin1", data=b"[1, 2]", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400 and resp.json()["message"] == "invalid json"
    resp = world.api.request("POST", f"{path}/{world.alice_a}", "admin1", data=b"x" * 70000)
    assert resp.status_code == 413
    assert resp.json()["status"] == "error"


def test_trailing_slash_is_accepted(world: World) -> None:
    assert world.api.get("/v2/accounts/acc1/channels/", "admin1").status_code == 200
    assert world.api.get("/v2/channels/", "super").status_code == 200


def test_every_role_on_the_account_list(world: World) -> None:
    expected = {"super": 200, "admin1": 200, "user1": 200, "admin2": 403}
    assert set(expected) == set(TOKENS)
    for name, status in expected.items():
        assert world.api.get("/v2/accounts/acc1/channels", name).status_code == status, name
