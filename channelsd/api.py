"""The Kazoo-compatible /v2 channels API: a Flask application factory over the channel table.

Each request walks the same path as crossbar's cb_channels: allowed methods → authenticate →
authorise → exists → validate → execute. Handlers only read the table (and, for actions,
hand validated requests to channelsd.actions); they never touch a socket themselves.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote

import orjson
from flask import Flask, Response, g, redirect, request, send_from_directory
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from channelsd import envelope, strictjson
from channelsd.blackhole.service import Websockets, available_bindings
from channelsd.channel import Channel
from channelsd.ended import Ended, EndedCalls
from channelsd.envelope import ApiError
from channelsd.fastactions import fast_actions
from channelsd.fastlists import fast_lists
from channelsd.health import LoopMonitor, readiness
from channelsd.httpserver import PUSHER, YIELD_AFTER
from channelsd.listing import Filters, ListCache, json_array, paced, splice, to_csv
from channelsd.metrics import CONTENT_TYPE as METRICS_TYPE
from channelsd.metrics import Metrics
from channelsd.peers import Peers
from channelsd.presented import header_token, truthy, wants_csv
from channelsd.stream import EVERY_ACCOUNT, Broker, Parked, subscribe
from channelsd.subscriptions import Refused, Subscription, Subscriptions
from channelsd.table import ChannelTable, Scope
from channelsd.tokens import Authenticator, Token, log_failure

log = logging.getLogger("channelsd.api")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, PUT, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": (
        "content-type, depth, user-agent, x-http-method-override, x-file-size, "
        "x-requested-with, if-modified-since, x-file-name, cache-control, x-auth-token, "
        "x-kazoo-cluster-id, if-match, x-request-id, authorization, x-pretty-print"
    ),
    "Access-Control-Expose-Headers": (
        "content-type, x-auth-token, x-request-id, x-kazoo-cluster-id, location, etag"
    ),
    "Access-Control-Max-Age": "86400",
}
# Every route takes every method, so that a 405 comes from the resource, which knows what it
# allows, in the API's envelope.
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]


@dataclass
class ApiContext:
    """What the HTTP side may use: read access to the table, tokens, and the action runner."""

    table: ChannelTable
    # Every token check goes through it: channelsd's own tokens and Kazoo's (a reload swaps it).
    auth: Authenticator
    system_wide_channels_list: bool = False
    max_body_bytes: int = 65536
    # Runs a POST action or PUT metaflow; set when channelsd.actions is wired in.
    actions: Any = None
    nodes: Mapping[str, Any] = field(default_factory=dict)
    broker: Broker | None = None
    metrics: Metrics | None = None
    loop: LoopMonitor | None = None
    # The plain list GETs and POST actions answered in front of Flask (channelsd.fastlists,
    # channelsd.fastactions); off in the tests that compare both.
    fast_lists: bool = True
    fast_actions: bool = True
    lists: ListCache = field(default_factory=ListCache)
    # Calls that ended in the last minutes (`?ended=true` on the list routes).
    ended: EndedCalls | None = None
    # Open event streams by token, for the limit and for revoking them at a reload.
    subscriptions: Subscriptions = field(default_factory=lambda: Subscriptions(256))
    peers: Peers = field(default_factory=Peers)
    # Kazoo's websocket for call events (channelsd.blackhole), at websocket.path.
    websockets: Websockets | None = None

    def system_list_refusal(self, token: Token) -> str | None:
        """Why this token may not read the system-wide list, or None when it may."""
        if token.role != "superduper":
            return "the system-wide list needs a superduper token"
        if not self.system_wide_channels_list:
            return "the system-wide list is disabled: set api.system_wide_channels_list = true"
        return None


@dataclass
class Call:
    """One authenticated request, as the handlers see it (crossbar's cb_context)."""

    token: Token
    token_text: str
    body: dict[str, Any] | None
    method: str


def _wants_csv() -> bool:
    return wants_csv(request.args.get("accept"), request.headers.get("Accept"))


def too_large(limit: int) -> ApiError:
    # The rest of the body is read and dropped by the server (bounded by body_timeout) before
    # the connection closes, so that the client reads this answer instead of a reset.
    return ApiError(
        413,
        "request too large",
        {"message": f"the body is larger than {limit} bytes (http.max_body_bytes)"},
        headers={"Connection": "close"},
    )


def read_body_bytes(environ: dict[str, Any], limit: int) -> bytes:
    """The whole request body, however it is framed, or an ApiError: 413 when it is longer
    than `limit` (never a prefix of it: werkzeug's stream stops at the limit without a word
    for a chunked body), 408 when it did not arrive in time, 400 when it could not be read."""
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise too_large(limit)
    try:
        # pywsgi's input ends where the framing (a length, or the last chunk) says.
        raw = environ["wsgi.input"].read(limit + 1)
    except (OSError, ValueError):
        if environ.get("channelsd.timeout"):
            raise envelope.request_timeout("request body") from None
        raise ApiError(
            400,
            "bad request",
            {"message": "the request body could not be read"},
            headers={"Connection": "close"},
        ) from None
    if len(raw) > limit:
        raise too_large(limit)
    return raw


def _read_body(limit: int) -> dict[str, Any] | None:
    """The JSON body, or None when there is none (jQuery sends empty bodies with GETs)."""
    raw = read_body_bytes(request.environ, limit)
    if not raw or not raw.strip():
        return None
    try:
        body = strictjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise envelope.invalid_json(f"the body is not valid JSON: {exc}") from None
    except ValueError as exc:  # a key twice in one object, nesting too deep
        raise envelope.invalid_json(f"the body is refused: {exc}") from None
    if not isinstance(body, dict):
        raise envelope.invalid_json("the body must be a JSON object (the request envelope)")
    return body


def _presented_token(body: dict[str, Any] | None) -> str | None:
    headers = request.headers
    token = header_token(headers.get("X-Auth-Token"), headers.get("Authorization"))
    if token is not None:
        return token or None
    if body:
        data = body.get("data")
        for source in (data if isinstance(data, dict) else {}, body):
            value = source.get("auth_token")
            if isinstance(value, str) and value:
                return value
    return request.args.get("auth_token") or None


class _Stream:
    """A stream's body that ends its subscription however it ends: read to the end,
    closed by the server when the client left, or never started at all."""

    def __init__(self, body: Iterator[bytes], sub: Subscription) -> None:
        self.body = body
        self.sub = sub

    def __iter__(self) -> Iterator[bytes]:
        return self.body

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.sub.release()


def _loggable(path: str) -> str:
    # A decoded path can hold spaces and line breaks: a log line must stay one line, and
    # nobody may write a fake "client=" into it for fail2ban to read.
    return quote(path, safe="/:@-._~!$&'()*+,;=")[:200]


def crashed(rid: str | None, method: str, path: str) -> ApiError:
    """A bug met while answering (called from an except block): logged with the request id
    and its traceback; the error to answer, in the envelope, never a traceback."""
    log.exception("request_id=%s unhandled error on %s %s", rid, method, path)
    return ApiError(500, "internal error", {"message": "internal error"})


def create_app(ctx: ApiContext) -> Flask:
    """The Flask application serving /v2 over `ctx`."""
    # No static folder: Flask would otherwise route /static/<path> to channelsd/static, a
    # route nobody documents (the console has its own).
    app = Flask("channelsd", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = ctx.max_body_bytes
    table = ctx.table

    # -- plumbing ----------------------------------------------------------------------------

    @app.before_request
    def _begin() -> None:
        g.began = time.perf_counter()
        g.rid = envelope.request_id(request.headers.get("X-Request-ID"))
        g.pretty = truthy(request.args.get("pretty_print")) or truthy(
            request.headers.get("X-Pretty-Print")
        )

    @app.after_request
    def _measure(resp: Response) -> Response:
        if ctx.metrics is not None:
            route = request.url_rule.rule if request.url_rule else "unmatched"
            ctx.metrics.http(route, request.method, resp.status_code, time.perf_counter() - g.began)
        return resp

    flask_wsgi = fast_lists(ctx, app.wsgi_app) if ctx.fast_lists else app.wsgi_app
    if ctx.fast_actions:
        flask_wsgi = fast_actions(ctx, flask_wsgi, crashed)
    # CORS headers go on every answer, errors included; added to the WSGI header list as
    # it leaves, which costs nothing per header (werkzeug validates each one it is given).
    cors = list(CORS_HEADERS.items())
    sockets = ctx.websockets

    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.extend(cors)
            return start_response(status, headers, exc_info)

        if sockets is not None and environ.get("PATH_INFO") == sockets.path:
            return sockets.app(environ, start)
        return flask_wsgi(environ, start)

    app.wsgi_app = wsgi_app  # type: ignore[method-assign]

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return envelope.failure(err, g.get("rid") or envelope.request_id(None), g.get("pretty"))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if isinstance(exc, ClientDisconnected) and request.environ.get("channelsd.timeout"):
            err = envelope.request_timeout("request body")
        elif isinstance(exc, RequestEntityTooLarge):
            err = too_large(ctx.max_body_bytes)
        elif exc.code == 404:
            err = envelope.not_found(request.path)
        elif exc.code == 405:
            err = envelope.method_not_allowed(sorted(getattr(exc, "valid_methods", None) or []))
        else:
            err = ApiError(exc.code or 500, exc.name.lower(), {"message": exc.description})
        return _api_error(err)

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Response:
        return _api_error(crashed(g.get("rid"), request.method, request.path))

    # -- crossbar-style resource -------------------------------------------------------------

    def resource(
        allowed: tuple[str, ...], handler: Callable[..., Response]
    ) -> Callable[..., Response]:
        def view(**params: str) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            if method == "OPTIONS":  # CORS preflight: no token, headers added below
                return Response(status=200)
            if method not in allowed:
                raise envelope.method_not_allowed(list(allowed))
            body = _read_body(ctx.max_body_bytes)
            presented = _presented_token(body)
            token, reason = ctx.auth.authenticate(presented) if presented else (None, "")
            if token is None:
                if presented:  # a wrong token, not a client that sent none: fail2ban's line
                    client = ctx.peers.client(request.environ)
                    log_failure(client, g.rid, _loggable(request.path), reason)
                raise envelope.invalid_credentials()
            return handler(Call(token, presented, body, method), **params)

        view.__name__ = handler.__name__
        return view

    def route(rule: str, allowed: tuple[str, ...]) -> Callable[[Callable[..., Response]], Any]:
        def register(handler: Callable[..., Response]) -> Any:
            app.add_url_rule(
                rule,
                view_func=resource(allowed, handler),
                methods=ALL_METHODS,
                strict_slashes=False,
            )
            return handler

        return register

    def route_open(rule: str) -> Callable[[Callable[[], Response]], Any]:
        """A GET resource without a token, in the API's envelope (405 for other methods)."""

        def register(handler: Callable[[], Response]) -> Any:
            def view() -> Response:
                if request.method == "OPTIONS":
                    return Response(status=200)
                if request.method not in ("GET", "HEAD"):
                    raise envelope.method_not_allowed(["GET"])
                return handler()

            view.__name__ = handler.__name__
            app.add_url_rule(rule, view_func=view, methods=ALL_METHODS, strict_slashes=False)
            return handler

        return register

    def reply(call: Call, data: Any, status: int = 200) -> Response:
        return envelope.success(data, g.rid, call.token_text, status, g.pretty)

    def authorise_account(call: Call, account_id: str) -> None:
        if not ctx.auth.may_act_on(call.token, call.token_text, account_id):
            raise envelope.forbidden(f"this token may not see account {account_id}")

    def owned(call: Call, owner_id: str | None, device_id: str | None) -> bool:
        """A `user` token sees only its owner's calls, or its devices' (spec §6, better than
        Kazoo); other tokens see every call of the accounts they may see."""
        tok = call.token
        if tok.role != "user" or owner_id == tok.owner_id:
            return True
        return device_id in table.identity.devices_of.get(tok.owner_id or "", ())

    def visible(call: Call, ch: Channel) -> bool:
        return owned(call, ch.owner_id, ch.authorizing_id)

    def visible_ended(call: Call, ended: Ended) -> bool:
        # (an ended call's owner and device are read from its item: only for a user's token)
        return call.token.role != "user" or owned(call, ended.owner_id, ended.device_id)

    def ended_listing(call: Call, calls: Iterable[Ended]) -> Response:
        """`?ended=true`: the calls of the last minutes, newest first, as the live list would
        narrow them (role, filters). Each call's item is made from its record when listed
        (~20 µs: channelsd.ended), paced like every loop of an answer."""
        filters = Filters(request.args.items(multi=True))
        kept = []
        for ended in paced(list(calls)):  # a copy: the calls may change while we pace
            if visible_ended(call, ended) and (not filters or filters.keep(ended.as_dict())):
                kept.append(ended)
        if g.pretty or _wants_csv():
            return respond_list(call, (ended.as_dict() for ended in paced(kept)))
        data = splice([ended.item for ended in paced(kept)])
        return envelope.success_json(data, g.rid, call.token_text)

    def listing(
        call: Call,
        scope: Scope | list[Channel],
        ended: Callable[[], Iterable[Ended]] | None = None,
    ) -> Response:
        if truthy(request.args.get("ended")):
            if ctx.ended is None or ended is None:
                raise ApiError(
                    503, "ended calls unavailable", {"message": "ended calls are not kept"}
                )
            return ended_listing(call, ended())
        now = time.time()
        filters = Filters(request.args.items(multi=True))
        channels = scope.ordered() if isinstance(scope, Scope) else scope  # order is kept
        shown: Scope | list[Channel] = scope  # a whole scope's answer can be kept a second
        if call.token.role == "user" or filters:
            shown = channels = [
                ch
                for ch in paced(channels)
                if visible(call, ch)
                and (not filters or filters.keep(ch.to_item(now, table.is_stale(ch))))
            ]
        if g.pretty or _wants_csv():  # these need the items as objects
            items = (ch.to_item(now, table.is_stale(ch)) for ch in paced(channels))
            return respond_list(call, items)
        parts = envelope.success_parts(ctx.lists.json(table, shown, now), g.rid, call.token_text)
        accept = request.headers.get("Accept-Encoding")
        body, encoding = ctx.lists.encoded(table, shown, parts, accept)
        resp = envelope.pieces_response(body, g.rid)
        resp.headers.extend(encoding)
        return resp

    def respond(call: Call, data: Any) -> Response:
        """One item, as JSON or CSV."""
        if _wants_csv():
            return csv_response(to_csv([data]))
        return reply(call, data)

    def respond_list(call: Call, items: Iterator[dict[str, Any]]) -> Response:
        """A list's items as CSV or JSON, each item made as it is written (paced by the
        writer) and freed at once: thousands of dicts alive together would be both a stall
        when freed and work for the garbage collector's full collections."""
        if _wants_csv():
            return csv_response(to_csv(items))
        array = json_array(items, g.pretty, nested=True)
        return envelope.success_json(array, g.rid, call.token_text, pretty=g.pretty)

    def csv_response(text: str) -> Response:
        resp = Response(text, status=200)
        resp.headers["Content-Type"] = "text/csv; charset=utf-8"
        resp.headers["X-Request-ID"] = g.rid
        return resp

    def lookup(call: Call, account_id: str, uuid: str) -> Channel:
        """The channel, or 404 alike for unknown, another account's, or not the user's."""
        for ch in table.with_uuid(uuid):  # the same uuid may live on two nodes
            if ch.account_id == account_id and visible(call, ch):
                return ch
        raise envelope.bad_identifier(uuid)

    # -- routes (spec §1) --------------------------------------------------------------------

    def system_channels_allowed(call: Call) -> None:
        refusal = ctx.system_list_refusal(call.token)
        if refusal is not None:
            raise envelope.forbidden(refusal)

    @route("/v2/channels", ("GET",))
    def system_channels(call: Call) -> Response:
        system_channels_allowed(call)
        return listing(call, table.all_scope(), lambda: ctx.ended.select())

    @route("/v2/accounts/<account_id>/channels", ("GET",))
    def account_channels(call: Call, account_id: str) -> Response:
        authorise_account(call, account_id)
        return listing(call, table.account_scope(account_id), lambda: ctx.ended.select(account_id))

    @route("/v2/accounts/<account_id>/users/<user_id>/channels", ("GET",))
    def user_channels(call: Call, account_id: str, user_id: str) -> Response:
        authorise_account(call, account_id)
        if call.token.role == "user" and user_id != call.token.owner_id:
            raise envelope.forbidden("a user token may only list its own user's channels")
        devices = table.identity.devices_of.get(user_id, ())
        return listing(
            call,
            table.by_user(account_id, user_id),
            lambda: ctx.ended.select(account_id, owner_id=user_id, devices=devices),
        )

    @route("/v2/accounts/<account_id>/devices/<device_id>/channels", ("GET",))
    def device_channels(call: Call, account_id: str, device_id: str) -> Response:
        authorise_account(call, account_id)
        return listing(
            call,
            table.device_scope(account_id, device_id),
            lambda: ctx.ended.select(account_id, device_id=device_id),
        )

    @route("/v2/accounts/<account_id>/channels/<uuid>", ("GET", "POST", "PUT"))
    def one_channel(call: Call, account_id: str, uuid: str) -> Response:
        authorise_account(call, account_id)
        ch = lookup(call, account_id, uuid)
        if call.method == "GET":
            return respond(call, ch.to_detail(time.time(), table.is_stale(ch)))
        if ctx.actions is None:
            raise ApiError(503, "actions unavailable", {"message": "actions are not enabled"})
        request.environ[YIELD_AFTER] = True  # the server lets a local client read the answer
        if call.method == "POST":
            status, data = ctx.actions.post(ch, call.body, request.args, call.token)
        else:
            status, data = ctx.actions.put(ch, call.body, request.args, call.token)
        return reply(call, data, status)

    # -- live events (SSE) -------------------------------------------------------------------

    def stream(
        call: Call,
        in_scope: Callable[[Channel], bool],
        snapshot: Callable[[], list[Channel]],
        scope_name: str,
        account_id: str | None = None,
    ) -> Response:
        if ctx.broker is None:
            raise ApiError(503, "streaming unavailable", {"message": "live events are not enabled"})
        filters = Filters(request.args.items(multi=True))

        def scope(ch: Channel) -> bool:
            return in_scope(ch) and visible(call, ch)

        def keep(item: dict[str, Any]) -> bool:
            return not filters or filters.keep(item)

        last = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
        broker = ctx.broker
        # (the broker's handle on this subscriber: its end wakes it alone)
        me = Parked(request.environ.get(PUSHER))
        try:
            sub = ctx.subscriptions.open(call.token, "channel_events", lambda: broker.wake_one(me))
        except Refused as full:
            if ctx.metrics is not None:
                ctx.metrics.http_refused.labels(full.reason).inc()
            raise envelope.too_many_streams(full.limit, full.key, full.whose) from None
        # A Kazoo token's stream ends at its exp, as its requests would start failing then;
        # and one on an account only Kazoo vouched for is asked again when that answer runs
        # out, ending when Kazoo no longer says yes (the websocket does the same).
        token = call.token
        due = None if account_id is None else ctx.auth.vouched_until(token, account_id)

        def ended() -> bool:
            nonlocal due
            if sub.ended or token.expired(time.time()):
                return True
            if due is not None and time.monotonic() >= due:
                assert account_id is not None
                if not ctx.auth.may_act_on(token, call.token_text, account_id):
                    return True
                due = ctx.auth.vouched_until(token, account_id)
            return False

        def ask_by() -> float:
            """When ended() must be asked again if nothing wakes the stream (monotonic)."""
            by = math.inf if due is None else due
            if token.expires is not None:
                by = min(by, time.monotonic() + token.expires - time.time())
            return by

        # Subscribers who see the same (scope, owner narrowing, filters) share one feed.
        narrowed = token.owner_id if token.role == "user" else None
        body = subscribe(
            broker,
            scope,
            keep,
            snapshot,
            last,
            ended,
            (scope_name, narrowed, filters.key()),
            me,
            ask_by,
            EVERY_ACCOUNT if account_id is None else account_id,
        )
        # A stream's client sends nothing after its request: the server says when it left,
        # so that its place is given back at once, not at the next keepalive write.
        watch = request.environ.get("channelsd.watch_disconnect")
        if watch is not None:
            watch(sub.end)
        resp = Response(_Stream(body, sub), status=200)
        resp.headers["Content-Type"] = "text/event-stream"
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Accel-Buffering"] = "no"
        resp.headers["X-Request-ID"] = g.rid
        return resp

    @route("/v2/channel_events", ("GET",))
    def system_events(call: Call) -> Response:
        system_channels_allowed(call)
        return stream(call, lambda ch: True, table.all, "*")

    @route("/v2/accounts/<account_id>/channel_events", ("GET",))
    def account_events(call: Call, account_id: str) -> Response:
        authorise_account(call, account_id)
        return stream(
            call,
            lambda ch: ch.account_id == account_id,
            lambda: table.by_account(account_id),
            f"account:{account_id}",
            account_id,
        )

    # -- Kazoo's websocket: what it offers (no token, as crossbar's cb_websockets) -----------

    @route_open("/v2/websockets")
    def websockets() -> Response:
        if ctx.websockets is None:
            raise ApiError(503, "websockets unavailable", {"message": "websocket.enabled is false"})
        return envelope.success(available_bindings(), g.rid, None, 200, g.pretty)

    # -- operations: no token, nothing sensitive ---------------------------------------------

    @app.get("/healthz")
    def healthz() -> Response:
        loop = ctx.loop
        ok = loop is None or loop.healthy
        body = {
            "status": "ok" if ok else "stuck",
            "loop_lag_seconds": round(loop.lag, 4) if loop else 0,
        }
        return envelope.json_response(body, 200 if ok else 503, g.rid)

    @app.get("/readyz")
    def readyz() -> Response:
        ready, nodes = readiness(ctx.nodes)
        body = {"status": "ready" if ready else "not ready", "nodes": nodes}
        return envelope.json_response(body, 200 if ready else 503, g.rid)

    console_dir = str(resources.files("channelsd") / "console")

    @app.get("/console")
    def console_page() -> Response:
        # A trailing slash makes the page's relative asset URLs resolve under /console/.
        return redirect("/console/", code=308)

    @app.get("/console/")
    @app.get("/console/<path:name>")
    def console(name: str = "index.html") -> Response:
        resp = send_from_directory(console_dir, name, max_age=0)
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    openapi = resources.files("channelsd").joinpath("openapi.json").read_bytes()

    @app.get("/v2/openapi.json")
    def openapi_document() -> Response:
        resp = Response(openapi, status=200)
        resp.headers["Content-Type"] = envelope.JSON_TYPE
        return resp

    @app.get("/metrics")
    def metrics() -> Response:
        if ctx.metrics is None:
            raise envelope.not_found(request.path)
        resp = Response(ctx.metrics.render(), status=200)
        resp.headers["Content-Type"] = METRICS_TYPE
        return resp

    if ctx.metrics is not None:
        # The route label is one of these (or "unmatched"), whatever path a client sends.
        routes = {r.rule for r in app.url_map.iter_rules()}
        if ctx.websockets is not None:
            routes.add(ctx.websockets.path)
        ctx.metrics.routes = frozenset(routes)
    return app
