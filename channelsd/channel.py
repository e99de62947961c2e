"""One FreeSWITCH channel as the API shows it: its fields, how it ended, and its JSON forms.

The table (channelsd.table) decides what each event changes; this module holds the value it
changes and renders it: the list item (spec §2), the single-channel object, and what the
streams say when it ends. Values from the switch enter through `usable()`: FreeSWITCH sends
strings, and arrays of strings for multi-valued variables, nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from channelsd.validate import whole_number

GREGORIAN_OFFSET = 62167219200  # seconds from 0000-01-01 to 1970-01-01, as Kazoo counts

Event = dict[str, Any]

# Longest text kept from the switch for one field; longer values are refused and counted (a
# dialplan may map identity to a SIP header a caller writes).
MAX_VALUE_CHARS = 2048


def usable(v: Any) -> str | None:
    """A header value as the text a field may hold, or None for one it must not.

    FreeSWITCH sends strings, and arrays of strings for multi-valued variables (the first value
    names it). Anything else (an object, a number) or an absurdly long text comes from a broken
    or hostile source: the field keeps what it had."""
    if v.__class__ is list:
        v = v[0] if v else None
    if v.__class__ is str and 0 < len(v) <= MAX_VALUE_CHARS:
        return v
    return None


def first(event: Event, headers: Iterable[str]) -> str | None:
    for h in headers:
        v = event.get(h)
        if v and (v := usable(v)) is not None:
            return v
    return None


# What the switch says about a call's media and signalling (the SIP capture s8 carries each):
# read from events that carry variables, kept only for channels that have them, shown in the
# single-channel object. Numbers are sent as numbers.
DETAIL_CHAINS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("read_codec", ("Channel-Read-Codec-Name",)),
    ("read_rate", ("Channel-Read-Codec-Rate",)),
    ("write_codec", ("Channel-Write-Codec-Name",)),
    ("write_rate", ("Channel-Write-Codec-Rate",)),
    ("remote_media_ip", ("variable_remote_media_ip",)),
    ("remote_media_port", ("variable_remote_media_port",)),
    ("sip_call_id", ("variable_sip_call_id",)),
    ("user_agent", ("variable_sip_user_agent",)),
    ("network_ip", ("variable_sip_network_ip", "Caller-Network-Addr")),
    ("network_port", ("variable_sip_network_port",)),
    ("request_uri", ("variable_sip_req_uri",)),
    ("transport", ("variable_sip_via_protocol",)),
    ("gateway", ("variable_sip_gateway_name",)),
    ("application", ("variable_current_application",)),
    ("crypto_suite", ("variable_rtp_has_crypto",)),
)
NUMERIC_DETAILS = frozenset(("read_rate", "write_rate", "remote_media_port", "network_port"))
# Details particular to one call: details without any of these can be shared between channels.
PERSONAL_DETAILS = frozenset(
    (
        "remote_media_ip",
        "remote_media_port",
        "sip_call_id",
        "network_ip",
        "network_port",
        "request_uri",
        "crypto_suite",
    )
)
# Encrypted media, as FreeSWITCH confirms it once negotiated (SDES/DTLS-SRTP, ZRTP). Read from
# FreeSWITCH's variable names (switch_core_media.c); not seen on a real switch here: the SIP
# capture's call was plain RTP.
SECURE_MEDIA = (
    ("srtp", "variable_rtp_secure_media_confirmed_audio"),
    ("srtp", "variable_rtp_secure_media_confirmed"),
    ("zrtp", "variable_zrtp_secure_media_confirmed_audio"),
)


def kept_json(obj: Any) -> bytes:
    """orjson.dumps(obj) for bytes that are kept (a ring, a store): orjson's result holds the
    whole buffer it grew while writing, ~8 KiB resident for 1 KiB of JSON; a copy holds what
    it says."""
    return bytes(memoryview(orjson.dumps(obj)))


def endpoint_of(name: str | None) -> str | None:
    """The endpoint module a channel name starts with: `sofia`, `loopback`, `verto`, ..."""
    if name and "/" in name:
        return name.partition("/")[0] or None
    return None


# The headers Ending reads (the table declares every header it reads: ChannelTable.headers_read).
ENDING_HEADERS = (
    "Hangup-Cause",
    "variable_hangup_cause",
    "variable_sip_hangup_disposition",
    "variable_duration",
    "variable_billsec",
    "Caller-Channel-Hangup-Time",
    "variable_rtp_audio_in_mos",
)


class Ending:
    """How a channel ended, as FreeSWITCH reports it on its last events (HANGUP,
    HANGUP_COMPLETE, DESTROY): kept on the channel only once it hangs up."""

    __slots__ = ("cause", "disposition", "duration", "billsec", "mos", "hangup_us", "complete")

    def __init__(self) -> None:
        # Once the CDR variables were read (HANGUP_COMPLETE, or DESTROY if that was lost),
        # later events have nothing to add.
        self.complete = False
        self.cause: str | None = None
        self.disposition: str | None = None  # variable_sip_hangup_disposition: who sent the BYE
        self.duration: int | None = None
        self.billsec: int | None = None
        self.mos: float | None = None
        self.hangup_us: int | None = None

    def note_cause(self, e: Event) -> None:
        """CHANNEL_HANGUP: the cause is known; the rest comes with HANGUP_COMPLETE."""
        cause = first(e, ("Hangup-Cause", "variable_hangup_cause"))
        if cause is not None:
            self.cause = cause

    def merge(self, e: Event) -> None:
        self.note_cause(e)
        if "variable_billsec" in e:
            self.complete = True
        disposition = first(e, ("variable_sip_hangup_disposition",))
        if disposition is not None:
            self.disposition = disposition
        for attr, header in (
            ("duration", "variable_duration"),
            ("billsec", "variable_billsec"),
            ("hangup_us", "Caller-Channel-Hangup-Time"),
        ):
            n = whole_number(e.get(header))
            if n is not None:
                setattr(self, attr, n)
        mos = first(e, ("variable_rtp_audio_in_mos",))
        if mos is not None:
            try:
                value = float(mos)
            except ValueError:
                value = None
            if value is not None and 0.0 <= value <= 5.0:
                self.mos = value


class Channel:
    """One live FreeSWITCH channel as the API shows it."""

    __slots__ = (
        "node",
        "uuid",
        "key",
        "name",
        "direction",
        "destination",
        "answered",
        "other_leg",
        "presence_id",
        "created_us",
        "account_id",
        "owner_id",
        "authorizing_id",
        "authorizing_type",
        "username",
        "realm",
        "bridge_id",
        "caller_id_name",
        "caller_id_number",
        "callee_id_name",
        "callee_id_number",
        "is_onhold",
        "is_loopback",
        "ccvs",
        "state",
        "call_state",
        "interaction_id",
        "loopback_other_leg",
        "last_seen",
        "cached",
        "vars_seen",
        "ending",
        "details",
        "recordings",
        "created_known",
    )

    def __init__(self, node: str, uuid: str) -> None:
        self.node = node
        self.uuid = uuid
        # The row's key in every index of the table: one tuple shared by all of them.
        self.key = (node, uuid)
        self.name = self.direction = self.destination = self.other_leg = None
        self.presence_id = self.account_id = self.owner_id = self.authorizing_id = None
        self.authorizing_type = self.username = self.realm = self.bridge_id = None
        self.caller_id_name = self.caller_id_number = None
        self.callee_id_name = self.callee_id_number = None
        self.state = self.call_state = self.interaction_id = self.loopback_other_leg = None
        self.ccvs: dict[str, Any] | None = None
        self.answered = self.is_onhold = self.is_loopback = False
        self.created_us = int(time.time() * 1_000_000)
        # Until an event says when FreeSWITCH created it (an early one may say 0), the time
        # channelsd first heard of it stands in.
        self.created_known = False
        self.last_seen = 0.0
        # Whether any event (or uuid_dump) with the channel's variables reached the table: until
        # one does, a missing account means "not heard yet", not "none" (reconcile asks).
        self.vars_seen = False
        self.ending: Ending | None = None
        # DETAIL_CHAINS' keys this channel's events carried (None for most loopback legs).
        self.details: dict[str, Any] | None = None
        # Files being recorded now, from RECORD_START / RECORD_STOP (whoever started them).
        self.recordings: tuple[str, ...] = ()
        # json_base(), kept by the table's items_json() and cleared whenever the table
        # changes the channel: lists are spliced from bytes, not serialised on every read.
        self.cached: bytes | None = None

    def rename(self, uuid: str) -> None:
        self.uuid = uuid
        self.key = (self.node, uuid)

    @property
    def timestamp(self) -> int:
        """Creation time in Gregorian seconds, as Kazoo reports it."""
        return self.created_us // 1_000_000 + GREGORIAN_OFFSET

    def sort_key(self) -> tuple[int, str, str]:
        # The node last: one uuid on two nodes (a dialplan's origination_uuid) is two rows,
        # and a kept list order needs a place for each that a search can find again.
        return (self.created_us // 1_000_000, self.uuid, self.node)

    def to_item(self, now: float, stale: bool) -> dict[str, Any]:
        """The list item of spec §2: unknown values omitted, booleans always present."""
        item = self._build_item()
        item["stale"] = stale
        item["elapsed_s"] = self.elapsed(now)
        return item

    def fixed_item(self) -> dict[str, Any]:
        """to_item() without its moving parts (stale, elapsed_s)."""
        item = self._build_item()
        del item["stale"], item["elapsed_s"]
        return item

    def json_base(self) -> bytes:
        """fixed_item() as JSON without its closing brace, for `cached`."""
        return orjson.dumps(self.fixed_item())[:-1]

    def elapsed(self, now: float) -> int:
        """Whole seconds now minus whole seconds at creation, as Kazoo computes it: every item
        of an answer has timestamp + elapsed_s equal to the same now, and within one
        wall-clock second an unchanged list reads the same."""
        return max(0, int(now) - self.created_us // 1_000_000)

    def _build_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "uuid": self.uuid,
            "answered": self.answered,
            "is_onhold": self.is_onhold,
            "is_loopback": self.is_loopback,
            "is_recording": bool(self.recordings),
            "is_secure": bool(self.details and "secure_media" in self.details),
            "stale": False,
            "node": self.node,
            "timestamp": self.timestamp,
            "elapsed_s": 0,
            "bridge_id": self.bridge_id or self.uuid,
            "custom_channel_vars": dict(self.ccvs) if self.ccvs else {},
        }
        for attr in OPTIONAL_ITEM_KEYS:
            v = getattr(self, attr)
            if v is not None:
                item[attr] = v
        endpoint = endpoint_of(self.name)
        if endpoint is not None:
            item["endpoint"] = endpoint
        return item

    def end_item(self, now: float) -> dict[str, Any]:
        """What the streams say when the channel goes: its uuid and, when it hung up (rather
        than being renamed or forgotten), why and after how long, as FreeSWITCH reported it."""
        item: dict[str, Any] = {"uuid": self.uuid}
        end = self.ending
        if end is None:
            return item
        if end.cause is not None:
            item["hangup_cause"] = end.cause
        if end.disposition is not None:
            item["hangup_disposition"] = end.disposition
        duration = end.duration
        if duration is None:
            until = end.hangup_us / 1_000_000 if end.hangup_us else now
            duration = max(0, int(until) - self.created_us // 1_000_000)
        item["duration_seconds"] = duration
        if end.billsec is not None:
            item["billing_seconds"] = end.billsec
        if end.mos is not None:
            item["mos"] = end.mos
        return item

    def to_detail(self, now: float, stale: bool) -> dict[str, Any]:
        """The single-channel object: list keys plus Kazoo's single-GET names (spec §2)."""
        item = self.to_item(now, stale)
        item["call_id"] = self.uuid
        item["elapsed_seconds"] = item["elapsed_s"]
        item["is_on_hold"] = self.is_onhold
        if self.direction is not None:
            item["call_direction"] = self.direction
        if self.other_leg is not None:
            item["other_leg_call_id"] = self.other_leg
        if self.interaction_id is not None:
            item["call_interaction_id"] = self.interaction_id
        if self.name is not None:
            item["channel_name"] = self.name
        if self.details:
            item.update(self.details)
        return item


FRESH_TAIL = b',"stale":false,"elapsed_s":%d}'
STALE_TAIL = b',"stale":true,"elapsed_s":%d}'
OPTIONAL_ITEM_KEYS = (
    "direction",
    "destination",
    "other_leg",
    "presence_id",
    "account_id",
    "owner_id",
    "authorizing_id",
    "authorizing_type",
    "username",
    "realm",
    "caller_id_name",
    "caller_id_number",
    "callee_id_name",
    "callee_id_number",
    "state",
    "call_state",
    "interaction_id",
    "loopback_other_leg",
)
