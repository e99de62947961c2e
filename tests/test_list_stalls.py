"""One tenant's list requests never hold the daemon (issue #11, item 7).

An attack on one account of 3,000 channels stalled the hub 0.53-0.66 s with one GET of 540
`filter_not_k=v` parameters (6.1 s for ten at once) and 153-219 ms with `?accept=csv`. Now a
request gives at most MAX_FILTERS filters (more is a 400 naming the limit), and every loop
that builds a list answer (filtering, items for CSV or pretty printing, CSV rows, JSON
slices, the ended calls, freeing what was built) lets the hub run whenever PACE_BUDGET has
passed. Structural tests check that each loop is paced per item; the longest any greenlet
ran without the hub while every form was asked for, ten at once, is measured (CPU time, as
tests/test_metaflow_limits.py measures it) for RELIABILITY.md, with a bound against hangs
only.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import gevent
import orjson
import pytest
import requests
from test_metaflow_limits import RunLengths

from channelsd import listing
from channelsd.listing import MAX_FILTERS
from channelsd.standin.replay import Frame

from conftest import Harness, count_pauses, token, wait_until

HANG = 60.0


def create(u: str, i: int, account: str = "acc1") -> Frame:
    """A CHANNEL_CREATE as the attack sent them: identity, a dozen custom variables."""
    event = {
        "Event-Name": "CHANNEL_CREATE",
        "Unique-ID": u,
        "Call-Direction": "inbound",
        "Channel-Name": f"sofia/internal/{1000 + i}@{account}.example",
        "Channel-State": "CS_EXECUTE",
        "Caller-Caller-ID-Name": f"Caller {i}",
        "Caller-Caller-ID-Number": str(5550000 + i),
        "Caller-Destination-Number": "9000",
        "Caller-Channel-Created-Time": str(int(time.time() * 1e6)),
        "variable_ecallmgr_Account-ID": account,
        "variable_ecallmgr_Owner-ID": f"user{i % 50}",
        "variable_ecallmgr_Authorizing-ID": f"dev{i}",
        "variable_ecallmgr_Realm": f"{account}.example",
        **{f"variable_ecallmgr_Custom-{k}": f"value-{k}-{i}" for k in range(12)},
    }
    return frame(event)


def frame(event: dict[str, Any]) -> Frame:
    body = orjson.dumps(event)
    raw = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body
    return Frame("text/event-json", event["Event-Name"], event["Unique-ID"], raw)


def destroy(u: str) -> Frame:
    return frame(
        {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": u, "Hangup-Cause": "NORMAL_CLEARING"}
    )


def populate(h: Harness, switch: Any, live: int, ended: int) -> None:
    """`live` channels in acc1, and `ended` more that hung up (the ended list)."""
    gone = [str(uuid.uuid4()) for _ in range(ended)]
    up = [str(uuid.uuid4()) for _ in range(live)]
    for start in range(0, live + ended, 500):
        batch = (gone + up)[start : start + 500]
        switch.send_frames([create(u, start + i) for i, u in enumerate(batch)])
        gevent.sleep(0.01)
    wait_until(lambda: len(h.table.by_account("acc1")) == live + ended, HANG, "channels")
    switch.send_frames([destroy(u) for u in gone])
    wait_until(lambda: len(h.table.by_account("acc1")) == live, HANG, "hangups")
    wait_until(lambda: len(h.daemon.ctx.ended or ()) >= ended, HANG, "ended calls")


def get(h: Harness, query: str, tok: str = "admin1", path: str = "/v2/accounts/acc1/channels"):
    return requests.get(
        f"{h.api.base}{path}?{query}", headers={"X-Auth-Token": token(tok)}, timeout=HANG
    )


# -- the number of filters ---------------------------------------------------------------------


def filters(n: int) -> str:
    kinds = ("filter_not_k=v", "filter_owner_id=user1", "has_key=uuid", "key_missing=x.y")
    return "&".join(kinds[i % len(kinds)] for i in range(n))


@pytest.mark.parametrize("extra", ["", "ended=true&", "accept=csv&", "pretty_print=true&"])
def test_more_filters_than_the_limit_is_a_400_naming_it(daemon: Harness, extra: str) -> None:
    assert get(daemon, extra + filters(MAX_FILTERS)).status_code == 200
    attack = "&".join(["filter_not_k=v"] * 540)  # the attack's: 8,099 bytes
    for n, query in ((MAX_FILTERS + 1, filters(MAX_FILTERS + 1)), (540, attack)):
        resp = get(daemon, extra + query + "&unrelated=1")
        assert resp.status_code == 400, resp.text[:300]
        body = resp.json()
        assert body["message"] == "validation error"
        rule = body["data"]["filters"]["maxItems"]
        assert rule["target"] == MAX_FILTERS
        assert f"at most {MAX_FILTERS} filter parameters" in rule["message"]
        assert f"{n} were given" in rule["message"]


def test_an_event_stream_takes_no_more_filters(daemon: Harness) -> None:
    resp = requests.get(
        f"{daemon.api.base}/v2/accounts/acc1/channel_events?{filters(MAX_FILTERS + 1)}",
        headers={"X-Auth-Token": token("admin1")},
        stream=True,  # an accepted stream never ends
        timeout=HANG,
    )
    try:
        assert resp.status_code == 400 and resp.json()["data"]["filters"]["maxItems"]
        assert len(daemon.daemon.ctx.subscriptions) == 0  # refused before it took a place
    finally:
        resp.close()


# -- every loop paced --------------------------------------------------------------------------


def test_every_list_loop_visits_the_hub_between_items(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a budget of nothing, every pace() is a visit: each form visits the hub at least
    once per item it walks (before the fix: once per 500 channels, never for CSV)."""
    h = make_daemon([switch])
    live = ended = 300
    populate(h, switch, live, ended)
    visits = count_pauses(monkeypatch, listing)
    monkeypatch.setattr(listing, "PACE_BUDGET", 0.0)
    checked = 0
    for (query, tok), at_least in (
        (("accept=csv", "admin1"), 2 * live),  # items, then rows
        (("pretty_print=true", "admin1"), live),
        (("filter_not_k=v&filter_owner_id=user3", "admin1"), live),
        (("", "user1"), live),
        (("ended=true", "admin1"), 2 * ended),  # looked at, then each item made
        (("ended=true&filter_not_k=v", "admin1"), ended),
        (("ended=true&accept=csv", "admin1"), 2 * ended),
        (("ended=true&pretty_print=true", "user1"), ended),
    ):
        visits.clear()
        resp = get(h, query, tok)
        assert resp.status_code == 200, resp.text[:200]
        assert len(visits) >= at_least, (query, tok, len(visits))
        checked += 1
    assert checked == 8


def test_a_users_or_a_devices_ended_calls_are_looked_for_paced(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's or a device's ended calls are found among the account's by each one's owner
    and device, which only its decompressed item says (channelsd.endedrecord): ~9 us a call,
    90 ms for a full store in one go before this was paced. Each call looked at visits the
    hub, however few of them are the user's (6 of 300 here) or the device's (1)."""
    h = make_daemon([switch])
    ended = 300
    populate(h, switch, 1, ended)
    visits = count_pauses(monkeypatch, listing)
    monkeypatch.setattr(listing, "PACE_BUDGET", 0.0)
    for path, found in (
        ("/v2/accounts/acc1/users/user1/channels", ended // 50),
        ("/v2/accounts/acc1/devices/dev1/channels", 1),
    ):
        visits.clear()
        resp = get(h, "ended=true", "admin1", path)
        assert resp.status_code == 200 and len(resp.json()["data"]) == found, resp.text[:200]
        assert len(visits) >= ended, (path, len(visits))


# -- measured ----------------------------------------------------------------------------------


def test_no_list_request_stalls_the_hub(switch: Any, make_daemon: Any, figure: Any) -> None:
    """The attack's account (3,000 live channels, 3,000 ended calls), every form of list ten
    at once, and the refused ones."""
    h = make_daemon([switch])
    populate(h, switch, 3000, 3000)
    asked = [
        ("&".join(["filter_not_k=v"] * 540), "admin1", 400),
        (filters(MAX_FILTERS), "admin1", 200),
        ("", "admin1", 200),
        ("", "user1", 200),
        ("accept=csv", "admin1", 200),
        ("pretty_print=true", "admin1", 200),
        ("ended=true", "admin1", 200),
        ("ended=true&accept=csv", "admin1", 200),
        ("ended=true&pretty_print=true&filter_not_k=v", "admin1", 200),
    ]
    clients: set[Any] = {gevent.getcurrent()}
    statuses: list[tuple[int, int]] = []

    def ask(query: str, tok: str, status: int) -> None:
        statuses.append((get(h, query, tok).status_code, status))

    worst: dict[str, float] = {}
    for query, tok, status in asked:
        with RunLengths(clients) as runs:
            group = [gevent.spawn(ask, query, tok, status) for _ in range(10)]
            clients.update(group)
            gevent.joinall(group, timeout=HANG, raise_error=True)
        worst[f"{query[:40]} ({tok})"] = round(runs.worst * 1000, 2)
    assert len(statuses) == 10 * len(asked)
    assert all(got == want for got, want in statuses), statuses
    figure(
        "hub stalls (lists)",
        requests=len(statuses),
        worst_ms=max(worst.values()),
        by_form_ms=worst,
    )
    # Against hangs only: before the fix one 540-filter request held the hub 0.53-0.66 s
    # and ten CSV requests 0.82 s, so a bound near those would be a speed assertion that a
    # loaded machine can fail. The pacing is checked structurally by
    # test_every_list_loop_visits_the_hub_between_items; the figure goes to RELIABILITY.md.
    assert max(worst.values()) < HANG * 1000, worst  # ms
