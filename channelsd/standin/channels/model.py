"""The call model: every channel of one switch and the transitions between their states."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .. import templates
from ..events import now_us
from .bridge import BridgeMixin
from .calls import CallsMixin
from .dialplan import (
    DialplanMixin,
    dialplan_app,
    plan_for,
)
from .fire import FireMixin
from .hold import HoldMixin
from .intercept import InterceptMixin
from .leg import Channel
from .loopback import LoopbackMixin, parse_loopback
from .media import MediaMixin
from .state_machine import StateMachineMixin
from .tables import CAUSES, STATE_NUMBERS, str2cause
from .transfer import TransferMixin

# Order FreeSWITCH adds the CDR variables in at reporting time (from the captures).
_CDR_RANK = {name: i for i, name in enumerate(templates.load()["cdr_variables"])}


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


class CallModel(
    TransferMixin,
    MediaMixin,
    HoldMixin,
    CallsMixin,
    InterceptMixin,
    BridgeMixin,
    StateMachineMixin,
    LoopbackMixin,
    DialplanMixin,
    FireMixin,
):
    """All channels of one switch and the transitions between their states."""

    # ------------------------------------------------------------------ dialplan apps
    @dialplan_app("hangup")
    def _app_hangup(self, ch: Channel, data: str) -> bool:
        self._execute(ch, "hangup", data)
        self.hangup(ch.uuid, str2cause(data))
        return True

    # ------------------------------------------------------------------ hangup
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

    def _unwind(self, ch: Channel, hangup: bool) -> None:
        """The running application returns (hangup, transfer, park, uuid_bridge); apps a
        broadcast nested on top of it return first."""
        if ch.playing is not None:
            self._stop_playback(ch, "done" if hangup else "break")
            if not ch.app_stack:
                return  # a dialplan playback: nothing runs underneath it
        while ch.app_stack:
            if ch.app_running:
                self._execute_complete(ch)
            self._unnest(ch)
        self._release_hold(ch)
        if ch.bridge_side == "A" and ch.bridge_peer:
            self._unbridge(ch)
        elif ch.parked:
            ch.parked = False
            self._ev(ch, "CHANNEL_UNPARK")
            if ch.app_running:
                self._execute_complete(ch)
        elif ch.app_running and ch.bridge_side != "B":
            self._execute_complete(ch)

    def _release_a_side(self, caller: Channel) -> None:
        """The callee left the bridge: the caller's bridge app returns, then its dialplan
        ends (hangup NORMAL_CLEARING) unless park_after_bridge keeps it."""
        if not caller.alive:
            return
        self._unbridge(caller)
        if caller.variables.get("park_after_bridge") == "true":
            self._state(caller, "CS_PARK")
            self._park_event(caller)
        else:
            self._teardown(caller, "NORMAL_CLEARING", unwound=True)

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
                self._teardown(partner, "NORMAL_CLEARING")
        self._destroy(ch)
        if xf is not None and role == "target":
            self._attxfer_target_gone(xf)
        elif xf is not None:
            xf.transferee = None  # reference §2.5: the transferor stays bridged to T
        self._bridge_ended(ch)

    def _hangup_complete(self, ch: Channel) -> None:
        cause = ch.hangup_cause or "NORMAL_CLEARING"
        cdr = sorted(self._cdr_vars(ch, cause), key=lambda kv: _CDR_RANK.get(kv[0], 1000))
        for k, v in cdr:
            ch.set_var(k, v)
        self._ev(ch, "CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", cause)])

    def _cdr_vars(self, ch: Channel, cause: str) -> list[tuple[str, str]]:
        t = ch.times
        start = t["Channel-Created-Time"]
        end = t.get("Channel-Hangup-Time") or now_us()
        answered = t.get("Channel-Answered-Time", 0)
        progress = t.get("Channel-Progress-Time", 0)
        pmedia = t.get("Channel-Progress-Media-Time", 0)
        bridged = t.get("Channel-Bridged-Time", 0)

        def stamp(us: int) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us // 1_000_000))

        out: list[tuple[str, str]] = [
            ("hangup_cause", cause),
            ("hangup_cause_q850", str(CAUSES.get(cause, 0))),
            ("digits_dialed", "none"),
            ("start_stamp", stamp(start)),
            ("profile_start_stamp", stamp(start)),
        ]
        if answered:
            out.append(("answer_stamp", stamp(answered)))
        if progress:
            out.append(("progress_stamp", stamp(progress)))
        if bridged:
            out.append(("bridge_stamp", stamp(bridged)))
        if pmedia:
            out.append(("progress_media_stamp", stamp(pmedia)))
        out.append(("end_stamp", stamp(end)))
        for name, us in (
            ("start", start),
            ("profile_start", start),
            ("answer", answered),
            ("bridge", bridged),
            ("last_hold", t.get("Channel-Last-Hold", 0)),
        ):
            out += [(f"{name}_epoch", str(us // 1_000_000)), (f"{name}_uepoch", str(us))]
        accum = t.get("Channel-Hold-Accum", 0)
        out += [
            ("hold_accum_seconds", str(accum // 1_000_000)),
            ("hold_accum_usec", str(accum)),
            ("hold_accum_ms", str(accum // 1000)),
        ]
        for name, us in (
            ("resurrect", 0),
            ("progress", progress),
            ("progress_media", pmedia),
            ("end", end),
        ):
            out += [(f"{name}_epoch", str(us // 1_000_000)), (f"{name}_uepoch", str(us))]
        last = ch.last_app
        if last is not None:
            out.append(("last_app", last[0]))
            if last[1]:
                out.append(("last_arg", last[1]))
        name = ch.profile.get("Caller-ID-Name", "")
        num = ch.profile.get("Caller-ID-Number", "")
        out.append(("caller_id", f'"{name}" <{num}>' if name else num))
        dur = end - start
        bill = end - answered if answered else 0
        prog = progress - start if progress else 0
        ans = answered - start if answered else 0
        wait = ans
        pm = pmedia - start if pmedia else 0
        for suffix, div in (("sec", 1_000_000), ("msec", 1000), ("usec", 1)):
            first = (
                "duration"
                if suffix == "sec"
                else {"msec": "mduration", "usec": "uduration"}[suffix]
            )
            out += [
                (first, str(dur // div)),
                (f"bill{suffix}", str(bill // div)),
                (f"progress{suffix}", str(prog // div)),
                (f"answer{suffix}", str(ans // div)),
                (f"wait{suffix}", str(wait // div)),
                (f"progress_media{suffix}", str(pm // div)),
                (f"flow_bill{suffix}", str(dur // div)),
            ]
        if ch.profile.get("Source") == "mod_loopback":
            out.append(("is_loopback", "1"))
        return out

    def _destroy(self, ch: Channel) -> None:
        ch.state_number = STATE_NUMBERS["CS_DESTROY"]
        self._ev(ch, "CHANNEL_DESTROY")
        ch.destroyed = True
        self.channels.pop(ch.uuid, None)
        self._state(ch, "CS_DESTROY")

    # ------------------------------------------------------------------ other controls
    def set_variable(self, uid: str, name: str, value: Any) -> None:
        ch = self.get(uid)
        if value is None or value == "":
            ch.del_var(name)
        else:
            ch.set_var(name, value)

    # ------------------------------------------------------------------ attended transfer
    def _att_xfer(self, x: Channel, dialstring: str, hold_ok: bool) -> None:
        """att_xfer run by the transferor ``x`` inside its bridge (reference §2.1/§2.2):
        EXECUTE att_xfer, CALLSTATE RING_WAIT, then the target T is dialled like the ``bridge``
        app's callee (Other-Type originator, Other-Leg = x).  When T answers, x is bridged to T
        and the old bridge with the transferee is left standing (no UNBRIDGE)."""
        y = self._partner(x)
        self._nest(x)
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
        self._flush_deferred()

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
                self._unnest(x)

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
            self._unnest(x)
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

    def recv_dtmf(self, uid: str, digits: str) -> None:
        """uuid_recv_dtmf: the digits arrive as if the leg's phone pressed them.  Only the
        att_xfer keys have a modelled effect (reference §2.5); they work once the target has
        answered, read from the transferor's variables, else the target's.  Other digits
        would reach the target as DTMF, which no capture shows, so nothing is fired."""
        ch = self.get(uid)
        for digit in digits:
            xf = self.attxfers.get(ch.uuid)
            t = self.locate(xf.target) if xf is not None and xf.answered else None
            if t is None or not ch.alive:
                continue
            # Not observed, read in FreeSWITCH-derived att_xfer code (Kazoo's kz_att_xfer): a
            # digit is compared with the first character of each key variable, the hangup
            # key first -- so attxfer_cancel_key=*1 makes "*" complete, not cancel
            if digit == self._attxfer_key(ch, t, "attxfer_hangup_key", "*"):
                self.hangup(ch.uuid, "NORMAL_CLEARING")
            elif digit == self._attxfer_key(ch, t, "attxfer_cancel_key", "#"):
                self.hangup(t.uuid, "NORMAL_CLEARING")
            # attxfer_conf_key (three_way) is not modelled

    @staticmethod
    def _attxfer_key(x: Channel, t: Channel, name: str, default: str) -> str:
        return str(x.variables.get(name) or t.variables.get(name) or default)[:1]

    def sessions_per_second(self) -> int:
        cutoff = now_us() - 1_000_000
        return sum(1 for ch in self.channels.values() if ch.created_us >= cutoff)

    def reset(self) -> None:
        self.channels.clear()
        self._deferred.clear()
        self._answer_waiters.clear()
        self.attxfers.clear()
        self.zombies.clear()
