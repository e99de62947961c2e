"""The plain channel lists and single-channel GETs, answered without Flask's machinery.

A portal polls its account's list. At a thousand requests a second Flask's request and
response objects, routing, context push and hooks cost more than building the list itself
(profiles in BENCHMARKS.md). This WSGI layer answers only the plain case — GET, no query
string, no body, a header token that may see the list and is not a `user` token, JSON without
pretty printing — from the same table reads, list builder, envelope and metrics as the Flask
resource; so is the plain single-channel GET that finds its channel. Everything else, every
error included, goes to the Flask app, so the API's rules and error shapes live in one place;
tests/test_fastlists.py checks that both answer alike.

channelsd's HTTP server asks the same `answers` first, before its WSGI machinery
(httpserver.Handler's fast lane): what they answer there is written as this layer would have
it written, and what they leave is marked (DECLINED) so that this layer does not ask again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from channelsd import envelope
from channelsd.channel import Channel
from channelsd.httpserver import DECLINED
from channelsd.presented import header_token, truthy, wants_csv
from channelsd.table import Scope

if TYPE_CHECKING:
    from channelsd.api import ApiContext
    from channelsd.httpserver import Lane

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# An answer: the body's pieces, its encoding headers, the request id, the route (for metrics).
Answer = tuple[tuple[bytes, ...], tuple[tuple[str, str], ...], str, str]
Answers = Callable[[dict[str, Any]], Answer | None]

# (Flask's rule, for the metrics label; the same rule as a pattern on PATH_INFO)
_ROUTES = tuple(
    (rule, re.compile(pattern))
    for rule, pattern in (
        ("/v2/channels", r"/v2/channels/?"),
        ("/v2/accounts/<account_id>/channels", r"/v2/accounts/([^/]+)/channels/?"),
        (
            "/v2/accounts/<account_id>/users/<user_id>/channels",
            r"/v2/accounts/([^/]+)/users/([^/]+)/channels/?",
        ),
        (
            "/v2/accounts/<account_id>/devices/<device_id>/channels",
            r"/v2/accounts/([^/]+)/devices/([^/]+)/channels/?",
        ),
    )
)


ONE_CHANNEL = "/v2/accounts/<account_id>/channels/<uuid>"
# ONE_CHANNEL as a pattern on PATH_INFO (the POST actions in front of Flask use it too)
ONE_PATH = re.compile(r"/v2/accounts/([^/]+)/channels/([^/]+)")


def _route(path: str) -> tuple[str, tuple[str, ...]] | None:
    if not path.isascii():
        return None  # werkzeug decodes non-ASCII paths its own way: leave those to it
    if not path.endswith(("/channels", "/channels/")):
        m = ONE_PATH.fullmatch(path)
        return (ONE_CHANNEL, m.groups()) if m is not None else None
    for rule, pattern in _ROUTES:
        m = pattern.fullmatch(path)
        if m is not None:
            return rule, m.groups()
    return None


def answers(ctx: ApiContext) -> Answers:
    """The plain GETs' answers from `ctx`'s table (the module's doc), or None where the
    Flask resource has something else to say."""
    table = ctx.table

    def channels_for(
        rule: str, params: tuple[str, ...], token: Any
    ) -> Scope | list[Channel] | None:
        """The list, or None where the Flask resource has something else to say."""
        if token.role == "user":  # filtered per channel owner: the resource's job
            return None
        if not params:
            return table.all_scope() if ctx.system_list_refusal(token) is None else None
        account = params[0]
        if not token.may_see_account(account):
            return None  # another account: perhaps Kazoo's descendant, the resource asks
        if len(params) == 1:
            return table.account_scope(account)
        if "/users/" in rule:
            return table.by_user(account, params[1])
        return table.device_scope(account, params[1])

    def one_channel(params: tuple[str, ...], token: Any) -> bytes | None:
        """The single-channel object, or None where the resource has something else to say
        (a user token, another account, no such channel: its 403s and 404s)."""
        account, uuid = params
        if token.role == "user" or not token.may_see_account(account):
            return None
        for ch in table.with_uuid(uuid):
            if ch.account_id == account:
                return orjson.dumps(ch.to_detail(time.time(), table.is_stale(ch)))
        return None

    def answer(environ: dict[str, Any]) -> Answer | None:
        get = environ.get
        if get("REQUEST_METHOD") != "GET" or get("QUERY_STRING"):
            return None
        route = _route(get("PATH_INFO", ""))
        if route is None:
            return None
        if get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ:
            return None  # a body may carry a token or be malformed: the resource decides
        if truthy(get("HTTP_X_PRETTY_PRINT")) or wants_csv(None, get("HTTP_ACCEPT")):
            return None
        presented = header_token(get("HTTP_X_AUTH_TOKEN"), get("HTTP_AUTHORIZATION"))
        # The same authentication as the resource's (channelsd.tokens.Authenticator): a
        # Kazoo token verified once is a dictionary lookup here until its cache entry ends.
        token = ctx.auth.find(presented) if presented else None
        if token is None:
            return None
        rule, params = route
        if rule is ONE_CHANNEL:
            data = one_channel(params, token)
            if data is None:
                return None
            rid = envelope.request_id(get("HTTP_X_REQUEST_ID"))
            return envelope.success_parts(data, rid, presented), (), rid, rule
        channels = channels_for(rule, params, token)
        if channels is None:
            return None
        data = ctx.lists.json(table, channels, time.time())
        rid = envelope.request_id(get("HTTP_X_REQUEST_ID"))
        parts = envelope.success_parts(data, rid, presented)
        return (*ctx.lists.encoded(table, channels, parts, get("HTTP_ACCEPT_ENCODING")), rid, rule)

    return answer


def lane(ctx: ApiContext) -> Lane:
    """The plain GETs as the HTTP server's fast lane (httpserver.Lane) takes them: a 200's
    headers and body, counted in the metrics; a request they leave is marked DECLINED, so
    that it is not asked about twice."""
    answer = answers(ctx)

    def ask(environ: dict[str, Any]) -> tuple[list[tuple[str, str]], tuple[bytes, ...]] | None:
        began = time.perf_counter()
        done = answer(environ)
        if done is None:
            environ[DECLINED] = True
            return None
        body, encoding, rid, rule = done
        if ctx.metrics is not None:
            ctx.metrics.http(rule, "GET", 200, time.perf_counter() - began)
        headers = [
            ("Content-Type", envelope.JSON_TYPE),
            ("Content-Length", str(sum(map(len, body)))),
            ("X-Request-ID", rid),
            *encoding,
        ]
        return headers, body

    return ask


def fast_lists(ctx: ApiContext, app: WSGIApp) -> WSGIApp:
    """`app` with the plain list GETs answered in front of it (the lane's answers, for a
    server without a lane or a request it did not take)."""
    ask = lane(ctx)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        got = None if DECLINED in environ else ask(environ)
        if got is None:
            return app(environ, start_response)
        headers, body = got
        start_response("200 OK", headers)
        return body

    return wsgi
