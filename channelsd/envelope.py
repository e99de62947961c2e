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
from datetime import UTC, datetime
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


def success_json(data: bytes, rid: str, auth_token: str | None, status: int = 200) -> Response:
    """success() for data serialised already: lists are spliced from cached items."""
    resp = Response(success_body(data, rid, auth_token), status=status)
    resp.headers["Content-Type"] = JSON_TYPE
    resp.headers["X-Request-ID"] = rid
    return resp


def success_body(data: bytes, rid: str, auth_token: str | None) -> bytes:
    return b"".join(success_parts(data, rid, auth_token))


def success_parts(data: bytes, rid: str, auth_token: str | None) -> tuple[bytes, bytes, bytes]:
    """The success envelope around `data` as three pieces, for a server to write one after
    the other: a long list is then sent as it is, never copied into a bigger buffer."""
    return b'{"data":', data, b"," + orjson.dumps(_success_rest(rid, auth_token))[1:]


def _success_rest(rid: str, auth_token: str | None) -> dict[str, Any]:
    """The envelope around `data`, in Kazoo's key order."""
    rest: dict[str, Any] = {"status": "success", "request_id": rid}
    if auth_token:
        rest["auth_token"] = auth_token
    rest.update(timestamp=_now(), node=NODE_ID, version=__version__)
    return rest


def failure(err: ApiError, rid: str, pretty: bool = False) -> Response:
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
    resp = json_response(body, err.status, rid, pretty)
    resp.headers.update(err.headers)
    return resp


# The shapes clients parse (spec §3 table).


def no_token() -> ApiError:
    return ApiError(401, "invalid_credentials", {"message": "invalid credentials"})


def bad_token() -> ApiError:
    return ApiError(401, "invalid credentials", {})


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


def invalid_json(message: str) -> ApiError:
    return ApiError(
        400, "invalid json", {"json": {"invalid": {"message": message, "target": "body"}}}
    )


def validation_error(errors: dict[str, Any]) -> ApiError:
    return ApiError(400, "validation error", errors)
