"""The shipped OpenAPI document (channelsd/openapi.json) against the code, over real sockets.

* It is a valid OpenAPI 3.0 document: the OpenAPI 3.0 metaschema, every $ref resolving, path
  templates and path parameters agreeing.
* It documents exactly the routes the app serves (Flask's url_map and the websocket path),
  and for each path exactly the methods the code takes: any other method is a 405 whose Allow
  header names them.
* Every status it documents for an operation is produced by a real request below, and every
  status those requests produce is documented, with a body matching the documented schema.
* The action and metaflow bodies it documents are the modules of schemas/ (schemathesis,
  in tests/test_fuzz.py, then fuzzes the daemon with them).
"""

from __future__ import annotations

import copy
import json
import re
import socket
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from typing import Any

import gevent
import jsonschema
import requests
from kazoo_support import WsClient
from referencing import Registry
from referencing.jsonschema import DRAFT4
from schemathesis.specs.openapi.definitions import OPENAPI_30

from channelsd.actions import POST_ACTIONS
from channelsd.jsonschemas import MODULES, module_schema

from conftest import Harness, token, values_of, wait_until

DOC: dict[str, Any] = json.loads(resources.files("channelsd").joinpath("openapi.json").read_text())
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
_URI = "urn:channelsd:openapi"
_REGISTRY = Registry().with_resource(_URI, DRAFT4.create_resource(DOC))


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def pointer(ref: str) -> str:
    assert ref.startswith("#/"), ref
    return ref[1:]


def resolve(ref: str) -> Any:
    node: Any = DOC
    for part in pointer(ref)[1:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


# -- the document itself ------------------------------------------------------------------------


def test_the_document_is_a_valid_openapi_3_0_document() -> None:
    validator = jsonschema.Draft4Validator(OPENAPI_30)
    assert [e.message for e in validator.iter_errors(DOC)] == []
    # The metaschema has teeth: a status that is no status, a path without its leading slash.
    broken = copy.deepcopy(DOC)
    broken["paths"]["/v2/channels"]["get"]["responses"]["20x"] = {"description": "no"}
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(DOC)
    broken["paths"]["v2/channels"] = broken["paths"].pop("/v2/channels")
    assert not validator.is_valid(broken)

    for ref in values_of(DOC, "$ref"):
        resolve(ref)  # KeyError for a dangling one

    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids)), ids
    for method, path, op in operations():
        declared = [
            (resolve(p["$ref"]) if "$ref" in p else p)
            for p in DOC["paths"][path].get("parameters", []) + op.get("parameters", [])
        ]
        in_path = {p["name"] for p in declared if p["in"] == "path"}
        assert in_path == set(re.findall(r"\{([^}]+)\}", path)), (method, path)
        assert all(p["required"] for p in declared if p["in"] == "path"), (method, path)


def _oas_module(schema: dict[str, Any]) -> dict[str, Any]:
    """A module's data schema as the document should carry it (OpenAPI 3.0 has no
    dependentSchemas; formats are explained in each field's description)."""
    props = {}
    for name, prop in schema.get("properties", {}).items():
        props[name] = {k: v for k, v in prop.items() if k != "description"}
    return props


def test_action_and_metaflow_bodies_are_the_modules_of_schemas() -> None:
    schemas = DOC["components"]["schemas"]
    nodes = {r["$ref"] for r in schemas["Metaflow"]["oneOf"]}
    assert nodes == {f"#/components/schemas/{_camel(m)}Node" for m in MODULES}
    for module in MODULES:
        node = schemas[f"{_camel(module)}Node"]
        assert node["properties"]["module"]["enum"] == [module]
        data = resolve(node["properties"]["data"]["$ref"])
        source = module_schema(module)
        documented = {
            k: {key: v for key, v in p.items() if key != "description"}
            for k, p in data["properties"].items()
            if not k.lower().startswith("transfer-type")  # aliases, checked below
        }
        assert documented == _oas_module(source), module
        assert data.get("required", []) == source.get("required", []), module
        assert data["additionalProperties"] is False  # unknown fields are refused
    aliases = schemas["TransferData"]["properties"]
    assert {"transfer-type", "Transfer-Type"} <= set(aliases)

    actions = {r["$ref"] for r in schemas["ActionData"]["oneOf"]}
    assert actions == {f"#/components/schemas/{_camel(a)}Action" for a in POST_ACTIONS}
    for action in POST_ACTIONS:
        body = schemas[f"{_camel(action)}Action"]
        data = schemas[f"{_camel(action)}Data"]
        assert body["properties"]["action"]["enum"] == [action]
        assert {k: v for k, v in body["properties"].items() if k != "action"} == data["properties"]
        assert body["required"] == ["action", *data.get("required", [])]
        assert body["additionalProperties"] is False
    assert schemas["ActionRequest"]["properties"]["action"]["enum"] == list(POST_ACTIONS)


def _camel(module: str) -> str:
    return "".join(p.capitalize() for p in module.split("_"))


# -- routes and methods ---------------------------------------------------------------------------


def documented_path(rule: str) -> str:
    """A Flask rule as the document writes it: <account_id> and <path:name> as {ACCOUNT_ID}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: "{" + m[1].upper() + "}", rule)


def test_every_route_is_documented_and_every_documented_path_is_a_route(daemon: Harness) -> None:
    routes = {documented_path(r.rule) for r in daemon.daemon.app.url_map.iter_rules()}
    routes.add(daemon.daemon.config.websocket.path)
    assert routes == set(DOC["paths"])


class Sample:
    """A stand-in call and the concrete values that fill the document's path templates."""

    def __init__(self, h: Harness, switch: Any) -> None:
        self.h = h
        self.a, self.b = switch.bridged_call(variables_a=ALICE, variables_b=BOB)
        wait_until(lambda: h.table.get(self.a) and h.table.get(self.b), what="the call")
        self.values = {
            "ACCOUNT_ID": "acc1",
            "USER_ID": "user1",
            "DEVICE_ID": "dev1",
            "UUID": self.a,
            "NAME": "console.js",
        }

    def url(self, path: str, **values: str) -> str:
        filled = {**self.values, **values}
        return self.h.api.base + re.sub(r"\{([^}]+)\}", lambda m: filled[m[1]], path)


ALICE = {
    "account_id": "acc1",
    "owner_id": "user1",
    "authorizing_id": "dev1",
    "domain_name": "acc1.example",
}
BOB = {"account_id": "acc1", "owner_id": "user2", "authorizing_id": "dev2"}
ACCOUNT_STREAM = "/v2/accounts/{ACCOUNT_ID}/channel_events"


def test_each_path_takes_exactly_the_documented_methods(switch: Any, daemon: Harness) -> None:
    """Every method the document lists is taken (never 405); every other one is a 405 whose
    Allow header names what is (with HEAD and OPTIONS where they work)."""
    s = Sample(daemon, switch)
    headers = {"X-Auth-Token": token("super")}
    for path, item in DOC["paths"].items():
        documented = {m.upper() for m in METHODS if m in item}
        if path == daemon.daemon.config.websocket.path:
            allowed = documented  # only the upgrade
        else:
            allowed = documented | {"HEAD", "OPTIONS"}
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
            # A body that is no action: an allowed POST or PUT is refused (400) before anything
            # is sent; streams are closed at once.
            resp = requests.request(
                method,
                s.url(path),
                headers=headers,
                data=b"{}" if method in ("POST", "PUT") else None,
                stream=True,
                allow_redirects=False,
                timeout=10,
            )
            if method in allowed:
                resp.close()
                assert resp.status_code != 405, (method, path)
            else:
                assert resp.status_code == 405, (method, path, resp.status_code)
                listed = {m.strip() for m in resp.headers["Allow"].split(",")}
                assert listed == allowed, (method, path, listed)
                assert resp.headers["Content-Type"] == "application/json"
                if method != "HEAD":  # no body in an answer to HEAD
                    body = json.loads(resp.content)
                    assert body["message"] == "invalid_method"
                    assert set(body["data"]["allowed"]) == allowed


# -- statuses -----------------------------------------------------------------------------------


class Observed:
    """The statuses real requests produced, by operation; each one checked against the
    document as it comes: documented for that operation, content type and body included."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], set[int]] = defaultdict(set)

    def response_doc(self, method: str, path: str, status: int) -> tuple[str, dict[str, Any]]:
        op = DOC["paths"][path][method.lower()]
        documented = op["responses"]
        assert str(status) in documented, f"{method} {path} answered {status}: not documented"
        at = f"/paths/{escape(path)}/{method.lower()}/responses/{status}"
        response = documented[str(status)]
        if "$ref" in response:
            at, response = pointer(response["$ref"]), resolve(response["$ref"])
        return at, response

    def saw(
        self,
        method: str,
        path: str,
        status: int,
        headers: Any = None,
        body: bytes | None = None,
        expected: int | None = None,
    ) -> None:
        if expected is not None:
            assert status == expected, (method, path, status, (body or b"")[:300])
        at, response = self.response_doc(method, path, status)
        content = response.get("content", {})
        if headers is not None and content:
            media = headers.get("Content-Type", "").split(";")[0].strip()
            assert media in content, (method, path, status, media)
            if "X-Request-ID" in response.get("headers", {}):
                assert headers.get("X-Request-ID"), (method, path, status)
            if media == "application/json" and body is not None:
                schema = {"$ref": f"{_URI}#{at}/content/application~1json/schema"}
                validator = jsonschema.Draft4Validator(schema, registry=_REGISTRY)
                errors = [e.message for e in validator.iter_errors(json.loads(body))]
                assert errors == [], (method, path, status, errors[:3])
        self.seen[(method, path)].add(status)

    def http(self, method: str, path: str, resp: requests.Response, expected: int) -> Any:
        self.saw(method, path, resp.status_code, resp.headers, resp.content, expected)
        return resp


def raw_exchange(address: tuple[str, int], data: bytes, expect_close: bool = True) -> bytes:
    s = socket.create_connection(address, timeout=10)
    try:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if not expect_close and b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                length = re.search(rb"Content-Length: *(\d+)", head, re.IGNORECASE)
                if length and len(rest) >= int(length[1]):
                    break
        return out
    finally:
        s.close()


def parse_raw(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = requests.structures.CaseInsensitiveDict(
        line.split(": ", 1) for line in lines[1:] if ": " in line
    )
    return status, headers, body


def target(s: Sample, path: str) -> str:
    return s.url(path)[len(s.h.api.base) :]


def test_each_documented_status_is_produced_and_each_status_produced_is_documented(
    make_switch: Any, make_daemon: Any
) -> None:
    seen = Observed()
    main_switch, fault_switch, full_switch = make_switch(), make_switch(), make_switch()
    main = make_daemon(
        [main_switch],
        http={
            "max_body_bytes": 1024,
            "header_timeout": 0.5,
            "max_streams_per_token": 1,
            "trusted_proxies": ["127.0.0.1"],
        },
        websocket={"max_sockets": 2, "max_sockets_per_client": 1},
    )
    s = Sample(main, main_switch)
    _lists_and_channel(seen, s, main_switch)
    _actions(seen, s, main_switch)
    _streams(seen, s, main_switch)
    _websocket(seen, s)
    _open_routes(seen, s)
    _server_level(seen, s)
    _faults(seen, make_daemon([fault_switch], websocket={"enabled": False}), fault_switch)
    full = make_daemon([full_switch], http={"max_connections": 2, "max_streams": 2})
    _connection_limit(seen, full, full_switch)

    for method, path, op in operations():
        documented = {int(code) for code in op["responses"]}
        assert seen.seen[(method, path)] == documented, (method, path)


LISTS = (
    "/v2/channels",
    "/v2/accounts/{ACCOUNT_ID}/channels",
    "/v2/accounts/{ACCOUNT_ID}/users/{USER_ID}/channels",
    "/v2/accounts/{ACCOUNT_ID}/devices/{DEVICE_ID}/channels",
)
ONE = "/v2/accounts/{ACCOUNT_ID}/channels/{UUID}"
# Per list: a token and path values the route refuses (403).
REFUSED = {
    LISTS[0]: ("admin1", {}),
    LISTS[1]: ("admin2", {}),
    LISTS[2]: ("user1", {"USER_ID": "user2"}),
    LISTS[3]: ("admin2", {}),
}


def _get(s: Sample, path: str, tok: str | None = "super", **kw: Any) -> requests.Response:
    values = kw.pop("values", {})
    headers = {"X-Auth-Token": token(tok)} if tok else {}
    headers.update(kw.pop("headers", {}))
    method = kw.pop("method", "GET")
    return requests.request(
        method, s.url(path, **values), headers=headers, timeout=10, allow_redirects=False, **kw
    )


def _lists_and_channel(seen: Observed, s: Sample, switch: Any) -> None:
    ended, _ = switch.bridged_call(variables_a=ALICE, variables_b=BOB)
    wait_until(lambda: s.h.table.get(ended), what="a call to end")
    switch.hangup(ended)
    wait_until(lambda: len(s.h.daemon.ctx.ended) >= 2, what="the ended call kept")
    big = b"{" + b" " * 2000 + b"}"
    for path in LISTS:
        seen.http("GET", path, _get(s, path), 200)
        resp = seen.http("GET", path, _get(s, path, params={"ended": "true"}), 200)
        assert resp.json()["data"], path  # the ended call, in EndedCall's shape
        csv = seen.http("GET", path, _get(s, path, params={"accept": "csv"}), 200)
        assert csv.headers["Content-Type"] == "text/csv; charset=utf-8"
        pretty = {"pretty_print": "true", "filter_answered": "true", "key_missing": "nope"}
        seen.http("GET", path, _get(s, path, params=pretty), 200)
        too_many = {"has_key": ["uuid"] * 20, "key_missing": ["nope"] * 13}
        resp = seen.http("GET", path, _get(s, path, params=too_many), 400)
        assert "filters" in resp.json()["data"]
        seen.http("GET", path, _get(s, path, data=b"{"), 400)
        seen.http("GET", path, _get(s, path, tok=None), 401)
        tok, values = REFUSED[path]
        seen.http("GET", path, _get(s, path, tok, values=values), 403)
        if "{" in path:
            seen.http("GET", path, _get(s, path, values={"ACCOUNT_ID": "a%2Fb"}), 404)
        seen.http("GET", path, _get(s, path, data=big), 413)

    seen.http("GET", ONE, _get(s, ONE), 200)
    csv = seen.http("GET", ONE, _get(s, ONE, params={"accept": "csv"}), 200)
    assert csv.headers["Content-Type"] == "text/csv; charset=utf-8"
    seen.http("GET", ONE, _get(s, ONE, data=b"[]"), 400)
    seen.http("GET", ONE, _get(s, ONE, tok=None), 401)
    seen.http("GET", ONE, _get(s, ONE, "admin2"), 403)
    seen.http("GET", ONE, _get(s, ONE, values={"UUID": "deadbeef-0000"}), 404)
    seen.http("GET", ONE, _get(s, ONE, data=big), 413)


def _actions(seen: Observed, s: Sample, switch: Any) -> None:
    parked, _ = switch.originate(dest="9003", variables=ALICE)
    ringing, _ = switch.originate(dest="9004", variables=ALICE, answer=False)
    sip, _ = switch.bridged_call(
        variables_a=ALICE,
        variables_b=BOB,
        name_a="sofia/internal/1001@acc1.example",
        name_b="sofia/internal/1002@acc1.example",
    )
    wait_until(lambda: all(s.h.table.get(u) for u in (parked, ringing, sip)), what="the calls")

    def post(body: Any, uuid: str = parked, tok: str | None = "admin1", **kw: Any) -> Any:
        return _get(s, ONE, tok, method="POST", json=body, values={"UUID": uuid}, **kw)

    def put(module: str, data: Any, uuid: str = parked, tok: str | None = "admin1") -> Any:
        body = {"action": "metaflow", "data": {"module": module, "data": data}}
        return _get(s, ONE, tok, method="PUT", json=body, values={"UUID": uuid})

    big = b'{"data": {"action": "break"}' + b" " * 2000 + b"}"
    headers = {"Content-Type": "application/json"}
    seen.http("POST", ONE, post({"data": {"action": "break"}}), 200)
    seen.http("POST", ONE, post({"data": {"action": "nope"}}), 400)
    seen.http("POST", ONE, post({"data": {"action": "break"}}, tok=None), 401)
    seen.http("POST", ONE, post({"data": {"action": "break"}}, tok="admin2"), 403)
    seen.http("POST", ONE, post({"data": {"action": "break"}}, uuid="deadbeef-0000"), 404)
    intercept = {"action": "intercept", "target_type": "number", "target_id": "2000"}
    resp = seen.http("POST", ONE, post({"data": intercept}, uuid=ringing), 409)
    assert "no caller" in json.dumps(resp.json()["data"])
    seen.http("POST", ONE, post(None, data=big, headers=headers), 413)
    eavesdrop = {"action": "eavesdrop", "target_type": "device", "target_id": "dev9"}
    seen.http("POST", ONE, post({"data": eavesdrop}, uuid=s.a), 502)  # user/… undialable

    seen.http("PUT", ONE, put("break", {}), 201)
    seen.http("PUT", ONE, put("break", {"everything": True}), 400)
    seen.http("PUT", ONE, put("break", {}, tok=None), 401)
    seen.http("PUT", ONE, put("break", {}, tok="admin2"), 403)
    seen.http("PUT", ONE, put("break", {}, uuid="deadbeef-0000"), 404)
    seen.http("PUT", ONE, put("hold_control", {"action": "unhold"}, uuid=s.a), 409)  # loopback
    resp = _get(s, ONE, "admin1", method="PUT", data=big, headers=headers)
    seen.http("PUT", ONE, resp, 413)
    resp = seen.http("PUT", ONE, put("hold_control", {"action": "unhold"}, uuid=sip), 502)
    assert resp.json()["message"] == "-ERR Operation failed"


def _read_event(resp: requests.Response) -> tuple[str, Any]:
    """The stream's next event, read off the socket (iter_lines would close the stream
    when its generator goes)."""
    fields: dict[str, str] = {}
    while "event" not in fields:  # a `: keepalive` comment is no event
        while line := resp.raw.readline().decode().rstrip("\r\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return fields["event"], json.loads(fields["data"])


# What each kind of event carries (the stream's documented payloads).
EVENT_SCHEMAS = {
    "snapshot": {"type": "array", "items": {"$ref": f"{_URI}#/components/schemas/Channel"}},
    "create": {"$ref": f"{_URI}#/components/schemas/Channel"},
    "update": {"$ref": f"{_URI}#/components/schemas/StreamUpdate"},
    "destroy": {"$ref": f"{_URI}#/components/schemas/StreamDestroy"},
}


def _valid_event(kind: str, data: Any) -> None:
    jsonschema.Draft4Validator(EVENT_SCHEMAS[kind], registry=_REGISTRY).validate(data)


def _streams(seen: Observed, s: Sample, switch: Any) -> None:
    for path, tok in (("/v2/channel_events", "super"), (ACCOUNT_STREAM, "admin1")):
        first = _get(s, path, tok, stream=True, params={"filter_answered": "true"})
        try:
            seen.saw("GET", path, first.status_code, first.headers, None, 200)
            kind, items = _read_event(first)
            assert kind == "snapshot" and items
            _valid_event(kind, items)
            # a call that comes, is held and goes: create, update and destroy as documented,
            # each awaited before the next change (changes within 0.1 s make one message)
            a, _ = switch.bridged_call(variables_a=ALICE, variables_b=BOB)
            for change, kind in (
                (None, "create"),
                (switch.hold, "update"),
                (switch.hangup, "destroy"),
            ):
                if change is not None:
                    change(a)
                while (event := _read_event(first))[0] != kind:
                    _valid_event(*event)
                _valid_event(*event)
            # one stream per token here (http.max_streams_per_token = 1)
            seen.http("GET", path, _get(s, path, tok), 503)
        finally:
            first.close()
        wait_until(lambda: not len(s.h.daemon.ctx.subscriptions), what="the stream released")
        seen.http("GET", path, _get(s, path, tok, params={"has_key": ["uuid"] * 33}), 400)
        seen.http("GET", path, _get(s, path, tok=None), 401)
        seen.http("GET", path, _get(s, path, "admin2" if "{" in path else "admin1"), 403)
        if "{" in path:
            seen.http("GET", path, _get(s, path, values={"ACCOUNT_ID": "a%2Fb"}), 404)
        seen.http("GET", path, _get(s, path, data=b" " * 2000), 413)


def _handshake(xff: str, **extra: str) -> dict[str, str]:
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "X-Forwarded-For": xff,
        **extra,
    }


def _websocket(seen: Observed, s: Sample) -> None:
    ws, path = s.url("/websocket").replace("http://", "ws://"), "/websocket"
    seen.http("GET", path, _get(s, path, tok=None), 426)
    bad = _handshake("10.0.0.9", **{"Sec-WebSocket-Key": "short"})
    seen.http("GET", path, _get(s, path, tok=None, headers=bad), 400)
    # websocket.max_sockets_per_client = 1, websocket.max_sockets = 2 (clients told apart by
    # X-Forwarded-For from the trusted proxy 127.0.0.1)
    clients = [WsClient(ws, header=["X-Forwarded-For: 10.0.0.1"])]
    try:
        seen.saw("GET", path, clients[0].ws.getstatus(), None, None, 101)
        seen.http("GET", path, _get(s, path, tok=None, headers=_handshake("10.0.0.1")), 429)
        clients.append(WsClient(ws, header=["X-Forwarded-For: 10.0.0.2"]))
        for c in clients:
            assert c.subscribe(token("admin1"), "acc1", "call.*.*")["status"] == "success"
        seen.http("GET", path, _get(s, path, tok=None, headers=_handshake("10.0.0.3")), 503)
    finally:
        for c in clients:
            c.close()

    seen.http("GET", "/v2/websockets", _get(s, "/v2/websockets", tok=None), 200)


def _open_routes(seen: Observed, s: Sample) -> None:
    for path in ("/v2/openapi.json", "/healthz", "/readyz", "/metrics", "/console/"):
        seen.http("GET", path, _get(s, path, tok=None), 200)
    seen.http("GET", "/console", _get(s, "/console", tok=None), 308)
    seen.http("GET", "/console/{NAME}", _get(s, "/console/{NAME}", tok=None), 200)
    nope = _get(s, "/console/{NAME}", tok=None, values={"NAME": "nope.js"})
    seen.http("GET", "/console/{NAME}", nope, 404)
    for method, path, _ in operations():
        if method == "OPTIONS":
            preflight = {"Origin": "https://portal.example", "Access-Control-Request-Method": "GET"}
            resp = _get(s, path, tok=None, method="OPTIONS", headers=preflight)
            seen.http("OPTIONS", path, resp, 200)
            assert resp.headers["Access-Control-Allow-Origin"] == "*"


def _server_level(seen: Observed, s: Sample) -> None:
    """What the HTTP server answers on any path before the application runs: 400 for a request
    it cannot parse, 408 for a head that does not arrive (http.header_timeout 0.5), 414 for
    a request line over 8192 bytes."""
    address = s.h.daemon.http_address

    def exchange(method: str, path: str, kind: int, data: bytes) -> None:
        status, headers, body = parse_raw(raw_exchange(address, data))
        seen.saw(method, path, status, headers, body, kind)

    jobs = []
    for method, path, _ in operations():
        where = target(s, path)
        cases = {
            400: f"{method} {where} HTTP/1.1\r\nHost: x\r\nContent-Length: x1\r\n\r\n",
            408: f"{method} {where} HTTP/1.1\r\nHost: x\r\n",
            414: f"{method} {where}?q={'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",
        }
        for kind, text in cases.items():
            jobs.append(gevent.spawn(exchange, method, path, kind, text.encode()))
    gevent.joinall(jobs, raise_error=True)


def _faults(seen: Observed, h: Harness, switch: Any) -> None:
    """A switch that does not answer (504), then one that is gone (503); no websocket."""
    s = Sample(h, switch)
    seen.http("GET", "/v2/websockets", _get(s, "/v2/websockets", tok=None), 503)
    seen.http("GET", "/websocket", _get(s, "/websocket", tok=None), 404)
    hangup = {"data": {"action": "hangup"}}
    metaflow = {"action": "metaflow", "data": {"module": "hangup"}}
    # each hang-up goes through in the end (once the switch answers again): a call each
    calls = [switch.originate(dest="9003", variables=ALICE)[0] for _ in range(4)]
    wait_until(lambda: all(h.table.get(u) for u in calls), what="the calls")

    def send(method: str, body: Any, uuid: str) -> requests.Response:
        return _get(s, ONE, method=method, json=body, values={"UUID": uuid})

    for (method, body), uuid in zip((("POST", hangup), ("PUT", metaflow)), calls, strict=False):
        # a command that timed out ends the session: the next one waits for the new one
        wait_until(lambda: h.node().state == "ready", what="the node ready")
        switch.hang_commands = True
        try:
            seen.http(method, ONE, send(method, body, uuid), 504)
        finally:
            switch.hang_commands = False
    wait_until(lambda: h.node().state == "ready", what="the node ready")
    switch.pause_accept(True)
    switch.drop_connections()
    wait_until(lambda: h.node().state == "down", what="the node down")
    seen.http("POST", ONE, send("POST", hangup, calls[2]), 503)
    seen.http("PUT", ONE, send("PUT", metaflow, calls[3]), 503)
    seen.http("GET", "/readyz", _get(s, "/readyz", tok=None), 503)


def _connection_limit(seen: Observed, h: Harness, switch: Any) -> None:
    """Every connection busy (http.max_connections = 2, both streaming): any request gets 503
    `too many connections`, whatever its path."""
    s = Sample(h, switch)
    busy = [_get(s, "/v2/channel_events", stream=True) for _ in range(2)]
    try:
        assert [b.status_code for b in busy] == [200, 200]
        for method, path, _ in operations():
            data = f"{method} {target(s, path)} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            status, headers, body = parse_raw(raw_exchange(h.daemon.http_address, data))
            seen.saw(method, path, status, headers, body, 503)
            assert json.loads(body)["message"] == "too many connections"
    finally:
        for b in busy:
            b.close()
