"""Hangup: CHANNEL_HANGUP .. CHANNEL_HANGUP_COMPLETE, CHANNEL_DESTROY, and who goes down too.

Mirrors FreeSWITCH's ``switch_channel_perform_hangup`` (CHANNEL_HANGUP, fired at once) and the
rest of the way in ``switch_core_state_machine.c`` (CS_HANGUP, CS_REPORTING with the CDR
variables on CHANNEL_HANGUP_COMPLETE, CS_DESTROY after CHANNEL_DESTROY).  A loopback twin is
announced before the leg reports, then twins and bridge partners are torn down before the leg
is destroyed -- the s1/s2 interleaving.  ``hupall`` fires every CHANNEL_HANGUP first.
"""

from __future__ import annotations

from .cdr import cdr_variables
from .dialplan import dialplan_app
from .fire import FireMixin
from .leg import Channel
from .tables import STATE_NUMBERS, str2cause


class HangupMixin(FireMixin):
    """``uuid_kill``, ``hupall``, the ``hangup`` application and the teardown they share."""

    @dialplan_app("hangup")
    def _app_hangup(self, ch: Channel, data: str) -> bool:
        self._execute(ch, "hangup", data)
        self.hangup(ch.uuid, str2cause(data))
        return True

    def hangup(self, uid: str, cause: str = "NORMAL_CLEARING") -> None:
        """Full hangup sequence of ``uid``; loopback twins and bridge partners go down too."""
        ch = self.get(uid)
        self._teardown(ch, cause)

    def hupall(self, cause: str = "MANAGER_REQUEST", match: tuple[str, str] | None = None) -> None:
        """hupall: every CHANNEL_HANGUP first (as in the captures), then the teardowns."""
        victims = [
            ch
            for ch in list(self.channels.values())
            if ch.alive and (match is None or str(ch.variables.get(match[0])) == match[1])
        ]
        for ch in victims:
            self._announce_hangup(ch, cause)
        for ch in victims:
            if not ch.torn_down:
                self._teardown(ch, cause, announced=True)

    def _announce_hangup(self, ch: Channel, cause: str) -> None:
        if ch.bridge_side == "B" and "last_bridge_to" in ch.variables:
            ch.set_var("last_bridge_hangup_cause", cause)
            ch.set_var("last_bridge_role", "originatee")
        ch.hungup = True
        ch.hangup_cause = cause
        ch.answer_state = "hangup"
        ch.state_number = STATE_NUMBERS["CS_HANGUP"]
        self._ev(ch, "CHANNEL_HANGUP")

    def _teardown(
        self,
        ch: Channel,
        cause: str,
        announced: bool = False,
        unwound: bool = False,
        cascade_bridge: bool = True,
    ) -> None:
        """HANGUP .. HANGUP_COMPLETE, DESTROY, STATE(CS_DESTROY) for ``ch``; its loopback twin
        is announced (CHANNEL_HANGUP) before ``ch`` reports, then both twins and any bridge
        partner are torn down before ``ch`` is destroyed -- the s1/s2 interleaving."""
        if ch.torn_down:
            return
        if ch.uuid in self.zombies:
            self._reap_zombie(ch, cause)
            return
        xf, role = self._attxfer_of(ch)
        if xf is not None and role == "transferor":
            self._attxfer_transferor_gone(xf, ch, cause, announced)
            return
        if xf is not None:
            # target or transferee of a consultation: the transferor stays up (reference §2.5)
            cascade_bridge = False
        ch.torn_down = True
        partner = self.channels.get(ch.bridge_peer or "") if cascade_bridge else None
        side = ch.bridge_side
        was_callee = side == "B" and "last_bridge_to" in ch.variables
        if not announced and not ch.hungup:
            self._announce_hangup(ch, cause)
        cause = ch.hangup_cause or cause
        if was_callee:
            ch.set_var("bridge_hangup_cause", cause)
            ch.set_var("call_uuid", ch.uuid)
        if not unwound:
            self._unwind(ch, hangup=True)
        self._state(ch, "CS_HANGUP")
        self._callstate(ch, "HANGUP")
        if ch.variables.get("presence_id"):
            ch.state_number = STATE_NUMBERS["CS_REPORTING"]
            self._presence(ch, "CS_HANGUP", "idle", "check_presence")
        twin = self._peer(ch, alive_only=False)
        if twin is not None and not twin.hungup:
            self._announce_hangup(twin, cause)
        self._state(ch, "CS_REPORTING")
        self._hangup_complete(ch)
        if twin is not None and not twin.torn_down:
            self._teardown(twin, cause, announced=True)
        if partner is not None and not partner.torn_down:
            if side == "B":
                self._release_a_side(partner)
            else:
                self._release_b_side(partner)
        self._destroy(ch)
        if xf is not None and role == "target":
            self._attxfer_target_gone(xf)
        elif xf is not None:
            xf.transferee = None  # reference §2.5: the transferor stays bridged to T
        self._bridge_ended(ch)

    def _hangup_complete(self, ch: Channel) -> None:
        cause = ch.hangup_cause or "NORMAL_CLEARING"
        for k, v in cdr_variables(ch, cause):
            ch.set_var(k, v)
        self._ev(ch, "CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", cause)])

    def _destroy(self, ch: Channel) -> None:
        ch.state_number = STATE_NUMBERS["CS_DESTROY"]
        self._ev(ch, "CHANNEL_DESTROY")
        ch.destroyed = True
        self.channels.pop(ch.uuid, None)
        self._state(ch, "CS_DESTROY")
