"""Attended transfer: ``att_xfer`` driven on a live bridged leg (reference §2).

Mirrors ``mod_dptools``' ``att_xfer`` as the reference saw it on a real switch: the transferor
runs it nested in its bridge with the transferee and dials the target (§2.1/§2.2); when the
target answers the transferor has two bridges at once; hanging up completes the transfer
(§2.4), the target hanging up or the cancel key takes it back (§2.5), and a Bridge-A
transferor that completes becomes a zombie until the new bridge ends (§2.6).  What the
reference did not show is marked "derived" where it is modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dialplan import plan_for
from .fire import FireMixin
from .leg import Channel
from .loopback import parse_loopback


@dataclass(eq=False)
class AttXfer:
    """One att_xfer consultation (reference §2): the transferor runs att_xfer nested in its
    bridge with the transferee, and dials the target."""

    transferor: str
    transferee: str | None
    dialstring: str
    side: str | None  # the transferor's side of the old bridge ("A" runs ``bridge``)
    hold_ok: bool  # the transferee got playable hold music (then no zombie, reference §2.6)
    saved_other: tuple[str | None, dict[str, str] | None]
    saved_call_uuid: str
    target: str | None = None
    answered: bool = False


class AttXferMixin(FireMixin):
    """Consultation, completion, take-back and the zombie transferor."""

    def _att_xfer(self, x: Channel, dialstring: str, hold_ok: bool) -> None:
        """att_xfer run by the transferor ``x`` inside its bridge (reference §2.1/§2.2):
        EXECUTE att_xfer, CALLSTATE RING_WAIT, then the target T is dialled like the ``bridge``
        app's callee (Other-Type originator, Other-Leg = x).  When T answers, x is bridged to T
        and the old bridge with the transferee is left standing (no UNBRIDGE)."""
        y = self._partner(x)
        x.nest_app()
        self._execute(x, "att_xfer", dialstring)
        self._callstate(x, "RING_WAIT")
        xf = AttXfer(
            transferor=x.uuid,
            transferee=y.uuid if y else None,
            dialstring=dialstring,
            side=x.bridge_side,
            hold_ok=hold_ok,
            saved_other=(x.other_type, x.other_profile),
            saved_call_uuid=x.sql_call_uuid,
        )
        parsed = parse_loopback(dialstring)
        if parsed is None:
            # derived: originating to an endpoint the switch lacks fails at once
            # (CHAN_NOT_IMPLEMENTED in s4), so att_xfer returns as when T never answers
            self._attxfer_resume(xf, x, y, ringing=True)
            return
        variables, ext, context = parsed
        t, _ = self._loopback_pair(ext, context, variables, None, plan_for(ext), None, originator=x)
        xf.target = t.uuid
        if y is None:
            # reference §2.1: att_xfer with no bond -- the target it dialled died
            # DESTINATION_OUT_OF_ORDER and att_xfer returned
            if t.alive:
                self.hangup(t.uuid, "DESTINATION_OUT_OF_ORDER")
            self._attxfer_resume(xf, x, None, ringing=True)
            return
        self.attxfers[x.uuid] = xf
        if not t.alive:  # no route: T died while it was dialled
            self._attxfer_target_gone(xf)
        elif t.answered:
            self._attxfer_connect(xf)
        elif variables.get("leg_timeout", "").isdigit():
            # reference §2.5: a target that never answers within {leg_timeout=N} hangs up
            # ALLOTTED_TIMEOUT and the old bridge resumes
            seconds = int(variables["leg_timeout"])
            self.later(seconds, lambda: self._attxfer_no_answer(xf))
        self._flush_deferred()

    def _attxfer_no_answer(self, xf: AttXfer) -> None:
        t = self.locate(xf.target)
        if t is not None and not t.answered and self.attxfers.get(xf.transferor) is xf:
            self.hangup(t.uuid, "ALLOTTED_TIMEOUT")

    def _attxfer_connect(self, xf: AttXfer) -> None:
        """T answered (reference §2.2 step 4): ANSWER(T) has fired; transferor CALLSTATE
        ACTIVE, then CHANNEL_BRIDGE Bridge-A=transferor Bridge-B=T.  The transferor now has
        bridge_to/signal_bond = T; the transferee keeps bridge_to = transferor."""
        x, t = self.channels[xf.transferor], self.channels[xf.target or ""]
        xf.answered = True
        self._callstate(x, "ACTIVE")
        self._link(x, t)
        self._ev(
            x,
            "CHANNEL_BRIDGE",
            pre=[("Bridge-A-Unique-ID", x.uuid), ("Bridge-B-Unique-ID", t.uuid)],
        )
        self._bridge_vars(x, t)
        # derived from the bridge app's callee (s5): the consulted leg exchanges media
        self._state(t, "CS_EXCHANGE_MEDIA")

    def _attxfer_of(self, ch: Channel) -> tuple[AttXfer | None, str]:
        for xf in self.attxfers.values():
            if xf.transferor == ch.uuid:
                return xf, "transferor"
            if xf.target == ch.uuid:
                return xf, "target"
            if xf.transferee == ch.uuid:
                return xf, "transferee"
        return None, ""

    def _attxfer_forget(self, ch: Channel) -> None:
        """Other call control on a consultation's leg: the stand-in stops tracking it (the
        reference did not try this)."""
        xf, role = self._attxfer_of(ch)
        if xf is not None:
            self.attxfers.pop(xf.transferor, None)

    def _attxfer_end_app(self, x: Channel) -> None:
        # derived: every app run by switch_core_session_exec fires EXECUTE_COMPLETE when it
        # returns (captured for playback, park, bridge), so att_xfer does too
        if x.app == "att_xfer" and x.app_running:
            self._execute_complete(x)
            if x.app_stack:
                x.unnest_app()

    def _restore_bond(self, xf: AttXfer, x: Channel, y: Channel) -> None:
        """The transferor is back in its old bridge with the transferee."""
        x.bridge_peer, y.bridge_peer = y.uuid, x.uuid
        x.bridge_side = xf.side
        y.bridge_side = "B" if xf.side == "A" else "A"
        x.other_type, x.other_profile = xf.saved_other
        x.sql_call_uuid = xf.saved_call_uuid
        if xf.side == "A":
            y.sql_call_uuid = x.uuid
        x.set_var("bridge_to", y.uuid)
        x.set_var("signal_bond", y.uuid)

    def _attxfer_resume(self, xf: AttXfer, x: Channel, y: Channel | None, ringing: bool) -> None:
        """Reference §2.5: T hung up or never answered -- att_xfer ends and the old bridge
        simply resumes, with no new BRIDGE event.  The transferor's way back from RING_WAIT to
        ACTIVE is derived (§2.2 shows the same change when T answers)."""
        self.attxfers.pop(x.uuid, None)
        if ringing:
            self._callstate(x, "ACTIVE")
        self._attxfer_end_app(x)
        self._release_hold(x)
        if y is not None:
            self._restore_bond(xf, x, y)

    def _attxfer_target_gone(self, xf: AttXfer) -> None:
        """T has been torn down (killed, hung up, cancel key, no route)."""
        self.attxfers.pop(xf.transferor, None)
        x = self.locate(xf.transferor)
        if x is None:
            return
        y = self.locate(xf.transferee)
        if not xf.answered or y is None:
            self._attxfer_resume(xf, x, y, ringing=not xf.answered)
            return
        # Cancel (reference §2.5): T hung up NORMAL_CLEARING, then the transferor is
        # uuid_bridge'd back to the transferee: UNBRIDGE of the old bridge, then BRIDGE
        # Bridge-A=transferor Bridge-B=transferee.  The hold music stops as att_xfer ends.
        x.bridge_peer = None
        self._attxfer_end_app(x)
        self._release_hold(x)
        self._restore_bond(xf, x, y)
        self.uuid_bridge(x.uuid, y.uuid)

    def _attxfer_transferor_gone(
        self, xf: AttXfer, x: Channel, cause: str, announced: bool
    ) -> None:
        """The transferor hangs up (uuid_kill, its hangup key, its loopback twin)."""
        self.attxfers.pop(x.uuid, None)
        if not announced and not x.hungup:
            self._announce_hangup(x, cause)
        cause = x.hangup_cause or cause
        t, y = self.locate(xf.target), self.locate(xf.transferee)
        unwound = False
        if t is not None and y is not None and xf.answered:
            self._attxfer_complete(x, t, y)
            if xf.side == "A" and (
                not xf.hold_ok if self.attxfer_zombie is None else self.attxfer_zombie
            ):
                # reference §2.6: a Bridge-A transferor fires CHANNEL_HANGUP and nothing more
                # until the new target<->transferee bridge ends; it stays listed, uuid_exists
                # says false, its loopback twin lingers
                self.zombies[x.uuid] = xf
                return
            self._attxfer_end_app(x)
            if x.app == "bridge" and x.app_running:
                # derived: the caller's bridge app returns once its callee left the bridge
                x.bridge_peer = y.uuid
                self._unbridge(x)
            unwound = True
        elif t is not None and y is not None:
            # reference §2.5: hanging up while T still rings -- T died DESTINATION_OUT_OF_ORDER,
            # the transferee ORIGINATOR_CANCEL: everybody lost
            self._release_hold(x)
            self._teardown(t, "DESTINATION_OUT_OF_ORDER")
            self._teardown(y, "ORIGINATOR_CANCEL", cascade_bridge=False)
            self._attxfer_end_app(x)
        elif t is not None:
            # reference §2.5: the transferee hung up earlier -- T is left in CS_PARK (FreeSWITCH
            # hung it up about 8 s later by itself; the model has no clock for that)
            x.bridge_peer = t.bridge_peer = None
            if t.answered:
                self._state(t, "CS_PARK")
                self._park_event(t)
            else:
                self._teardown(t, "DESTINATION_OUT_OF_ORDER")
            self._attxfer_end_app(x)
        else:
            self._attxfer_end_app(x)  # everybody else is going down too (hupall)
        self._teardown(x, cause, announced=True, unwound=unwound, cascade_bridge=False)

    def _attxfer_complete(self, x: Channel, t: Channel, y: Channel) -> None:
        """Reference §2.4 after the transferor's CHANNEL_HANGUP: transferee and T get
        CHANNEL_PARK, CHANNEL_UNPARK, CHANNEL_EXECUTE uuid_bridge, then CHANNEL_BRIDGE
        Bridge-A=T Bridge-B=transferee (T ends CS_SOFT_EXECUTE, the transferee
        CS_EXCHANGE_MEDIA).  The transferee's hold music stops when att_xfer ends (§2.3); that
        it stops before the PARKs is derived (the uuid_bridge recipe of §2.7 shows
        PLAYBACK_STOP before the BRIDGE)."""
        self._release_hold(x)
        if y.bridge_side == "A" and y.app == "bridge" and y.app_running:
            # derived: a transferee that runs ``bridge`` (the callee was the transferor)
            # leaves its bridge app before it is parked
            self._unbridge(y)
        x.bridge_peer = None
        for leg in (y, t):
            leg.bridge_peer = None
            self._state(leg, "CS_PARK")
            self._park_event(leg)
        self.uuid_bridge(t.uuid, y.uuid)

    def _reap_zombie(self, x: Channel, cause: str) -> None:
        """Reference §2.6: when the new bridge ends the zombie fires a second CHANNEL_UNBRIDGE
        (Bridge-B = transferee) and a late CHANNEL_EXECUTE_COMPLETE bridge, then the usual end
        of a hangup (HANGUP_COMPLETE, DESTROY), and its loopback twin goes with it."""
        xf = self.zombies.pop(x.uuid)
        while x.app_stack:  # att_xfer's own return was not seen on the wire
            x.unnest_app()
        x.other_type, x.other_profile = xf.saved_other
        x.bridge_side, x.bridge_peer = "A", xf.transferee
        self._unbridge(x, x.hangup_cause or cause)
        self._teardown(x, x.hangup_cause or cause, announced=True, unwound=True)

    def _bridge_ended(self, ch: Channel) -> None:
        """``ch`` left: a zombie transferor waiting on its bridge goes at last."""
        for zuid, xf in list(self.zombies.items()):
            if ch.uuid in (xf.target, xf.transferee):
                z = self.channels.get(zuid)
                if z is None:
                    self.zombies.pop(zuid, None)
                elif not z.torn_down:
                    self._teardown(z, z.hangup_cause or "NORMAL_CLEARING", announced=True)

    def _attxfer_dtmf(self, ch: Channel, digit: str) -> None:
        """A digit reached the leg's application (dtmf.py): only att_xfer's keys have a
        modelled effect (reference §2.5); they work once the target has answered, read from
        the transferor's variables, else the target's.  Other digits would reach the target
        as DTMF, which no capture shows, so nothing is fired."""
        xf = self.attxfers.get(ch.uuid)
        t = self.locate(xf.target) if xf is not None and xf.answered else None
        if t is None or not ch.alive:
            return
        # Not observed, read in FreeSWITCH's att_xfer (mod_dptools xfer_on_dtmf): a digit is
        # compared with the first character of each key variable, the hangup key first --
        # so attxfer_cancel_key=*1 makes "*" complete, not cancel
        if digit == self._attxfer_key(ch, t, "attxfer_hangup_key", "*"):
            self.hangup(ch.uuid, "NORMAL_CLEARING")
        elif digit == self._attxfer_key(ch, t, "attxfer_cancel_key", "#"):
            self.hangup(t.uuid, "NORMAL_CLEARING")
        # attxfer_conf_key (three_way) is not modelled

    @staticmethod
    def _attxfer_key(x: Channel, t: Channel, name: str, default: str) -> str:
        return str(x.variables.get(name) or t.variables.get(name) or default)[:1]
