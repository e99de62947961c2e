"""The messages of Kazoo's websocket, as monster-ui's monster.socket.js speaks them.

Client to server, JSON text frames:

    {"action": "subscribe", "auth_token": T, "request_id": R,
     "data": {"account_id": A, "binding": B}}          # or "bindings": [B, ...]
    {"action": "unsubscribe", ...the same...}
    {"action": "ping", "request_id": R}

Server to client: replies `{"action": "reply", "request_id": R, "status": "success" | "error",
"data": {...}}` with `request_id` echoed exactly (the client drops a reply without it), and
`data.errors`, `data.subscribed`, `data.unsubscribed` always arrays (the client calls
.forEach on them); events `{"action": "event", "subscribed_key": B, "subscription_key": …,
"name": …, "routing_key": …, "data": {...}}` (channelsd.blackhole.hub).

Error texts are Kazoo's (blackhole's bh_token_auth, bh_authz_subscribe, bh_events, bh_call):
monster-ui asks the user to sign in again only when one starts with "failed to authenticate
token", and only logs the others. Unlike Kazoo, the token itself is never appended to it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import orjson

from channelsd.blackhole.events import EVENTS

AUTH_FAILED = "failed to authenticate token"
TOKEN_REQUIRED = "authentication token required"
TOKEN_FORMAT = "invalid authentication token format"
UNAUTHORIZED_ACCOUNT = "unauthorized account id"
UNAUTHORIZED_WILDCARD = "unauthorized wildcard account id"
MISSING_DATA = "missing required keys in data object"
NO_SUBSCRIPTION = "no available subscriptions to requested binding"

WILDCARD = "*"
# A call id in place of the binding's last `*`: FreeSWITCH's uuids, and Kazoo's call ids,
# without the `.` that separates a binding's parts.
_CALL_ID = re.compile(r"[A-Za-z0-9_@:+=-]{1,128}")
MAX_BINDING_CHARS = 256
# A client's request_id is echoed as it came, when it is a short string or a number.
MAX_REQUEST_ID_CHARS = 256
BAD_REQUEST_ID = (
    f"request_id must be a string or a number of 1 to {MAX_REQUEST_ID_CHARS} characters"
)


class Refused(Exception):
    """A request refused with these error texts (the reply's data.errors)."""

    def __init__(self, *errors: str) -> None:
        super().__init__(errors[0] if errors else "")
        self.errors = list(errors)


@dataclass(frozen=True)
class Binding:
    """One parsed call binding: `call.<event or *>.<call id or *>`."""

    text: str  # exactly as the client wrote it: events carry it as subscribed_key
    event: str
    call_id: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.event, self.call_id)


def parse_binding(text: Any) -> Binding:
    if not isinstance(text, str) or not text or len(text) > MAX_BINDING_CHARS:
        raise Refused(NO_SUBSCRIPTION)
    parts = text.split(".")
    if parts[0] != "call":
        raise Refused(NO_SUBSCRIPTION)
    if len(parts) != 3:
        raise Refused("invalid format for call subscription : " + ", ".join(parts[1:]))
    _, event, call_id = parts
    if event != WILDCARD and event not in EVENTS:
        raise Refused(f"event {event} not supported")
    if call_id != WILDCARD and not _CALL_ID.fullmatch(call_id):
        raise Refused("invalid format for call subscription : " + ", ".join(parts[1:]))
    return Binding(text, event, call_id)


def fresh_id() -> str:
    """A request_id of our own, for a reply to a message that brought none we can echo."""
    return os.urandom(16).hex()


def request_id(message: dict[str, Any], text: str) -> tuple[Any, str | None]:
    """The request_id to echo and None, or a fresh one and why the client's is refused.

    Echoed exactly: a string of 1 to MAX_REQUEST_ID_CHARS characters, or a number as its JSON
    text (at most as long): orjson reads a 23-digit integer as a float, and 0.10 as 0.1, so a
    number goes back as the very digits that came. None or no request_id: a fresh one, as
    Kazoo makes one. Anything else (true, an object, an array, an empty or longer string or
    number) is refused, since the client could not match the reply to its request."""
    rid = message.get("request_id")
    if rid is None:
        return fresh_id(), None
    if isinstance(rid, str):
        if 0 < len(rid) <= MAX_REQUEST_ID_CHARS:
            return rid, None
    elif isinstance(rid, int | float) and not isinstance(rid, bool):
        digits = _number_text(text)
        if digits is not None and len(digits) <= MAX_REQUEST_ID_CHARS:
            return orjson.Fragment(digits), None
    return fresh_id(), BAD_REQUEST_ID


def _number_text(text: str) -> str | None:
    """The top-level request_id's number exactly as the client wrote it. Read again with the
    standard library, whose hooks see a number's text; only for numeric ids, which are rare
    (monster-ui sends strings). The message parsed with orjson already: this cannot fail,
    unless its nesting is deeper than Python's recursion allows."""
    try:
        value = json.loads(text, parse_int=str, parse_float=str).get("request_id")
    except (RecursionError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Request:
    """A subscribe or unsubscribe, its shape checked (not yet its token or account)."""

    action: str
    token: Any  # as sent: checked by the session, which knows how to log a refusal
    account_id: str | None
    bindings: tuple[Binding, ...]


def parse_request(action: str, message: dict[str, Any], max_bindings: int) -> Request:
    """The subscribe/unsubscribe in `message`, or Refused with Kazoo's texts."""
    data = message.get("data")
    if not isinstance(data, dict) or not data:
        raise Refused(MISSING_DATA)
    token = message.get("auth_token", data.get("auth_token"))
    account = data.get("account_id")
    if "binding" in data:
        raw = [data["binding"]]
    elif "bindings" in data:
        raw = data["bindings"]
        if not isinstance(raw, list) or not raw:
            raise Refused(NO_SUBSCRIPTION)
    else:
        raw = None
    missing = [k for k, v in (("account_id", account), ("binding", raw)) if v is None]
    if action == "unsubscribe" and missing == ["account_id"]:
        missing = []  # Kazoo's older form: this binding for every account of the socket
    if missing:
        raise Refused("missing required keys : " + ", ".join(missing))
    if account is not None and not isinstance(account, str):
        raise Refused(UNAUTHORIZED_ACCOUNT)
    if len(raw) > max_bindings:
        raise Refused(f"too many bindings: at most {max_bindings} per socket")
    bindings = tuple(dict.fromkeys(parse_binding(b) for b in raw))
    return Request(action, token, account, bindings)


def reply(rid: Any, status: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"action": "reply", "request_id": rid, "status": status, "data": data})


def error(rid: Any, *errors: str) -> bytes:
    return reply(rid, "error", {"errors": list(errors)})
