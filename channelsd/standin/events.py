"""Build FreeSWITCH-shaped events from channel state.

A channel event is laid out exactly as the captures show: core headers, event-specific "pre"
headers, basic channel data, the caller profile, Other-Type/Other-Leg-* (when the channel has
another leg), ``variable_*`` (only for event types that carry them), then "post" headers.  The
header orders come from templates.json.gz; the values come from the :class:`Channel` object.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from . import templates
from .protocol import Event, Header

if TYPE_CHECKING:
    from .channels import Channel

_TPL = templates.load()
BASIC_ORDER: tuple[str, ...] = tuple(_TPL["basic"])
CALLER_ORDER: tuple[str, ...] = tuple(_TPL["caller"])
OTHER_ORDER: tuple[str, ...] = tuple(_TPL["other_leg"])
_CALLER_KEYS = tuple(k[len("Caller-") :] for k in CALLER_ORDER)
_OTHER_KEYS = tuple(k[len("Other-Leg-") :] for k in OTHER_ORDER if k != "Other-Type")

# Profile timestamps in caller-profile order; keys of Channel.times.
TIME_FIELDS = (
    "Profile-Created-Time",
    "Channel-Created-Time",
    "Channel-Answered-Time",
    "Channel-Progress-Time",
    "Channel-Progress-Media-Time",
    "Channel-Hangup-Time",
    "Channel-Transfer-Time",
    "Channel-Resurrect-Time",
    "Channel-Bridged-Time",
    "Channel-Last-Hold",
    "Channel-Hold-Accum",
)
FLAG_FIELDS = {"Screen-Bit": "true", "Privacy-Hide-Name": "false", "Privacy-Hide-Number": "false"}


def now_us() -> int:
    return time.time_ns() // 1000


class EventBuilder:
    """Stamps core headers (Core-UUID, dates, Event-Sequence) and assembles channel events."""

    def __init__(self, hostname: str, ipv4: str, ipv6: str, core_uuid: str) -> None:
        self.hostname = hostname
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.core_uuid = core_uuid
        self._seq = itertools.count(1)
        self._date_cache: tuple[int, str, str] = (-1, "", "")
        self._calling: dict[tuple[str, str | None], tuple[str, str, str]] = {}
        self._events = _TPL["events"]

    def reset_sequence(self, start: int = 1) -> None:
        self._seq = itertools.count(start)

    def _dates(self, ts_us: int) -> tuple[str, str]:
        sec = ts_us // 1_000_000
        cached = self._date_cache
        if cached[0] != sec:
            local = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
            gmt = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(sec))
            cached = self._date_cache = (sec, local, gmt)
        return cached[1], cached[2]

    def core(self, name: str, function: str | None = None) -> list[Header]:
        key = (name, function)
        loc = self._calling.get(key)
        if loc is None:
            loc = self._calling[key] = templates.calling(name, function)
        ts = now_us()
        local, gmt = self._dates(ts)
        return [
            ("Event-Name", name),
            ("Core-UUID", self.core_uuid),
            ("FreeSWITCH-Hostname", self.hostname),
            ("FreeSWITCH-Switchname", self.hostname),
            ("FreeSWITCH-IPv4", self.ipv4),
            ("FreeSWITCH-IPv6", self.ipv6),
            ("Event-Date-Local", local),
            ("Event-Date-GMT", gmt),
            ("Event-Date-Timestamp", str(ts)),
            ("Event-Calling-File", loc[0]),
            ("Event-Calling-Function", loc[1]),
            ("Event-Calling-Line-Number", loc[2]),
            ("Event-Sequence", str(next(self._seq))),
        ]

    def simple(self, name: str, headers: Iterable[Header], body: str | None = None) -> Event:
        """A non-channel event (API, HEARTBEAT, BACKGROUND_JOB, ...)."""
        hdrs = self.core(name)
        hdrs.extend(headers)
        return Event(name, hdrs, body)

    def channel(
        self,
        ch: Channel,
        name: str,
        pre: Sequence[Header] = (),
        post: Sequence[Header] = (),
        *,
        function: str | None = None,
        with_vars: bool | None = None,
        with_profile: bool = True,
        codec: int | None = None,
    ) -> Event:
        """A channel event built from ``ch``'s current state (CODEC carries no profile)."""
        hdrs = self.core(name, function)
        hdrs.extend(pre)
        hdrs.extend(basic_block(ch, codec))
        if with_profile:
            hdrs.extend(caller_block(ch))
            hdrs.extend(other_block(ch))
        if with_vars is None:
            with_vars = self._events[name]["variables"]
        if with_vars:
            hdrs.extend(variable_block(ch))
        hdrs.extend(post)
        return Event(name, hdrs)


def basic_block(ch: Channel, codec: int | None = None) -> list[Header]:
    """Channel-State ... codec headers (switch_channel_event_set_basic_data)."""
    vals: dict[str, str] = {
        "Channel-State": ch.state,
        "Channel-Call-State": ch.call_state,
        "Channel-State-Number": str(ch.state_number),
        "Channel-Name": ch.name,
        "Unique-ID": ch.uuid,
        "Call-Direction": ch.direction,
        "Presence-Call-Direction": ch.direction,
        "Channel-HIT-Dialplan": "true" if ch.hit_dialplan else "false",
        "Channel-Call-UUID": ch.call_uuid,
        "Answer-State": ch.answer_state,
    }
    presence = ch.variables.get("presence_id")
    if presence:
        vals["Channel-Presence-ID"] = str(presence)
    if ch.hangup_cause:
        vals["Hangup-Cause"] = ch.hangup_cause
    level = ch.codecs if codec is None else codec
    if level >= 1:
        name, rate, bits = ch.codec_name, str(ch.codec_rate), str(ch.codec_bit_rate)
        vals["Channel-Read-Codec-Name"] = name
        vals["Channel-Read-Codec-Rate"] = rate
        vals["Channel-Read-Codec-Bit-Rate"] = bits
        if level >= 2:
            vals["Channel-Write-Codec-Name"] = name
            vals["Channel-Write-Codec-Rate"] = rate
            vals["Channel-Write-Codec-Bit-Rate"] = bits
    return [(k, vals[k]) for k in BASIC_ORDER if k in vals]


def profile_values(profile: dict[str, str], times: dict[str, int]) -> dict[str, str]:
    vals = {k: v for k, v in profile.items() if v}
    for k in TIME_FIELDS:
        vals[k] = str(times.get(k, 0))
    vals.update(FLAG_FIELDS)
    return vals


def caller_block(ch: Channel) -> list[Header]:
    """Caller-* headers; empty profile fields are omitted, as FreeSWITCH does."""
    cached = ch._caller_cache
    if cached is not None:
        return cached
    vals = profile_values(ch.profile, ch.times)
    out = [(f, vals[k]) for f, k in zip(CALLER_ORDER, _CALLER_KEYS, strict=True) if k in vals]
    ch._caller_cache = out
    return out


def other_block(ch: Channel) -> list[Header]:
    if not ch.other_type or ch.other_profile is None:
        return []
    vals = ch.other_profile
    out: list[Header] = [("Other-Type", ch.other_type)]
    out.extend((f"Other-Leg-{k}", vals[k]) for k in _OTHER_KEYS if vals.get(k))
    return out


def variable_block(ch: Channel) -> list[Header]:
    return [("variable_" + k, v) for k, v in ch.variables.items()]
