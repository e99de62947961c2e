"""Hold: ``uuid_hold`` on and off (CHANNEL_CALLSTATE HELD/UNHELD, CHANNEL_HOLD/UNHOLD).

Mirrors FreeSWITCH's ``switch_ivr_hold_uuid`` / ``switch_ivr_unhold_uuid`` as a SIP endpoint
reports them (reference §4.2), with the hold timestamps the CDR adds up.  Loopback legs hold
one-way on a real switch (reference §4.3); that row belongs here.
"""

from __future__ import annotations

from .. import replies
from ..events import now_us
from .fire import FireMixin
from .leg import SwitchError


class HoldMixin(FireMixin):
    """``uuid_hold`` and ``uuid_hold off``."""

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
