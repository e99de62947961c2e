"""Firing channel events: one method per event family the other concepts fire.

Mirrors where FreeSWITCH fires them: ``switch_channel.c`` (CHANNEL_STATE from
``switch_channel_perform_set_running_state``, CHANNEL_CALLSTATE, PRESENCE_IN from
``check_presence`` / ``switch_channel_perform_mark_answered``), ``switch_core_codec.c`` (CODEC),
``switch_core_session.c`` (CHANNEL_EXECUTE / CHANNEL_EXECUTE_COMPLETE around every application)
and ``switch_ivr_play_say.c`` (PLAYBACK_START / PLAYBACK_STOP).  The header layout itself is
``standin/events.py``'s job; these methods keep the leg's state in step with what they fire.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..events import now_us
from ..protocol import Header
from .base import ModelBase
from .leg import Channel, new_uuid
from .tables import CALLSTATE_NUMBERS, STATE_NUMBERS

# The read codec, then the write codec, each with the header names as captured (sic).
_CODEC_EVENTS: tuple[tuple[str, tuple[str, str, str]], ...] = (
    (
        "switch_core_session_set_read_codec",
        (
            "channel-read-codec-name",
            "channel-read-codec-rate",
            "channel-read-codec-bit-rate",
        ),
    ),
    (
        "switch_core_session_set_write_codec",
        (
            "Channel-Write-Codec-Name",
            "Channel-Write-Codec-Rate",
            "Channel-Write-codec-bit-rate",
        ),
    ),
)


class FireMixin(ModelBase):
    """Channel events, fired from the leg's current state."""

    def _ev(
        self,
        ch: Channel,
        name: str,
        pre: Iterable[Header] = (),
        post: Iterable[Header] = (),
        **kw: Any,
    ) -> None:
        self.emit(self.b.channel(ch, name, tuple(pre), tuple(post), **kw))

    def _state(self, ch: Channel, state: str, number: int | None = None) -> None:
        ch.state = state
        ch.state_number = STATE_NUMBERS[state] if number is None else number
        self._ev(ch, "CHANNEL_STATE")

    def _callstate(self, ch: Channel, new: str) -> None:
        old = ch.call_state
        ch.call_state = new
        if new == "HANGUP":
            ch.set_time("Channel-Hangup-Time", now_us())
        self._ev(
            ch,
            "CHANNEL_CALLSTATE",
            pre=[
                ("Original-Channel-Call-State", old),
                ("Channel-Call-State-Number", str(CALLSTATE_NUMBERS[new])),
            ],
        )

    def _presence(self, ch: Channel, status: str, info: str, function: str) -> None:
        """PRESENCE_IN, fired only for legs with a presence_id (as in s5_vars)."""
        presence = ch.variables.get("presence_id")
        if not presence:
            return
        loc = {
            "check_presence": ("src/switch_core_state_machine.c", "check_presence", "521"),
            "mark_answered": (
                "src/switch_channel.c",
                "switch_channel_perform_mark_answered",
                "3906",
            ),
        }[function]
        post = [
            ("proto", "any"),
            ("login", "src/switch_channel.c"),
            ("from", str(presence)),
            ("rpid", "unknown"),
            ("status", status),
            ("event_type", "presence"),
            ("alt_event_type", "dialog"),
            ("presence-call-info-state", info),
            ("presence-call-direction", ch.direction),
            ("event_count", str(ch.presence_count)),
            ("Presence-Calling-File", loc[0]),
            ("Presence-Calling-Function", loc[1]),
            ("Presence-Calling-Line", loc[2]),
        ]
        ch.presence_count += 1
        self._ev(ch, "PRESENCE_IN", post=post)

    def _codec(self, ch: Channel, name: str | None = None) -> None:
        """The two CODEC events (read, then write codec) a leg fires when its media is set up:
        before anything else on a new loopback leg."""
        real_name = ch.name
        if name:
            ch.name = name
        values = (ch.codec_name, str(ch.codec_rate), str(ch.codec_bit_rate))
        for level, (function, names) in enumerate(_CODEC_EVENTS, 1):
            ch.codecs = level
            post = list(zip(names, values, strict=True))
            self._ev(ch, "CODEC", post=post, function=function, with_profile=False)
        ch.name = real_name

    def _execute(self, ch: Channel, app: str, data: str = "") -> None:
        ch.del_var("current_application_response")
        ch.set_var("current_application", app)
        if data:
            ch.set_var("current_application_data", data)
        else:
            ch.del_var("current_application_data")
        ch.app, ch.app_data, ch.app_uuid = app, data, new_uuid()
        ch.sql_app, ch.sql_app_data = app, data
        ch.app_running = True
        post: list[Header] = [("Application", app)]
        if data:
            post.append(("Application-Data", data))
        post.append(("Application-UUID", ch.app_uuid))
        self._ev(ch, "CHANNEL_EXECUTE", post=post)

    def _execute_complete(self, ch: Channel, response: str = "_none_") -> None:
        if response != "_none_":
            ch.set_var("current_application_response", response)
        post: list[Header] = [("Application", ch.app)]
        if ch.app_data:
            post.append(("Application-Data", ch.app_data))
        post += [("Application-Response", response), ("Application-UUID", ch.app_uuid)]
        ch.app_running = False
        # last_app/last_arg only appear with the CDR variables at reporting time
        ch.last_app = (ch.app, ch.app_data)
        self._ev(ch, "CHANNEL_EXECUTE_COMPLETE", post=post)

    def _playback_event(self, ch: Channel, name: str, path: str, status: str | None) -> None:
        kind = path.split("://", 1)[0] if "://" in path else "file"
        post: list[Header] = [("Playback-File-Type", kind), ("Playback-File-Path", path)]
        if status is not None:
            post.append(("Playback-Status", status))
        self._ev(ch, name, post=post)

    def _park_event(self, ch: Channel) -> None:
        ch.parked = True
        self._ev(ch, "CHANNEL_PARK")
