"""Kazoo's response envelope and error shapes (spec §3), in one place.

Every response is `Content-Type: application/json` to the letter: Kazoo's browser clients
compare that string, and a `; charset=…` suffix makes them lose the error body.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
from flask import Response

from channelsd import __version__

JSON_TYPE = "application/json"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ApiError(Exception):
    """An error the client gets in the spec's envelope: status, message, data."""

    def __init__(
        self,
        status: int,
        message: str,
        data: Any = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data
        self.headers = headers or {}
        self.extra = extra


def node_id() -> str:
    """Like Kazoo's: base64url of the md5 of this host's name, 22 characters."""
    digest = hashlib.md5(socket.gethostname().encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


NODE_ID = node_id()


def request_id(header: str | None) -> str:
    """Echo the client's X-Request-ID when it is a sane token, otherwise make one."""
    if header and _REQUEST_ID_RE.fullmatch(header):
        return header
    return os.urandom(16).hex()  # a random uuid's 32 hex digits, without building a UUID


_stamp: tuple[int, str] = (-1, "")


def _now() -> str:
    # Formatted once a second, not for every answer.
    global _stamp
    second = int(time.time())
    if second != _stamp[0]:
        _stamp = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return _stamp[1]


def _dump(body: dict[str, Any], pretty: bool) -> bytes:
    opts = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if pretty else 0)
    return orjson.dumps(body, option=opts)


def json_response(body: dict[str, Any], status: int, rid: str, pretty: bool = False) -> Response:
    resp = Response(_dump(body, pretty), status=status)
    resp.headers["Content-Type"] = JSON_TYPE
    resp.headers["X-Request-ID"] = rid
    return resp


def success(
    data: Any, rid: str, auth_token: str | None, status: int = 200, pretty: bool = False
) -> Response:
    if pretty:
        body: dict[str, Any] = {"data": data, **_success_rest(rid, auth_token)}
        return json_response(body, status, rid, pretty)
    return success_json(_dump(data, False), rid, auth_token, status)


def success_json(
    data: bytes, rid: str, auth_token: str | None, status: int = 200, pretty: bool = False
) -> Response:
    """success() for data serialised already: lists are spliced from cached items. Pretty:
    `data` is indented as orjson's OPT_INDENT_2 does it one level in."""
    parts = pretty_parts(data, rid, auth_token) if pretty else success_parts(data, rid, auth_token)
    return pieces_response(parts, rid, status)


def pieces_response(parts: Iterable[bytes], rid: str, status: int = 200) -> Response:
    """A JSON answer already in pieces, as they are (werkzeug sums a list's Content-Length):
    a list of several MB is written, not copied once more."""
    resp = Response(list(parts), status=status)
    resp.headers["Content-Type"] = JSON_TYPE
    resp.headers["X-Request-ID"] = rid
    return resp


def success_body(data: bytes, rid: str, auth_token: str | None) -> bytes:
    return b"".join(success_parts(data, rid, auth_token))


def success_parts(data: bytes, rid: str, auth_token: str | None) -> tuple[bytes, bytes, bytes]:
    """The success envelope around `data` as three pieces, for a server to write one after
    the other: a long list is then sent as it is, never copied into a bigger buffer."""
    return b'{"data":', data, b"," + orjson.dumps(_success_rest(rid, auth_token))[1:]


def pretty_parts(data: bytes, rid: str, auth_token: str | None) -> tuple[bytes, bytes, bytes]:
    """success_parts() pretty-printed, byte for byte as success(..., pretty=True) prints it,
    around `data` pretty-printed one level in (channelsd.listing.json_array(nested=True))."""
    rest = _dump(_success_rest(rid, auth_token), True)
    return b'{\n  "data": ', data, b",\n" + rest[2:]


def _success_rest(rid: str, auth_token: str | None) -> dict[str, Any]:
    """The envelope around `data`, in Kazoo's key order."""
    rest: dict[str, Any] = {"status": "success", "request_id": rid}
    if auth_token:
        rest["auth_token"] = auth_token
    rest.update(timestamp=_now(), node=NODE_ID, version=__version__)
    return rest


def _failure_body(err: ApiError, rid: str) -> dict[str, Any]:
    # The token is never echoed in an error: error bodies end up in logs and tickets.
    body: dict[str, Any] = {
        "status": "error",
        "error": str(err.status),
        "message": err.message,
    }
    if err.data is not None:
        body["data"] = err.data
    body.update(err.extra)
    body.update(request_id=rid, timestamp=_now(), node=NODE_ID, version=__version__)
    return body


def failure(err: ApiError, rid: str, pretty: bool = False) -> Response:
    resp = json_response(_failure_body(err, rid), err.status, rid, pretty)
    resp.headers.update(err.headers)
    return resp


def failure_json(err: ApiError) -> tuple[str, bytes]:
    """A fresh request id and the error's JSON body, for the HTTP server's own answers."""
    rid = request_id(None)
    return rid, _dump(_failure_body(err, rid), False)


def raw_failure(err: ApiError, extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole HTTP/1.1 error response, status line to body, for the HTTP server to write
    where no application runs (connection refused at the limit, a request that timed out);
    the connection is closed after it."""
    rid, body = failure_json(err)
    reason = HTTPStatus(err.status).phrase
    headers = [
        ("Content-Type", JSON_TYPE),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
        ("X-Request-ID", rid),
        *err.headers.items(),
        *extra_headers,
    ]
    head = f"HTTP/1.1 {err.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


# The shapes clients parse (spec §3 table).


def invalid_credentials() -> ApiError:
    """One 401 for a missing, malformed or unknown token: crossbar's own system error
    (cb_context:add_system_error('invalid_credentials')), which its api_util answers when
    no authentication module accepts the request. Telling the cases apart would only help
    someone probing for tokens."""
    return ApiError(401, "invalid_credentials", {"message": "invalid credentials"})


def forbidden(reason: str) -> ApiError:
    return ApiError(403, "forbidden", {"message": "forbidden", "reason": reason})


def bad_identifier(uuid: str) -> ApiError:
    return ApiError(404, "bad identifier", [uuid])


def not_found(path: str) -> ApiError:
    return ApiError(404, "not found", {"message": f"no such resource: {path}"})


def method_not_allowed(allowed: list[str]) -> ApiError:
    # RFC 9110: a 405 names what is allowed. OPTIONS (CORS preflight) always is.
    methods = list(dict.fromkeys([*allowed, *(["HEAD"] if "GET" in allowed else []), "OPTIONS"]))
    return ApiError(
        405,
        "invalid_method",
        {"message": "method not allowed", "allowed": methods},
        headers={"Allow": ", ".join(methods)},
    )


def too_many_connections() -> ApiError:
    return ApiError(
        503,
        "too many connections",
        {"message": "the server is at its connection limit (http.max_connections); retry"},
        headers={"Retry-After": "1"},
    )


def too_many_streams(limit: int, key: str = "http.max_streams", whose: str = "") -> ApiError:
    """At a stream limit: `key` names it in the config, `whose` says whose streams count."""
    return ApiError(
        503,
        "too many streams",
        {"message": f"{limit} event streams are open{whose}, the limit ({key}); retry"},
        headers={"Retry-After": "5"},
    )


def request_timeout(what: str) -> ApiError:
    return ApiError(408, "request timeout", {"message": f"the {what} did not arrive in time"})


def invalid_json(message: str) -> ApiError:
    return ApiError(
        400, "invalid json", {"json": {"invalid": {"message": message, "target": "body"}}}
    )


def validation_error(errors: dict[str, Any]) -> ApiError:
    return ApiError(400, "validation error", errors)
