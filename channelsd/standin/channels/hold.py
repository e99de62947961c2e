"""Hold: ``uuid_hold`` on and off (CHANNEL_CALLSTATE HELD/UNHELD, CHANNEL_HOLD/UNHOLD).

Mirrors FreeSWITCH's ``switch_ivr_hold_uuid`` / ``switch_ivr_unhold_uuid``.  How far a hold goes
depends on the endpoint (reference §4): a SIP leg reports "holding", reaches call state HELD and
can be taken off hold (§4.2); a loopback leg never does -- ``uuid_hold`` cuts its audio both
ways with a CHANNEL_HOLD but the call state stays ACTIVE, ``off`` answers -ERR and ``toggle``
holds again; only re-bridging the pair (bridge.py) brings the audio back (§4.3).  The held
leg's ``hold_music`` is broadcast to its partner (§4.2, §4.4).

``hold`` / ``unhold`` are the phone's own hold (a SIP re-INVITE), which the demo and the tests
drive directly; ``uuid_hold`` is the api command.
"""

from __future__ import annotations

from .. import replies
from ..events import now_us
from .fire import FireMixin
from .leg import Channel, SwitchError
from .media import GLOBAL_HOLD_MUSIC


def reports_holding(ch: Channel) -> bool:
    """Whether the leg's endpoint reports "holding" (and so reaches HELD): not loopback."""
    return not ch.name.startswith("loopback/")


class HoldMixin(FireMixin):
    """``uuid_hold`` (on, off, toggle) and the phone's own hold."""

    def hold(self, uid: str) -> None:
        """Hold a leg the way a SIP endpoint reports it: CALLSTATE HELD + CHANNEL_HOLD.
        (No capture contains hold; shape derived from CHANNEL_PARK, see templates.)"""
        ch = self.get(uid)
        if ch.held:
            raise SwitchError(replies.OPERATION_FAILED)
        ch.held = True
        ch.set_time("Channel-Last-Hold", now_us())
        self._callstate(ch, "HELD")
        self._ev(ch, "CHANNEL_HOLD")

    def unhold(self, uid: str) -> None:
        ch = self.get(uid)
        if not ch.held:
            raise SwitchError(replies.OPERATION_FAILED)
        ch.held = False
        last = ch.times.get("Channel-Last-Hold", 0)
        accum = ch.times.get("Channel-Hold-Accum", 0) + max(0, now_us() - last)
        ch.set_time("Channel-Hold-Accum", accum)
        self._callstate(ch, "UNHELD")
        self._callstate(ch, "ACTIVE")
        self._ev(ch, "CHANNEL_UNHOLD")

    def uuid_hold(self, uid: str, mode: str = "on") -> None:
        """The api command (reference §4.1-§4.3); SwitchError carries its -ERR reply."""
        ch = self.get(uid)
        if not reports_holding(ch):
            if mode == "off":
                raise SwitchError(replies.OPERATION_FAILED)  # §4.3: the audio stays cut
            # on, again, or toggle (the call state is still ACTIVE): +OK and another HOLD
            ch.audio_cut = True
            self._ev(ch, "CHANNEL_HOLD")
            self._hold_music_to_partner(ch)
            return
        if mode == "toggle":
            mode = "off" if ch.held else "on"
        if mode == "off":
            self.unhold(uid)
            self._release_hold(ch)  # §4.2: the partner's PLAYBACK_STOP after the UNHOLD
            return
        self.hold(uid)
        self._hold_music_to_partner(ch)

    def _hold_music_to_partner(self, ch: Channel) -> None:
        """§4.2/§4.4: the held leg's hold_music (else the global default) is broadcast to its
        partner; the unplayable default ends at once with FILE NOT FOUND."""
        partner = self._partner(ch)
        if partner is None or ch.holding == partner.uuid:
            return
        stream = str(ch.variables.get("hold_music") or GLOBAL_HOLD_MUSIC)
        self._start_hold(ch, partner, stream)
