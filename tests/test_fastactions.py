"""The plain POST action's fast path answers exactly as the Flask resource does, and only
where it may.

The daemon under test serves with the fast path (the default); a second server runs the same
Flask app over the same table and the same action runner without it. Each request of a
matrix — the plain forms, every form only Flask handles, refusals, a switch's error after the
command went out, a crash — goes to both over real sockets, each on a live call of its own,
and the answers, the commands the switch received, the action's log line and the metrics
must match. Flask's request_started signal tells which requests the fast path kept away from
Flask.
"""

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import request_started
from gevent.pywsgi import WSGIServer
from requests.structures import CaseInsensitiveDict
from test_fastlane import _DATE, read_sized

from channelsd import httpserver, quickhead
from channelsd.actions import Actions
from channelsd.api import create_app
from channelsd.envelope import ApiError

from conftest import Harness, token, wait_until

ALICE = {"account_id": "acc1", "owner_id": "user1", "authorizing_id": "dev1"}
ROUTE = 'route="/v2/accounts/<account_id>/channels/<uuid>"'


class Lines(logging.Handler):
    """What channelsd logs (its action lines, fail2ban's, crashes)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Raw:
    """An answer read off a raw socket, shaped as much of a requests.Response as the tests
    read."""

    def __init__(self, head: bytes, content: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.status_code = int(lines[0].split(" ", 2)[1])
        self.headers = CaseInsensitiveDict(line.split(": ", 1) for line in lines[1:])
        self.content = content

    def json(self) -> Any:
        return json.loads(self.content)


def whole(url: str, **kw: Any) -> Raw:
    """POST as requests would, but the head and the body in one write (a browser's small
    POST; requests writes them apart), so that the request is read whole."""
    req = requests.Request("POST", url, **kw).prepare()
    parts = urlsplit(url)
    head = [f"POST {req.path_url} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{k}: {v}" for k, v in req.headers.items()]
    body = req.body or b""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):  # a generator: chunked, as requests sends it
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body) + b"0\r\n\r\n"
    wire = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(wire)
        head_bytes, content, _ = read_sized(sock, b"")
    return Raw(head_bytes, content)


class Bed:
    def __init__(self, h: Harness, switch: Any, reference: str, lines: Lines, mode: str) -> None:
        self.h, self.switch, self.reference, self.lines = h, switch, reference, lines
        # "whole": each request in one write (the actions' lane answers the plain ones);
        # "in two": requests' own writes, head then body (the lane answers a plain one when
        # both had come by its first read, else the WSGI layer does); "lane off": requests'
        # writes and no lane (the WSGI layer answers them all).
        self.mode = mode
        self.laned: list[str] = []  # the requests the lane answered (their paths)

    def call(self, account: str = "acc1") -> str:
        a, _ = self.switch.originate(dest="9003", variables={**ALICE, "account_id": account})
        wait_until(lambda: self.h.table.get(a) is not None, what="the call in the table")
        return a

    def ask(
        self, base: str, uuid: str, tok: str | None = "admin1", suffix: str = "", **kw: Any
    ) -> tuple[requests.Response, list[str], list[str]]:
        """The answer, the commands the switch received for it and the lines logged for it
        (the uuid masked)."""
        headers = {"X-Request-ID": "same-id-for-both", **kw.pop("headers", {})}
        if tok is not None:
            headers.setdefault("X-Auth-Token", token(tok) if not tok.startswith("tok-") else tok)
        if callable(kw.get("data")):  # a generator (a chunked body): one for each request
            kw["data"] = kw["data"]()
        mark, logged = len(self.switch.received), len(self.lines.records)
        path = f"/v2/accounts/{kw.pop('account', 'acc1')}/channels/{uuid}{suffix}"
        kw.pop("other", None)
        if self.mode == "whole":
            resp: Any = whole(base + path, headers=headers, **kw)
        else:
            resp = requests.post(base + path, headers=headers, timeout=10, **kw)
        sent = [c.replace(uuid, "<uuid>") for _, c in self.switch.received[mark:]]
        lines = [
            f"{r.name} {r.getMessage().replace(uuid, '<uuid>')} {bool(r.exc_info)}"
            for r in self.lines.records[logged:]
        ]
        return resp, sent, lines

    def both(self, **kw: Any) -> tuple[Any, Any]:
        """The same request to the fast path and to Flask alone, each on its own call."""
        account = kw.get("other") or kw.get("account", "acc1")  # other: the call's, not the path's
        fast_uuid, slow_uuid = self.call(account), self.call(account)
        fast = self.ask(self.h.api.base, fast_uuid, **dict(kw))
        slow = self.ask(self.reference, slow_uuid, **dict(kw))
        return comparable(*fast, fast_uuid), comparable(*slow, slow_uuid)


def comparable(
    resp: requests.Response, sent: list[str], lines: list[str], uuid: str
) -> tuple[Any, ...]:
    """Status, headers, body, commands and log lines, less what moves by itself between two
    requests."""
    headers = {k.lower(): v for k, v in resp.headers.items() if k.lower() != "date"}
    assert int(headers.pop("content-length")) == len(resp.content)
    body = resp.json()
    body.pop("timestamp", None)
    return resp.status_code, headers, str(body).replace(uuid, "<uuid>"), sent, lines


@pytest.fixture(params=["whole", "in two", "lane off"])
def bed(switch: Any, make_daemon: Any, request: pytest.FixtureRequest) -> Iterator[Bed]:
    h = make_daemon([switch])
    app = create_app(replace(h.daemon.ctx, fast_lists=False, fast_actions=False, metrics=None))
    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    logger, lines = logging.getLogger("channelsd"), Lines()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines)
    bed = Bed(h, switch, f"http://127.0.0.1:{server.server_port}", lines, request.param)
    http = h.daemon.http
    lane = http.action_lane

    def kept(environ: dict[str, Any]) -> Any:
        run = lane(environ)
        if run is not None:
            bed.laned.append(environ["PATH_INFO"])
        return run

    http.action_lane = None if bed.mode == "lane off" else kept
    yield bed
    http.action_lane = lane
    logger.removeHandler(lines)
    logger.setLevel(level)
    server.stop()


@pytest.fixture
def flask_handled(bed: Bed) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(sender: Any, **extra: Any) -> None:
        from flask import request

        seen.append(request.path)

    request_started.connect(note, bed.h.daemon.app, weak=False)
    yield seen
    request_started.disconnect(note, bed.h.daemon.app)


def action_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "channelsd.actions"]


def posts_counted(bed: Bed, status: int) -> float:
    text = bed.h.api.get("/metrics", None).text
    for line in text.splitlines():
        if (
            line.startswith("channelsd_http_requests_total{")
            and ROUTE in line
            and 'method="POST"' in line
            and f'status="{status}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


PLAIN: list[tuple[str, dict[str, Any]]] = [
    ("hangup", {"json": {"action": "hangup"}}),
    ("in data, with a cause", {"json": {"data": {"action": "hangup", "cause": "USER_BUSY"}}}),
    ("break", {"json": {"action": "break"}}),
    ("superduper", {"json": {"action": "hangup"}, "tok": "super"}),
    (
        "bearer",
        {
            "json": {"action": "hangup"},
            "tok": None,
            "headers": {"Authorization": "Bearer " + token("admin1")},
        },
    ),
    ("a descendant account", {"json": {"action": "hangup"}, "account": "acc1-sub"}),
]


@pytest.mark.parametrize("name,kw", PLAIN, ids=[n for n, _ in PLAIN])
def test_plain_actions_answer_as_flask_does_without_flask(
    bed: Bed, flask_handled: list[str], name: str, kw: dict[str, Any]
) -> None:
    counted = posts_counted(bed, 200)
    fast, slow = bed.both(**kw)
    assert fast == slow
    assert fast[0] == 200 and fast[3], "a command went out"
    assert [line.split(" ", 1)[0] for line in fast[4]] == ["channelsd.actions"]  # its line
    assert [p for p in flask_handled if p != "/metrics"] == []  # the fast path's own answer
    if bed.mode != "in two":  # (in two, either: which read found the body decides)
        assert len(bed.laned) == (bed.mode == "whole")  # the lane when whole
    assert posts_counted(bed, 200) == counted + 1  # under Flask's route label


# (name, request arguments): forms the fast path never answers.
FLASK_ONLY: list[tuple[str, dict[str, Any]]] = [
    ("unknown action", {"json": {"action": "nonsense"}}),
    ("unknown field", {"json": {"data": {"action": "hangup", "nope": 1}}}),
    ("bad cause", {"json": {"action": "hangup", "cause": "NOT A CAUSE"}}),
    ("not json", {"data": b"{nope"}),
    ("a key twice", {"data": b'{"action":"break","action":"hangup"}'}),
    ("not an object", {"json": ["hangup"]}),
    ("empty body", {"data": b""}),
    ("blank body", {"data": b"   "}),
    ("too large", {"data": b'{"action":"hangup","x":"' + b"y" * 70000 + b'"}'}),
    ("chunked", {"data": lambda: iter([b'{"action":', b'"hangup"}'])}),
    ("query string", {"json": {}, "params": {"action": "hangup"}}),
    ("pretty header", {"json": {"action": "hangup"}, "headers": {"X-Pretty-Print": "true"}}),
    ("token in body", {"json": {"action": "hangup", "auth_token": token("admin1")}, "tok": None}),
    ("no token", {"json": {"action": "hangup"}, "tok": None}),
    ("unknown token", {"json": {"action": "hangup"}, "tok": "tok-nobody-0123456789"}),
    (
        "empty bearer",
        {"json": {"action": "hangup"}, "tok": None, "headers": {"Authorization": "Bearer "}},
    ),
    ("another account's token", {"json": {"action": "hangup"}, "tok": "admin2"}),
    ("user token", {"json": {"action": "hangup"}, "tok": "user1"}),
    ("another account in the path", {"json": {"action": "hangup"}, "account": "acc2"}),
    ("another account's call", {"json": {"action": "hangup"}, "tok": "super", "other": "acc2"}),
    ("trailing slash", {"json": {"action": "hangup"}, "suffix": "/"}),
    ("past the uuid", {"json": {"action": "hangup"}, "suffix": "/x"}),
]


@pytest.mark.parametrize("name,kw", FLASK_ONLY, ids=[n for n, _ in FLASK_ONLY])
def test_other_forms_and_refusals_are_left_to_flask(
    bed: Bed, flask_handled: list[str], name: str, kw: dict[str, Any]
) -> None:
    fast, slow = bed.both(**kw)
    assert fast == slow  # answers, commands and log lines (fail2ban's included)
    assert len(flask_handled) == 1 and bed.laned == []


def test_an_unknown_channel_is_left_to_flask(bed: Bed, flask_handled: list[str]) -> None:
    uuid = "0d9e1c3a-7c1b-4a41-9d7e-000000000000"
    fast = bed.ask(bed.h.api.base, uuid, json={"action": "hangup"})
    slow = bed.ask(bed.reference, uuid, json={"action": "hangup"})
    assert comparable(*fast, uuid) == comparable(*slow, uuid)
    assert fast[0].status_code == 404 and flask_handled == [f"/v2/accounts/acc1/channels/{uuid}"]


def test_the_switchs_refusal_after_the_command_is_answered_alike(
    bed: Bed, flask_handled: list[str]
) -> None:
    # The switch has forgotten both calls, and their events are held: the table still shows
    # them, the action is planned and sent, and the switch answers -ERR.
    fast_uuid, slow_uuid = bed.call(), bed.call()
    with bed.switch.events_held():
        bed.switch.hangup(fast_uuid)
        bed.switch.hangup(slow_uuid)
        fast = bed.ask(bed.h.api.base, fast_uuid, json={"action": "hangup"})
        slow = bed.ask(bed.reference, slow_uuid, json={"action": "hangup"})
    assert comparable(*fast, fast_uuid) == comparable(*slow, slow_uuid)
    assert fast[0].status_code == 404 and fast[1] and flask_handled == []


def test_a_crash_after_the_command_is_answered_and_logged_alike(
    bed: Bed, flask_handled: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent_run = Actions._run

    def broken(self: Actions, *args: Any) -> Any:
        sent_run(self, *args)
        raise RuntimeError("a bug after the command")

    monkeypatch.setattr(Actions, "_run", broken)
    fast, slow = bed.both(json={"action": "hangup"})
    assert fast == slow and fast[0] == 500 and fast[3]
    assert flask_handled == []
    assert [line for line in fast[4] if "unhandled error on POST" in line]
    assert all(line.endswith("True") for line in fast[4] if "unhandled" in line)  # traceback


def test_a_body_that_stops_coming_is_flasks_408_and_nothing_is_sent(
    switch: Any, make_daemon: Any
) -> None:
    h = make_daemon([switch], http={"body_timeout": 0.3})
    a, _ = switch.originate(dest="9003", variables=ALICE)
    wait_until(lambda: h.table.get(a) is not None, what="the call in the table")
    mark = len(switch.received)
    head = (
        f"POST /v2/accounts/acc1/channels/{a} HTTP/1.1\r\nHost: x\r\n"
        f"X-Auth-Token: {token('admin1')}\r\nContent-Length: 19\r\n\r\n"
    )
    with socket.create_connection(h.daemon.http_address, timeout=10) as sock:
        sock.sendall(head.encode() + b'{"action":')
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"error":"408"' in answer, answer[:300]
    assert switch.received[mark:] == [] and h.table.get(a) is not None


def test_after_an_actions_answer_the_cpu_is_offered_to_others_once(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hang-up's events arrive with the switch's reply and are parsed after the answer:
    # a client on this host woken by the answer must not wait for them (httpserver).
    offered: list[int] = []
    monkeypatch.setattr(httpserver, "_yield_cpu", lambda: offered.append(1))
    base = bed.h.api.base

    def count(method: str, path: str, **kw: Any) -> tuple[int, int]:
        before = len(offered)
        headers = {"X-Auth-Token": token("admin1"), **kw.pop("headers", {})}
        if method == "POST" and bed.mode == "whole":  # (the lane's, when it answers)
            status: Any = whole(base + path, headers=headers, **kw)
        else:
            status = requests.request(method, base + path, headers=headers, timeout=10, **kw)
        return status.status_code, len(offered) - before

    one = f"/v2/accounts/acc1/channels/{bed.call()}"
    assert count("POST", one, json={"action": "break"}) == (200, 1)  # the fast path
    if bed.mode != "in two":
        assert len(bed.laned) == (bed.mode == "whole")  # (the lane's answer, when whole)
    pretty = {"X-Pretty-Print": "true"}
    assert count("POST", one, json={"action": "break"}, headers=pretty) == (200, 1)  # Flask's
    assert count("PUT", one, json={"action": "metaflow", "data": {"module": "break"}}) == (201, 1)
    assert count("GET", one) == (200, 0)
    assert count("GET", "/v2/accounts/acc1/channels") == (200, 0)
    assert count("POST", one.replace("acc1", "acc2"), json={"action": "break"})[1] == 0


def test_an_answer_that_says_close_ends_the_connection_as_pywsgi_does(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after the command went out that says `Connection: close` (none does today):
    the lane's answer ends the connection, the request behind it unanswered, as pywsgi's
    does (found by an outside review)."""
    h = make_daemon([switch])
    sent_run = Actions._run

    def refused(self: Actions, *args: Any) -> Any:
        sent_run(self, *args)
        raise ApiError(503, "freeswitch unavailable", "fs1", headers={"Connection": "close"})

    monkeypatch.setattr(Actions, "_run", refused)

    def ask() -> tuple[list[bytes], int]:
        a, _ = switch.originate(dest="9003", variables=ALICE)
        wait_until(lambda: h.table.get(a) is not None, what="the call in the table")
        mark = len(switch.received)
        body = b'{"action":"break"}'
        head = (
            f"POST /v2/accounts/acc1/channels/{a} HTTP/1.1\r\n"
            f"X-Auth-Token: {token('admin1')}\r\nX-Request-ID: same\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        wire = head.encode() + body + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        out = b""
        with socket.create_connection(h.daemon.http_address, timeout=10) as sock:
            sock.sendall(wire)
            while data := sock.recv(65536):  # (the server ends it: after 1 answer or after 2)
                out += data
                if out.count(b"HTTP/1.1 ") == 2:
                    break
        heads = [_DATE.sub(b"", a.split(b"\r\n\r\n", 1)[0]) for a in out.split(b"HTTP/1.1 ")[1:]]
        return heads, len(switch.received) - mark

    lane, parse = ask(), None
    monkeypatch.setattr(quickhead, "parse", lambda buffered: None)
    parse = ask()
    assert lane == parse and len(lane[0]) == 1 and lane[1] == 1, (lane, parse)
    assert lane[0][0].startswith(b"503 ") and b"Connection: close" in lane[0][0]


def test_a_line_break_in_a_lanes_header_is_refused_as_pywsgi_refuses_it(
    switch: Any, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lanes write their answers' heads themselves: a header with a line break (none has
    one today: every value is the daemon's own or checked) is a 500, not a split answer, as
    pywsgi's start_response makes it (found by an outside review)."""
    h = make_daemon([switch])
    http = h.daemon.http
    monkeypatch.setattr(http, "lane", lambda env: ([("X-Split", "a\r\nSet-Cookie: x=1")], (b"{}",)))
    wire = b"GET /v2/channels HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(h.daemon.http_address, timeout=10) as sock:
        sock.sendall(wire)
        head, _, _ = read_sized(sock, b"")
    assert head.startswith(b"HTTP/1.1 500 ") and b"Set-Cookie" not in head
