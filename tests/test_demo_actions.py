"""The demo's actions work on its stand-in: pickup and listen-in ring targets it can dial, and
Kazoo's documented transfer example with a media id plays the account's hold music. In process
(the demo's own configuration, its traffic and a real daemon over ESL), and once as a user runs
`channelsd demo`, with the lines it prints.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from typing import Any

import pytest
import requests

from channelsd.demo import MEDIA_TEMPLATE, Traffic, demo_actions, demo_media, demo_users

from conftest import start_demo, wait_until


@pytest.fixture
def demo(switch: Any, make_daemon: Any) -> tuple[Any, Traffic]:
    users = demo_users()
    h = make_daemon([switch], actions=demo_actions(users, switch))
    traffic = Traffic(switch, 6, seed=7)
    traffic.advance(1)
    return h, traffic


def acme() -> Any:
    return demo_users()[0]


def post(h: Any, ch: dict[str, Any], body: dict[str, Any]) -> Any:
    return h.api.request(
        "POST",
        f"/v2/accounts/{ch['account_id']}/channels/{ch['uuid']}",
        "super",
        json={"data": body},
    )


def find(h: Any, traffic: Traffic, pred: Any) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        traffic.advance(1)
        return next((c for c in h.api.data("/v2/channels") if pred(c)), None)

    return wait_until(look, timeout=30, what="a demo call")


def test_a_ringing_phone_is_picked_up_through_a_device_target(demo: Any) -> None:
    h, traffic = demo
    leg = find(
        h,
        traffic,
        lambda c: c["direction"] == "outbound" and not c["answered"] and c.get("other_leg"),
    )
    bob = demo_users()[1]
    resp = post(
        h, leg, {"action": "intercept", "target_type": "device", "target_id": bob.device_id}
    )
    assert resp.status_code == 200, resp.text
    caller = traffic.switch.model.channels[leg["other_leg"]]
    picked = traffic.switch.model.channels[caller.bridge_peer]
    assert picked.name == f"loopback/{bob.device_id}-a" and picked.answered

    def ended_cause() -> str | None:
        ended = h.api.data("/v2/channels", params={"ended": "true"})
        return next((e.get("hangup_cause") for e in ended if e["uuid"] == leg["uuid"]), None)

    assert wait_until(ended_cause, what="the ringing leg ended") == "PICKED_OFF"


def test_an_answered_call_is_listened_to_through_a_user_target(demo: Any) -> None:
    h, traffic = demo
    call = find(
        h, traffic, lambda c: c["answered"] and c.get("other_leg") and c["call_state"] == "ACTIVE"
    )
    resp = post(
        h, call, {"action": "eavesdrop", "target_type": "user", "target_id": acme().user_id}
    )
    assert resp.status_code == 200, resp.text
    wait_until(
        lambda: any(e.target == call["uuid"] for e in traffic.switch.model.eavesdrops.values()),
        what="the listener",
    )


def test_kazoos_transfer_example_plays_the_accounts_hold_music(demo: Any) -> None:
    h, traffic = demo
    call = find(
        h, traffic, lambda c: c["answered"] and c.get("other_leg") and c["call_state"] == "ACTIVE"
    )
    media_id = demo_media(demo_users())[call["account_id"]]
    body = {"action": "transfer", "target": "1003", "takeback_dtmf": "*1", "moh": media_id}
    resp = post(h, call, body)
    assert resp.status_code == 200, resp.text
    transferee = traffic.switch.model.channels[call["other_leg"]]
    assert transferee.playing == MEDIA_TEMPLATE.format(
        account_id=call["account_id"], media_id=media_id
    )


def test_a_media_id_the_demo_does_not_have_plays_nothing(demo: Any) -> None:
    """The stand-in knows which media files the demo has: an unknown id is FILE NOT FOUND, as
    on a switch."""
    h, traffic = demo
    call = find(
        h, traffic, lambda c: c["answered"] and c.get("other_leg") and c["call_state"] == "ACTIVE"
    )
    resp = post(h, call, {"action": "transfer", "target": "1003", "moh": "0" * 32})
    assert resp.status_code == 200
    transferee = traffic.switch.model.channels[call["other_leg"]]
    assert transferee.playing is None
    assert transferee.variables["current_application_response"] == "FILE NOT FOUND"


def test_the_printed_pickup_line_works_as_printed() -> None:
    proc, text = start_demo(calls=12)
    try:
        m = re.search(
            r"-d '(\{\"data\": \{\"action\": \"intercept\".*\})' \\\n\s+'(\S+)/<uuid>'", text
        )
        assert m, text
        body, url = json.loads(m.group(1)), m.group(2)
        token = re.search(r"X-Auth-Token: (\S+)' -H 'Content-Type", text).group(1)
        headers = {"X-Auth-Token": token}

        def ringing() -> dict[str, Any] | None:
            calls = requests.get(url, headers=headers, timeout=5).json()["data"]
            return next(
                (
                    c
                    for c in calls
                    if c["direction"] == "outbound" and not c["answered"] and c.get("other_leg")
                ),
                None,
            )

        # acme's phones ring as its calls start: with 12 calls up (a call lives ~60 s) about
        # one in 15 s, each for a few seconds. With 6 and a 60 s bound, none came 1 run in
        # ~10 (the traffic is random; a bound against hangs, never a speed assertion).
        leg = wait_until(ringing, timeout=180, what="a ringing phone of acme")
        resp = requests.post(f"{url}/{leg['uuid']}", json=body, headers=headers, timeout=10)
        assert resp.status_code == 200 and resp.json()["data"] == "intercept initiated", resp.text
        assert "media id" in text and '"moh": "' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ringing(c: dict[str, Any]) -> bool:
    return c["direction"] == "outbound" and not c["answered"] and bool(c.get("other_leg"))


def _talking(c: dict[str, Any]) -> bool:
    return c["answered"] and bool(c.get("other_leg")) and c["call_state"] == "ACTIVE"


@pytest.mark.parametrize(
    "pick, body",
    [
        (_ringing, {"action": "intercept", "target_type": "device", "target_id": "bob-device"}),
        (_talking, {"action": "eavesdrop", "target_type": "user", "target_id": "alice-user"}),
        (_talking, {"action": "transfer", "target": "1003", "takeback_dtmf": "*1"}),
    ],
    ids=["intercept", "eavesdrop", "attended-transfer"],
)
def test_the_legs_an_action_creates_belong_to_its_account(demo: Any, pick: Any, body: Any):
    """A leg the switch creates for a tenant's action (the interceptor, the listener, the
    transfer's consultation) carries the account of the channel acted on, as Kazoo's
    originates carry the account's custom channel variables: the tenant sees it in its own
    list and may act on it (hang up a listener left behind). Without them it had no account:
    listed system-wide only, and 404 on every account's path, the superduper's included."""
    h, traffic = demo
    ch = find(h, traffic, lambda c: pick(c) and c["account_id"] == acme().account)
    ids = {"bob-device": demo_users()[1].device_id, "alice-user": acme().user_id}
    body = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in body.items()}
    before = {c["uuid"] for c in h.api.data("/v2/channels")}
    resp = post(h, ch, body)
    assert resp.status_code == 200, resp.text
    # The traffic is not advanced meanwhile: every new channel is the action's.
    new = wait_until(
        lambda: [c for c in h.api.data("/v2/channels") if c["uuid"] not in before],
        what="the legs the action created",
    )
    account = ch["account_id"]
    assert {c.get("account_id") for c in new} == {account}, new
    mine = {c["uuid"] for c in h.api.data(f"/v2/accounts/{account}/channels")}
    assert {c["uuid"] for c in new} <= mine
    leg = new[0]
    resp = h.api.request(
        "POST",
        f"/v2/accounts/{account}/channels/{leg['uuid']}",
        "super",
        json={"data": {"action": "hangup"}},
    )
    assert resp.status_code == 200, resp.text
