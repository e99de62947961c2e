"""The plain POST action on one channel, answered without Flask's machinery.

An action's answer waits for the switch's reply, and everything channelsd does around that
round trip is added to it: Flask's request and response objects, routing, context push and
hooks were its largest share once the rest was cut (issue #16). Only the plain case is
answered here — POST on /v2/accounts/{account}/channels/{uuid}, no query string, a JSON
object as the body with its Content-Length, a header token that may see the account and is
not a `user` token, no pretty printing, a channel of that account — with the same body
reading, authentication, validation, plan and ESL gate as the Flask resource
(channelsd.actions does all of them), and the same envelope and metrics.

It is answered in one of two places. A request whose head and body came whole in one read
(a browser's small POST, any client that writes them together) is read by
channelsd.quickhead and answered by the HTTP server's actions' lane (`lane`), before pywsgi
reads it: its request line, headers, environ and input object, and the WSGI round of the
answer, were ~0.1 ms of an action's answer on the bench's host. One that pywsgi read (its
body came after its head, as requests writes it) is answered by the WSGI layer in front of
the Flask app (`fast_actions`). Both plan with `planner`.

Everything else goes to the Flask app, every refusal made before a command is sent included:
the body read here is handed on as it came (or its read error is, for Flask to answer it the
same way). Only what happens once the plan is being sent is answered here, in the envelope
the Flask app would use (channelsd.envelope.failure), since a plan must not run twice.
tests/test_fastactions.py checks that both places answer as Flask does, and
tests/test_quickhead.py that the quick reading frames a POST as pywsgi does.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson

from channelsd import envelope, strictjson, turns
from channelsd.envelope import ApiError
from channelsd.fastlists import ONE_CHANNEL, ONE_PATH
from channelsd.httpserver import DECLINED, YIELD_AFTER, ActionLane, LaneAnswer
from channelsd.presented import header_token, truthy
from channelsd.quickhead import BODY

if TYPE_CHECKING:
    from channelsd.api import ApiContext

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# (request id, method, path) -> the error to answer, the crash logged (the Flask app's own)
Crashed = Callable[[str | None, str, str], ApiError]


class _Unreadable(io.RawIOBase):
    """A body whose read failed here: it fails again, alike, when the Flask app reads it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        raise self.exc


Planner = Callable[
    [dict[str, Any], Callable[[int], bytes | None], float], Callable[[], LaneAnswer] | None
]


def planner(ctx: ApiContext, crashed: Crashed) -> Planner:
    """plan(environ, read, began): for a plain POST action, validated and planned, the call
    that sends it and gives its LaneAnswer; None, with nothing sent, for anything the Flask
    resource must see. `read(n)` gives the body's n bytes, or None when they cannot be read
    (it is asked only for a request that is plain so far). The call never raises for what
    happens once the plan is being sent (answered there: a plan must not run twice)."""
    table = ctx.table

    def plain(environ: dict[str, Any]) -> tuple[str, str, str, Any, int] | None:
        """The account, uuid, token text, token and body length of a plain POST action, or
        None for anything the Flask resource must see. Reads nothing from the client."""
        get = environ.get
        if get("REQUEST_METHOD") != "POST" or get("QUERY_STRING") or ctx.actions is None:
            return None
        path = get("PATH_INFO", "")
        if not path.isascii():
            return None  # werkzeug decodes non-ASCII paths its own way: leave those to it
        m = ONE_PATH.fullmatch(path)
        if m is None:
            return None
        declared = get("CONTENT_LENGTH") or ""
        if "HTTP_TRANSFER_ENCODING" in environ or not (declared.isascii() and declared.isdigit()):
            return None
        length = int(declared) if len(declared) <= 18 else 0
        if not 0 < length <= ctx.max_body_bytes:
            return None  # no body, or too large: the resource's answers
        if truthy(get("HTTP_X_PRETTY_PRINT")):
            return None
        presented = header_token(get("HTTP_X_AUTH_TOKEN"), get("HTTP_AUTHORIZATION"))
        if not presented:
            return None  # a token in the body or query, or none: the resource decides
        # The same authentication as the resource's (channelsd.tokens.Authenticator); a
        # refusal is the resource's to log and answer.
        token = ctx.auth.find(presented)
        account, uuid = m.groups()
        if token is None or token.role == "user" or not token.may_see_account(account):
            return None  # per-owner rules, another account (perhaps Kazoo's descendant)
        return account, uuid, presented, token, length

    def plan(
        environ: dict[str, Any], read: Callable[[int], bytes | None], began: float
    ) -> Callable[[], LaneAnswer] | None:
        found = plain(environ)
        if found is None:
            return None
        account, uuid, presented, token, length = found
        raw = read(length)
        if raw is None:
            return None
        try:
            body = strictjson.loads(raw)
        except ValueError:  # (orjson.JSONDecodeError is one)
            return None
        if not isinstance(body, dict):
            return None
        ch = next((c for c in table.with_uuid(uuid) if c.account_id == account), None)
        if ch is None:
            return None
        try:
            flow, planned = ctx.actions.plan_post(ch, body, {})
        except Exception:  # a refusal (or a bug): nothing was sent, the resource answers
            return None

        def run() -> LaneAnswer:
            # From here commands go out: whatever happens is answered here, never run twice.
            rid = envelope.request_id(environ.get("HTTP_X_REQUEST_ID"))
            environ[YIELD_AFTER] = True  # as the resource does for an action
            try:
                status, data = ctx.actions.run_post(ch, flow, planned, token)
            except ApiError as err:
                return failed(err, rid, environ, began)
            except Exception:
                err = crashed(rid, "POST", environ.get("PATH_INFO", ""))
                return failed(err, rid, environ, began)
            parts = envelope.success_parts(orjson.dumps(data), rid, presented)
            headers = [
                ("Content-Type", envelope.JSON_TYPE),
                ("Content-Length", str(sum(map(len, parts)))),
                ("X-Request-ID", rid),
            ]
            measure(status, began)
            return _status_line(status), headers, parts

        return run

    def failed(err: ApiError, rid: str, environ: dict[str, Any], began: float) -> LaneAnswer:
        # The envelope the Flask app would answer with, as its WSGI answer is made.
        body, status, headers = envelope.failure(err, rid).get_wsgi_response(environ)
        measure(err.status, began)
        return status, list(headers), tuple(body)

    def measure(status: int, began: float) -> None:
        if ctx.metrics is not None:
            seconds = time.perf_counter() - began
            turns.after_answer(ctx.metrics.http, ONE_CHANNEL, "POST", status, seconds)

    return plan


def lane(ctx: ApiContext, crashed: Crashed) -> ActionLane:
    """The plain POST actions as the HTTP server's action lane (httpserver.ActionLane) takes
    them: the environ of a request read whole by channelsd.quickhead, its body's bytes in it
    (quickhead.BODY)."""
    plan = planner(ctx, crashed)

    def ask(environ: dict[str, Any]) -> Callable[[], LaneAnswer] | None:
        return plan(environ, lambda _n: environ[BODY], time.perf_counter())

    return ask


def fast_actions(ctx: ApiContext, app: WSGIApp, crashed: Crashed) -> WSGIApp:
    """`app` with the plain POST actions answered in front of it (the lane's answers, for a
    server without an action lane or a request it could not read whole)."""
    plan = planner(ctx, crashed)

    def read(environ: dict[str, Any], length: int) -> bytes | None:
        """The body, as the resource reads it (channelsd.api.read_body_bytes): pywsgi's input
        ends where the Content-Length says. Handed on as it came, or its read error is, for
        the Flask app to answer the same way."""
        try:
            raw = environ["wsgi.input"].read(length)
        except Exception as exc:
            environ["wsgi.input"] = _Unreadable(exc)
            return None
        environ["wsgi.input"] = io.BytesIO(raw)  # for the resource, if it is its turn
        return raw

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        began = time.perf_counter()
        run = None if DECLINED in environ else plan(environ, lambda n: read(environ, n), began)
        if run is None:
            return app(environ, start_response)
        status, headers, body = run()
        start_response(status, headers)
        return body

    return wsgi


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"
