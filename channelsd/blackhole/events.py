"""Kazoo's call events, as blackhole sends them, rendered from a channel of the table.

Kazoo's events come from FreeSWITCH through mod_kazoo's definitions (ecallmgr's
priv/mod_kazoo: call_event, caller-id, from-to, other-leg, call-duration, hangup-cause, …),
and blackhole hands them to the client with every key normalised to snake_case. The keys
here are those names, filled from what the table keeps of the channel:

* `event_name`, `event_category` ("call_event"), `call_id`, `timestamp` (Gregorian seconds,
  rounded up, of the moment channelsd heard the change), `call_direction`,
  `caller_id_name`/`_number`, `callee_id_name`/`_number`, `other_leg_call_id`,
  `caller_destination_number`, `channel_name`, `channel_state` (without `CS_`, as Kazoo
  strips it), `channel_call_state`, `channel_is_loopback`, `presence_id`, `request`,
  `user_agent`, `media_server` (the node's configured name);
* `to` and `from` as `user@realm`: the destination and the caller's number at the channel's
  realm (Kazoo reads them from the SIP URIs, which the table does not keep; for Kazoo's own
  calls they agree), the request URI or the presence id when the realm is unknown;
* `custom_channel_vars`: the channel's custom variables with Kazoo's normalised keys
  (`Account-ID` -> `account_id`), and the identity fields the table maps (`account_id`,
  `owner_id`, `authorizing_id`, `authorizing_type`, `username`, `realm`, `bridge_id`) set
  from the same values the REST API filters on, so an event says what its routing used;
* on CHANNEL_DESTROY: `hangup_cause`, `duration_seconds` and `billing_seconds` when
  FreeSWITCH said them (the duration counted from the channel's creation otherwise).

Keys whose value is unknown are left out, as Kazoo leaves out undefined ones.
"""

from __future__ import annotations

import math
from typing import Any

from channelsd.channel import GREGORIAN_OFFSET, Channel

# What blackhole's call bindings offer (bh_call's list, without the park events, which
# FreeSWITCH alone does not make).
EVENTS = (
    "CHANNEL_CREATE",
    "CHANNEL_ANSWER",
    "CHANNEL_DESTROY",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE",
)
# FreeSWITCH events that are also Kazoo call events of the same name, when the table applies
# them to a channel it already had.
ON_UPDATE = frozenset(("CHANNEL_ANSWER", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "CHANNEL_BRIDGE"))

_IDENTITY = (
    "account_id",
    "owner_id",
    "authorizing_id",
    "authorizing_type",
    "username",
    "realm",
    "bridge_id",
)
_PLAIN = (
    ("call_direction", "direction"),
    ("caller_id_name", "caller_id_name"),
    ("caller_id_number", "caller_id_number"),
    ("callee_id_name", "callee_id_name"),
    ("callee_id_number", "callee_id_number"),
    ("other_leg_call_id", "other_leg"),
    ("caller_destination_number", "destination"),
    ("channel_name", "name"),
    ("channel_call_state", "call_state"),
    ("presence_id", "presence_id"),
)


def normalise(key: str) -> str:
    """Kazoo's kz_json:normalize_key: lower case, `-` as `_`."""
    return key.lower().replace("-", "_")


def gregorian(now: float) -> int:
    return math.ceil(now) + GREGORIAN_OFFSET


def render(name: str, ch: Channel, now: float) -> dict[str, Any]:
    """The `data` of a blackhole call event `name` about `ch`, at `now` (Unix seconds)."""
    data: dict[str, Any] = {
        "event_name": name,
        "event_category": "call_event",
        "call_id": ch.uuid,
        "timestamp": gregorian(now),
        "channel_is_loopback": ch.is_loopback,
        "media_server": ch.node,
    }
    for key, attr in _PLAIN:
        value = getattr(ch, attr)
        if value is not None:
            data[key] = value
    if ch.state is not None:
        data["channel_state"] = ch.state.removeprefix("CS_")
    details = ch.details or {}
    request = details.get("request_uri")
    if request is not None:
        data["request"] = request
    if "user_agent" in details:
        data["user_agent"] = details["user_agent"]
    to, from_ = _addresses(ch, request)
    if to is not None:
        data["to"] = to
    if from_ is not None:
        data["from"] = from_
    data["custom_channel_vars"] = _ccvs(ch)
    if name == "CHANNEL_DESTROY":
        _ending(data, ch, now)
    return data


def _addresses(ch: Channel, request: str | None) -> tuple[str | None, str | None]:
    realm = ch.realm
    to = from_ = None
    if realm is not None:
        if ch.destination is not None:
            to = f"{ch.destination}@{realm}"
        if ch.caller_id_number is not None:
            from_ = f"{ch.caller_id_number}@{realm}"
    return to or request, from_ or ch.presence_id


def _ccvs(ch: Channel) -> dict[str, Any]:
    ccvs = {normalise(k): v for k, v in ch.ccvs.items()} if ch.ccvs else {}
    for key in _IDENTITY:
        value = getattr(ch, key)
        if value is not None:
            ccvs[key] = value
    return ccvs


def _ending(data: dict[str, Any], ch: Channel, now: float) -> None:
    end = ch.end_item(now)
    if "hangup_cause" in end:
        data["hangup_cause"] = end["hangup_cause"]
    data["duration_seconds"] = end.get(
        "duration_seconds", max(0, int(now) - ch.created_us // 1_000_000)
    )
    if "billing_seconds" in end:
        data["billing_seconds"] = end["billing_seconds"]
