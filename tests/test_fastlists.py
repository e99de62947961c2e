"""The plain-list fast path answers exactly as the Flask resource does, and only where it may.

The daemon under test serves with the fast path (the default); a second server runs the same
Flask app over the same table without it. Every request of a matrix — each list route, each
role, good and bad tokens, the forms only Flask handles — goes to both over real sockets, and
the answers must match. Flask's request_started signal tells which requests the fast path
kept away from Flask.
"""

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests
from flask import request_started
from gevent.pywsgi import WSGIServer
from test_api import World
from test_fastlane import hold_the_clock

from channelsd.api import create_app

from conftest import token

LISTS = [
    "/v2/channels",
    "/v2/channels/",
    "/v2/accounts/acc1/channels",
    "/v2/accounts/acc1/channels/",
    "/v2/accounts/acc2/channels",
    "/v2/accounts/acc1-sub/channels",
    "/v2/accounts/nobody/channels",
    "/v2/accounts/acc1/users/user1/channels",
    "/v2/accounts/acc1/users/user2/channels",
    "/v2/accounts/acc1/devices/dev1/channels",
    "/v2/accounts/acc1/devices/dev404/channels",
]
TOKENS = ["super", "admin1", "admin2", "user1"]
# (name, extra request arguments): forms that are never the fast path's to answer.
FLASK_ONLY: list[tuple[str, dict[str, Any]]] = [
    ("query filter", {"params": {"filter_answered": "true"}}),
    ("pretty query", {"params": {"pretty_print": "true"}}),
    ("pretty header", {"headers": {"X-Pretty-Print": "true"}}),
    ("csv", {"headers": {"Accept": "text/csv"}}),
    ("token in query", {"params": {"auth_token": token("super")}, "tok": None}),
    ("token in body", {"json": {"auth_token": token("super")}, "tok": None}),
    ("no token", {"tok": None}),
    ("unknown token", {"tok": "tok-nobody-0123456789"}),
    ("empty bearer", {"tok": None, "headers": {"Authorization": "Bearer "}}),
]


@pytest.fixture
def world(switch: Any, make_daemon: Any) -> World:
    h = make_daemon([switch], identity={"device_owners": {"dev9": "user1"}})
    return World(h, switch)


@pytest.fixture
def reference(world: World) -> Iterator[str]:
    """The same Flask app over the same table, without the fast path in front."""
    app = create_app(replace(world.h.daemon.ctx, fast_lists=False, metrics=None))
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.stop()


@pytest.fixture
def flask_handled(world: World) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(sender: Any, **extra: Any) -> None:
        from flask import request

        seen.append(request.path)

    request_started.connect(note, world.h.daemon.app, weak=False)
    yield seen
    request_started.disconnect(note, world.h.daemon.app)


def ask(base: str, path: str, tok: str | None = "super", **kw: Any) -> requests.Response:
    headers = {"X-Request-ID": "same-id-for-both", **kw.pop("headers", {})}
    if tok is not None:
        headers.setdefault("X-Auth-Token", token(tok) if not tok.startswith("tok-") else tok)
    return requests.request(kw.pop("method", "GET"), base + path, headers=headers, timeout=10, **kw)


# What moves by itself between two asks of one answer: a channel's duration, under channelsd's
# name and Kazoo's (a single channel's item and CSV row carry both).
MOVING = ("elapsed_s", "elapsed_seconds")


def comparable(resp: requests.Response) -> tuple[Any, ...]:
    """Status, headers and body, less what moves by itself between two requests."""
    headers = {k.lower(): v for k, v in resp.headers.items() if k.lower() not in ("date",)}
    length = int(headers.pop("content-length", len(resp.content)))
    assert resp.request.method == "HEAD" or length == len(resp.content)
    try:
        body = resp.json()
    except ValueError:
        if headers.get("content-type", "").startswith("text/csv"):
            # The durations move too (a second turned over between the two requests: it
            # flaked), under both names: a single channel's row has Kazoo's elapsed_seconds.
            rows = list(csv.reader(io.StringIO(resp.text)))
            for name in MOVING:
                if rows and name in rows[0]:
                    col = rows[0].index(name)
                    for row in rows[1:]:
                        if len(row) > col:
                            row[col] = ""
            return resp.status_code, headers, rows
        return resp.status_code, headers, resp.text
    if isinstance(body, dict):
        body.pop("timestamp", None)
        data = body.get("data")
        # a list's items, or a single channel's item (it flaked when a second turned over
        # between the two requests)
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict):
                for name in MOVING:
                    item.pop(name, None)
    return resp.status_code, headers, body


def test_plain_lists_answer_as_flask_does_without_flask(
    world: World, reference: str, flask_handled: list[str]
) -> None:
    ours = world.api.base
    compared = served_fast = 0
    for tok in TOKENS:
        for path in LISTS:
            before = len(flask_handled)
            fast, slow = ask(ours, path, tok), ask(reference, path, tok)
            assert comparable(fast) == comparable(slow), (tok, path)
            compared += 1
            if fast.status_code == 200 and tok != "user1":
                # the plain, allowed case: never reached Flask
                assert len(flask_handled) == before, (tok, path)
                served_fast += 1
            else:  # errors, and user tokens' per-owner filtering, are Flask's
                assert len(flask_handled) == before + 1, (tok, path)
    # Lists really were served both ways, with channels in them.
    assert served_fast >= 15
    assert len(ask(ours, "/v2/accounts/acc1/channels").json()["data"]) == 4


def test_bearer_token_is_read_alike(world: World, reference: str, flask_handled: list[str]) -> None:
    path = "/v2/accounts/acc1/channels"
    headers = {"Authorization": f"Bearer {token('admin1')}"}
    fast, slow = (
        ask(world.api.base, path, None, headers=headers),
        ask(reference, path, None, headers=headers),
    )
    assert fast.status_code == 200 and comparable(fast) == comparable(slow)
    assert flask_handled == []


@pytest.mark.parametrize("name,kw", FLASK_ONLY, ids=[n for n, _ in FLASK_ONLY])
def test_other_forms_are_left_to_flask(
    world: World, reference: str, flask_handled: list[str], name: str, kw: dict[str, Any]
) -> None:
    path = "/v2/accounts/acc1/channels"
    fast, slow = ask(world.api.base, path, **dict(kw)), ask(reference, path, **dict(kw))
    assert comparable(fast) == comparable(slow)
    assert flask_handled == [path]


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_are_left_to_flask(
    world: World, reference: str, flask_handled: list[str], method: str
) -> None:
    path = "/v2/accounts/acc1/channels"
    fast = ask(world.api.base, path, method=method)
    slow = ask(reference, path, method=method)
    assert comparable(fast) == comparable(slow)
    assert flask_handled == [path]


def test_fast_answers_are_counted_under_flasks_route_label(world: World) -> None:
    for _ in range(3):
        assert ask(world.api.base, "/v2/accounts/acc1/channels").status_code == 200
    text = world.api.get("/metrics", None).text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("channelsd_http_requests_total{")
        and 'route="/v2/accounts/<account_id>/channels"' in ln
        and 'status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= 3


def single_paths(world: World) -> list[str]:
    """Each call under its own account, under the other one, unknown, and malformed forms."""
    return [
        f"/v2/accounts/acc1/channels/{world.alice_a}",
        f"/v2/accounts/acc1/channels/{world.bob_b}",
        f"/v2/accounts/acc2/channels/{world.carol_a}",
        f"/v2/accounts/acc2/channels/{world.alice_a}",  # another account's call
        f"/v2/accounts/acc1-sub/channels/{world.alice_a}",
        "/v2/accounts/acc1/channels/no-such-uuid",
        f"/v2/accounts/acc1/channels/{world.alice_a}/",  # Flask's strict slashes
        f"/v2/accounts/acc1/channels/{world.alice_a}/extra",
    ]


def test_single_channel_gets_answer_as_flask_does(
    world: World, reference: str, flask_handled: list[str]
) -> None:
    ours = world.api.base
    served_fast = 0
    for tok in TOKENS:
        for path in single_paths(world):
            before = len(flask_handled)
            fast, slow = ask(ours, path, tok), ask(reference, path, tok)
            assert comparable(fast) == comparable(slow), (tok, path)
            if fast.status_code == 200 and tok != "user1" and not path.endswith("/"):
                assert len(flask_handled) == before, (tok, path)
                served_fast += 1
            else:  # refusals, unknown channels, other forms and user tokens are Flask's
                assert len(flask_handled) == before + 1, (tok, path)
    assert served_fast >= 5
    detail = ask(ours, f"/v2/accounts/acc1/channels/{world.alice_a}").json()["data"]
    assert detail["uuid"] == world.alice_a and detail["other_leg"] == world.alice_b


@pytest.mark.parametrize("name,kw", FLASK_ONLY, ids=[n for n, _ in FLASK_ONLY])
def test_other_single_channel_forms_are_left_to_flask(
    world: World, reference: str, flask_handled: list[str], name: str, kw: dict[str, Any]
) -> None:
    path = f"/v2/accounts/acc1/channels/{world.alice_a}"
    fast, slow = ask(world.api.base, path, **dict(kw)), ask(reference, path, **dict(kw))
    assert comparable(fast) == comparable(slow)
    assert flask_handled == [path]


@pytest.mark.parametrize("path", ["/v2/accounts/acc1/channels", "one"])
def test_comparable_leaves_out_all_that_a_turned_second_moves(
    world: World, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # The tests above ask twice and compare; a second may turn between the asks. Each form
    # asked at one second and at the next compares equal, though its bytes moved (a CI run
    # once found a single channel's CSV row differing in elapsed_seconds).
    still = hold_the_clock(monkeypatch)
    path = f"/v2/accounts/acc1/channels/{world.alice_a}" if path == "one" else path
    moved = 0
    for kw in [{}, *(kw for _, kw in FLASK_ONLY)]:
        before = ask(world.api.base, path, **dict(kw))
        still.now += 1.0
        after = ask(world.api.base, path, **dict(kw))
        assert comparable(before) == comparable(after), kw
        moved += before.content != after.content
    assert moved >= 5  # the answers did move: the comparison was tested


def test_actions_on_one_channel_still_reach_flask(world: World, flask_handled: list[str]) -> None:
    path = f"/v2/accounts/acc1/channels/{world.alice_a}"
    resp = ask(world.api.base, path, method="POST", json={"data": {"action": "nonsense"}})
    assert resp.status_code == 400 and resp.json()["status"] == "error"
    assert flask_handled == [path]
