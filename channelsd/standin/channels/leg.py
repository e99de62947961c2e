"""One call leg: the session object every other part of the model works on.

Mirrors FreeSWITCH's ``switch_core_session`` / ``switch_channel`` pair: the leg's states, its
caller profile and timestamps, and its channel variables in FreeSWITCH's order.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from ..events import FLAG_FIELDS, TIME_FIELDS
from ..protocol import Header


def new_uuid() -> str:
    return str(uuidlib.uuid4())


@dataclass(eq=False)
class Channel:
    """One call leg.  ``variables`` holds channel variables without the ``variable_`` prefix,
    in FreeSWITCH's order: setting a variable moves it to the end, as the captures show."""

    uuid: str
    name: str
    direction: str
    created_us: int
    variables: dict[str, Any] = field(default_factory=dict)
    state: str = "CS_NEW"
    state_number: int = 0
    call_state: str = "DOWN"
    answer_state: str = "ringing"
    hit_dialplan: bool = False
    hangup_cause: str | None = None
    codecs: int = 0  # how many of the read/write codecs are set (the CODEC events fired)
    # the media codec both ways: L16 on loopback legs (every capture), PCMU on the s8 SIP legs
    codec_name: str = "L16"
    codec_rate: int = 8000
    profile: dict[str, str] = field(default_factory=dict)
    times: dict[str, int] = field(default_factory=dict)
    other_type: str | None = None
    other_profile: dict[str, str] | None = None
    loopback_peer: str | None = None
    bridge_peer: str | None = None
    bridge_side: str | None = None  # "A" runs bridge and fires BRIDGE/UNBRIDGE, "B" is bridged
    app: str = ""
    app_data: str = ""
    app_uuid: str = ""
    app_running: bool = False
    last_app: tuple[str, str] | None = None
    session_id: int = 0
    # what `show channels` lists: the last CHANNEL_EXECUTE, stale afterwards (reference §0.3)
    sql_app: str = ""
    sql_app_data: str = ""
    # apps a broadcast interrupted: (app, data, app_uuid, running, parked), innermost last
    app_stack: list[tuple[str, str, str, bool, bool]] = field(default_factory=list)
    holding: str | None = None  # partner playing hold music for this leg's broadcast
    parked: bool = False
    playing: str | None = None
    broadcast_queue: list[tuple[str, str, str | None]] = field(default_factory=list)
    dialplan: list[tuple[str, str]] = field(default_factory=list)
    start_app: tuple[str, str] | None = None  # originate's &app(), run once answered/early
    held: bool = False  # the endpoint reports holding: call state HELD (reference §4.2)
    # uuid_hold on an endpoint that never reports holding (loopback, reference §4.3): the
    # audio is cut both ways and only re-bridging the pair brings it back
    audio_cut: bool = False
    # bind_digit_action's digit machine (mod_dptools, switch_ivr_dmachine): realm ->
    # [(digits, command string, value)], the realm in use, and the digits it holds back
    digit_bindings: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    digit_realm: str | None = None
    digit_buffer: str = ""
    recordings: list[str] = field(default_factory=list)
    recording_vars: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> {…}
    hungup: bool = False
    torn_down: bool = False
    destroyed: bool = False
    sql_call_uuid: str = ""
    callee_direction: str = ""
    initial: dict[str, str] = field(default_factory=dict)
    presence_count: int = 0
    bridge_created_epoch: str = ""
    _caller_cache: list[Header] | None = field(default=None, repr=False)

    # -- read-only conveniences for callers ------------------------------------------------
    @property
    def answered(self) -> bool:
        return self.times.get("Channel-Answered-Time", 0) > 0

    @property
    def codec_bit_rate(self) -> int:
        """Bits per second of the leg's codec: L16 carries 16 bits a sample (128000 at 8 kHz in
        the captures), G.711 and G.722 64000 (the s8 SIP legs' PCMU)."""
        return 64000 if self.codec_name in ("PCMU", "PCMA", "G722") else 16 * self.codec_rate

    @property
    def other_leg(self) -> str | None:
        """Current bridge partner, else the Other-Leg-Unique-ID this leg's events carry."""
        if self.bridge_peer:
            return self.bridge_peer
        if self.other_profile:
            return self.other_profile.get("Unique-ID")
        return None

    @property
    def call_uuid(self) -> str:
        return str(self.variables.get("call_uuid") or self.uuid)

    @property
    def alive(self) -> bool:
        """uuid_* commands find the channel (switch_core_session_locate succeeds)."""
        return not self.hungup and not self.destroyed

    # -- mutation helpers that keep the caller-profile cache honest ----------------------------
    def set_var(self, name: str, value: Any) -> None:
        self.variables.pop(name, None)
        self.variables[name] = value

    def del_var(self, name: str) -> None:
        self.variables.pop(name, None)

    def set_profile(self, **fields: str) -> None:
        for k, v in fields.items():
            self.profile[k.replace("_", "-")] = v
        self._caller_cache = None

    def set_time(self, name: str, value: int) -> None:
        self.times[name] = value
        self._caller_cache = None

    def other_leg_profile(self, with_times: bool) -> dict[str, str]:
        """This leg's caller profile as a partner's events show it under Other-Leg-*: always
        Logical-Direction inbound, Channel-Bridged-Time 0, and the other timestamps this leg's
        own (``with_times``: the bridge's callee seen from its caller) or all 0 (the caller
        seen from an originated callee), as captured."""
        snap = dict(self.profile)
        snap["Logical-Direction"] = "inbound"
        for key in TIME_FIELDS:
            snap[key] = str(self.times.get(key, 0)) if with_times else "0"
        snap["Channel-Bridged-Time"] = "0"
        snap.update(FLAG_FIELDS)
        return snap

    # -- the application stack a broadcast nests on -------------------------------------------
    def nest_app(self) -> None:
        """A broadcast app starts on top of whatever the leg runs (park, bridge, nothing)."""
        self.app_stack.append(
            (self.app, self.app_data, self.app_uuid, self.app_running, self.parked)
        )
        self.parked = False

    def unnest_app(self) -> None:
        """The nested app returned: the leg is back in what it interrupted."""
        self.app, self.app_data, self.app_uuid, self.app_running, self.parked = self.app_stack.pop()


class SwitchError(Exception):
    """A command failed; ``reply`` is the exact api body FreeSWITCH answers."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class SwitchCrash(Exception):
    """The command crashed the switch (reference §6.3): no reply, every connection drops, and
    it comes back as a new process (a new Core-UUID, no channels)."""
