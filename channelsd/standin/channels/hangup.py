"""Hangup: CHANNEL_HANGUP .. CHANNEL_HANGUP_COMPLETE, CHANNEL_DESTROY, and who goes down too.

Mirrors FreeSWITCH's ``switch_channel_perform_hangup`` (CHANNEL_HANGUP, fired at once) and the
rest of the way in ``switch_core_state_machine.c`` (CS_HANGUP, CS_REPORTING with the CDR
variables on CHANNEL_HANGUP_COMPLETE, CS_DESTROY after CHANNEL_DESTROY).  A loopback twin is
announced before the leg reports, then twins and bridge partners are torn down before the leg
is destroyed -- the s1/s2 interleaving.  ``hupall`` fires every CHANNEL_HANGUP first.

A ``bridge`` whose callee still rings is an originate in progress (``switch_ivr_originate``):
when the caller hangs up, the originate is cancelled and every ringing callee hangs up
ORIGINATOR_CANCEL; when the callee goes first (it refused, or the ring timed out: NO_ANSWER),
the originate fails with the callee's cause and the bridge app returns -- ``mod_dptools`` then
goes on with the caller's dialplan for NO_ANSWER / NO_USER_RESPONSE / ORIGINATOR_CANCEL and
hangs the caller up with the cause otherwise (``switch_channel_handle_cause``).  No capture
holds either sequence: the causes and the caller's variables are read from the FreeSWITCH
sources named here; the event order follows the bridged hangup of s2 (the callee reports, the
caller's ``bridge`` completes, the callee is destroyed).
"""

from __future__ import annotations

from .cdr import cdr_variables
from .dialplan import dialplan_app
from .fire import FireMixin
from .leg import Channel
from .sofia import hangup_disposition
from .tables import STATE_NUMBERS, str2cause

# Originate failures after which mod_dptools' bridge goes on with the dialplan ("no answer is
# *always* a reason to continue"); any other cause hangs the caller up with it.
CONTINUE_AFTER = frozenset(("NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL"))
# switch_ivr_originate's DIALSTATUS for a failed originate; any other cause is its own name.
DIALSTATUS = {
    "ORIGINATOR_CANCEL": "CANCEL",
    "USER_BUSY": "BUSY",
    "NO_ANSWER": "NOANSWER",
    "DESTINATION_OUT_OF_ORDER": "INVALIDARGS",
    "INVALID_PROFILE": "INVALIDARGS",
    "CALL_REJECTED": "DONTCALL",
}


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
        originator = self._originating(ch)
        ringing = self.ringing_callees(ch)
        side = ch.bridge_side
        was_callee = side == "B" and "last_bridge_to" in ch.variables
        if not announced and not ch.hungup:
            self._announce_hangup(ch, cause)
        cause = ch.hangup_cause or cause
        if was_callee:
            ch.set_var("bridge_hangup_cause", cause)
            ch.set_var("call_uuid", ch.uuid)
        if ringing:
            self._cancel_originate(ch, ringing)
        if not unwound:
            self._unwind(ch, hangup=True)
        disposition = hangup_disposition(ch)
        if disposition is not None:
            ch.set_var("sip_hangup_disposition", disposition)
        self._state(ch, "CS_HANGUP")
        self._callstate(ch, "HANGUP")
        self._close_recordings(ch)
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
        elif originator is not None and originator.alive and cause != "PICKED_OFF":
            # (a picked-off callee's caller belongs to the interceptor, not to its bridge)
            self._originate_failed(originator, ch, cause)
        self._destroy(ch)
        if xf is not None and role == "target":
            self._attxfer_target_gone(xf)
        elif xf is not None:
            xf.transferee = None  # reference §2.5: the transferor stays bridged to T
        self._bridge_ended(ch)

    # -- a bridge whose originate is still ringing --------------------------------------------
    @staticmethod
    def _waits_in_bridge(ch: Channel) -> bool:
        """``ch`` runs ``bridge`` and no callee has answered yet: its originate is ringing."""
        return (
            ch.bridge_side == "A"
            and ch.bridge_peer is None
            and ch.app == "bridge"
            and ch.app_running
        )

    def ringing_callees(self, caller: Channel) -> list[Channel]:
        """The legs ``caller``'s ``bridge`` originated that still ring (not answered, up)."""
        if not self._waits_in_bridge(caller):
            return []
        return [
            c
            for c in self.channels.values()
            if c.variables.get("originator") == caller.uuid and c.alive and not c.answered
        ]

    def _originating(self, callee: Channel) -> Channel | None:
        """The caller whose ``bridge`` is still waiting for ``callee`` to answer, if any."""
        if callee.answered or callee.bridge_peer:
            return None
        caller = self.locate(callee.variables.get("originator"))
        return caller if caller is not None and self._waits_in_bridge(caller) else None

    def _originate_result(self, caller: Channel, callees: list[Channel], cause: str) -> None:
        """The variables a failed originate leaves on its caller (switch_ivr_originate, then
        mod_dptools' bridge), in the order a real CDR lists them."""
        causes = [f"{c.uuid};{cause}" for c in callees]
        caller.set_var("originate_causes", causes if len(causes) > 1 else causes[0])
        caller.set_var("originate_disposition", cause)
        caller.set_var("DIALSTATUS", DIALSTATUS.get(cause, cause))
        caller.set_var("originate_failed_cause", cause)

    def _cancel_originate(self, caller: Channel, callees: list[Channel]) -> None:
        """``caller`` hung up while its callees rang: the originate is cancelled (IDX_CANCEL)
        and each callee hangs up ORIGINATOR_CANCEL before the caller's ``bridge`` returns."""
        self._originate_result(caller, callees, "ORIGINATOR_CANCEL")
        for callee in callees:
            if callee.alive:
                self._teardown(callee, "ORIGINATOR_CANCEL")

    def _originate_failed(self, caller: Channel, callee: Channel, cause: str) -> None:
        """``callee`` went down before it answered: ``caller``'s originate fails with its cause
        and the bridge app returns; the dialplan goes on (CONTINUE_AFTER) or the caller hangs
        up with the cause.  With nothing left to run the caller hangs up NORMAL_CLEARING
        (switch_core_standard_on_execute: "executed the last dialplan instruction")."""
        self._originate_result(caller, [callee], cause)
        if cause not in CONTINUE_AFTER:
            self._teardown(caller, cause)
            return
        self._execute_complete(caller)
        caller.bridge_side = None
        self._continue(caller)
        if caller.alive and not caller.app_running and not caller.parked:
            self._teardown(caller, "NORMAL_CLEARING", unwound=True)

    def _close_recordings(self, ch: Channel) -> None:
        """The hangup state removes the leg's media bugs: every recording still running stops
        and its file is closed (reference §5.4, completion cause success-silence).  Placed in
        the CS_HANGUP handler, after its CALLSTATE: inferred, no capture records a hangup
        while recording."""
        while ch.recordings:
            path = ch.recordings.pop(0)
            post = [("Record-File-Path", path), ("Record-Completion-Cause", "success-silence")]
            self._ev(ch, "RECORD_STOP", post=post)

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
