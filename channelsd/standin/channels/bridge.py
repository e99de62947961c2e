"""Bridges: the ``bridge`` application, ``uuid_bridge``, and leaving a bridge.

Mirrors FreeSWITCH's ``switch_ivr_bridge.c`` (``switch_ivr_multi_threaded_bridge``,
``switch_ivr_uuid_bridge``, the bridge variables ``bridge_to``/``signal_bond``/
``last_bridge_role``) and ``mod_dptools``' ``bridge`` application, which originates the callee
and bridges once it answers.  CHANNEL_BRIDGE / CHANNEL_UNBRIDGE fire once, on the leg that ran
``bridge`` (Bridge-A); ``uuid_bridge`` takes two legs through CS_HIBERNATE/CS_RESET/
CS_SOFT_EXECUTE first (s6).
"""

from __future__ import annotations

from .. import replies
from ..events import now_us
from .dialplan import DEFAULT_ANSWERED, DIALPLAN, dialplan_app
from .fire import FireMixin
from .leg import Channel, SwitchCrash


class BridgeMixin(FireMixin):
    """Bridging two legs and taking them apart again."""

    @dialplan_app("bridge")
    def _app_bridge(self, caller: Channel, data: str) -> bool:
        """``bridge loopback/<dest>/default`` run by ``caller`` (s2/s5: 9002 -> 9000)."""
        self._execute(caller, "bridge", data)
        caller.set_var("current_application", "bridge")
        target = data.split("/")
        dest = target[1] if len(target) > 1 else data
        caller.bridge_side = "A"
        self._early_media(caller)
        self._flush_deferred()
        callee, _ = self._loopback_pair(
            dest,
            "default",
            {},
            None,
            list(DIALPLAN.get(dest, DEFAULT_ANSWERED)),
            None,
            originator=caller,
        )
        if callee.answered and not caller.bridge_peer:
            self._complete_bridge(caller, callee)
        return True

    def _complete_bridge(self, caller: Channel, callee: Channel) -> None:
        """The callee answered: the caller answers, CHANNEL_BRIDGE fires on the caller."""
        if not caller.alive or not callee.alive:
            return
        legs = f"{callee.uuid};Outbound Call;default"
        if not caller.answered:
            caller.set_var("originate_signal_bond", callee.uuid)
            caller.set_var("originated_legs", legs)
            self._answer(caller)
        caller.del_var("originate_signal_bond")
        caller.set_var("originated_legs", legs)
        caller.set_var("endpoint_disposition", "ANSWER")
        caller.set_var("originate_disposition", "SUCCESS")
        caller.set_var("DIALSTATUS", "SUCCESS")
        caller.set_var("originate_causes", f"{callee.uuid};NONE")
        caller.set_var("signal_bond", callee.uuid)
        self._link(caller, callee)
        self._ev(
            caller,
            "CHANNEL_BRIDGE",
            pre=[("Bridge-A-Unique-ID", caller.uuid), ("Bridge-B-Unique-ID", callee.uuid)],
        )
        self._bridge_vars(caller, callee)
        self._state(callee, "CS_EXCHANGE_MEDIA")
        self._flush_deferred()

    def _link(self, caller: Channel, callee: Channel) -> None:
        """Bond ``caller`` (Bridge-A) and ``callee``: peers, Channel-Bridged-Time, and the
        Other-Leg-* profile each side's events now carry."""
        ts = now_us()
        caller.bridge_peer, callee.bridge_peer = callee.uuid, caller.uuid
        caller.bridge_side, callee.bridge_side = "A", "B"
        caller.set_time("Channel-Bridged-Time", ts)
        callee.set_time("Channel-Bridged-Time", ts)
        caller.sql_call_uuid = caller.uuid
        callee.sql_call_uuid = caller.uuid
        caller.bridge_created_epoch = str(ts // 1_000_000)
        caller.other_type = "originatee"
        caller.other_profile = callee.other_leg_profile(with_times=True)
        if callee.other_type is None:
            callee.other_type = "originator"
            callee.other_profile = caller.other_leg_profile(with_times=False)

    def _bridge_vars(self, caller: Channel, callee: Channel) -> None:
        callee.set_var("call_uuid", caller.uuid)
        for me, other, role in ((caller, callee, "originator"), (callee, caller, "originatee")):
            me.set_var("bridge_to", other.uuid)
            me.set_var("last_bridge_to", other.uuid)
            me.set_var("bridge_channel", other.name)
            me.set_var("bridge_uuid", other.uuid)
            me.set_var("signal_bond", other.uuid)
            me.set_var("last_sent_callee_id_name", other.profile.get("Callee-ID-Name", ""))
            me.set_var("last_sent_callee_id_number", other.profile.get("Callee-ID-Number", ""))
            me.set_var("last_bridge_role", role)

    def _unbridge(self, caller: Channel, cause: str = "NORMAL_CLEARING") -> Channel | None:
        """Caller side leaves the bridge: UNBRIDGE + EXECUTE_COMPLETE bridge."""
        callee = self.channels.get(caller.bridge_peer or "")
        callee_uuid = caller.bridge_peer or ""
        caller.del_var("bridge_to")
        caller.set_var("bridge_hangup_cause", cause)
        self._ev(
            caller,
            "CHANNEL_UNBRIDGE",
            pre=[("Bridge-A-Unique-ID", caller.uuid), ("Bridge-B-Unique-ID", callee_uuid)],
        )
        caller.bridge_peer = None
        # switch_core_sqldb: an UNBRIDGE ends the call in the channels table (call_uuid=uuid
        # for every channel of the caller's call), so `show calls` no longer pairs them
        call = caller.sql_call_uuid or caller.uuid
        for ch in self.channels.values():
            if ch.sql_call_uuid == call:
                ch.sql_call_uuid = ch.uuid
        if callee is not None and callee.bridge_peer == caller.uuid:
            # a transferee keeps its bond to a transferor that is consulting someone else
            callee.bridge_peer = None
            callee.del_var("bridge_to")
        if caller.app == "bridge" and caller.app_running:
            # uuid_bridge has no app of its own to complete (s6: UNBRIDGE straight to STATE)
            self._execute_complete(caller)
        return callee

    def uuid_bridge(self, uid_a: str, uid_b: str) -> str:
        """uuid_bridge of two parked legs (s6: UNPARK, EXECUTE uuid_bridge x2, BRIDGE), with the
        traps of reference §6.3: a leg bridged to itself is stranded, a leg bridged to its
        own loopback twin crashes the switch, an unanswered leg loses every party."""
        a = self.get(uid_a, replies.INVALID_UUID)
        b = self.get(uid_b, replies.INVALID_UUID)
        if a is b:
            self._bridge_to_itself(a)
            return a.uuid
        if a.loopback_peer == b.uuid:
            # reference §6.3: endless message recursion in mod_loopback, a segfault, twice
            raise SwitchCrash("uuid_bridge of a loopback leg to its own twin")
        if not (a.answered and b.answered):
            self._bridge_unanswered(a, b)
            return b.uuid
        for leg in (a, b):
            self._attxfer_forget(leg)
        for leg, other in ((a, b), (b, a)):
            partner = self.channels.get(leg.bridge_peer or "")
            if partner is not None and partner is not other:
                # reference §6.1: the old partner is released as in a blind transfer
                if leg.bridge_side == "A":
                    self._unbridge(leg)
                    self._release_b_side(partner)
                else:
                    self._release_a_side(partner)
            elif leg.parked or leg.playing is not None or leg.app_running:
                self._unwind(leg, hangup=False)
            leg.dialplan = []
        for leg in (a, b):
            # reference §4.3: re-bridging the pair is the way out of a loopback hold (the
            # audio comes back; there is no CHANNEL_UNHOLD)
            self._release_hold(leg)
            leg.audio_cut = False
            self._state(leg, "CS_HIBERNATE")
            self._state(leg, "CS_RESET")
            self._state(leg, "CS_SOFT_EXECUTE")
        for leg, other in ((a, b), (b, a)):
            leg.app, leg.app_data, leg.app_uuid = "uuid_bridge", other.uuid, ""
            leg.sql_app, leg.sql_app_data = "uuid_bridge", other.uuid
            leg.set_var("current_application", "uuid_bridge")
            leg.set_var("current_application_data", other.uuid)
            self._ev(
                leg,
                "CHANNEL_EXECUTE",
                post=[("Application", "uuid_bridge"), ("Application-Data", other.uuid)],
                function="uuid_bridge_on_soft_execute",
            )
        self._link(a, b)
        a.other_type = "originatee"
        bridge_ids = [("Bridge-A-Unique-ID", a.uuid), ("Bridge-B-Unique-ID", b.uuid)]
        self._ev(a, "CHANNEL_BRIDGE", pre=bridge_ids)
        self._bridge_vars(a, b)
        self._state(b, "CS_EXCHANGE_MEDIA")
        return b.uuid

    def _bridge_to_itself(self, x: Channel) -> None:
        """Reference §6.3: ``uuid_bridge X X`` answers +OK X; X is unparked and left hanging in
        CS_SOFT_EXECUTE, its signal_bond naming itself, with no bridge.  Which events fire
        besides the unpark and the states was not recorded: none are invented."""
        self._attxfer_forget(x)
        if x.parked or x.playing is not None or x.app_running:
            self._unwind(x, hangup=False)
        x.dialplan = []
        for state in ("CS_HIBERNATE", "CS_RESET", "CS_SOFT_EXECUTE"):
            self._state(x, state)
        x.set_var("signal_bond", x.uuid)

    def _bridge_unanswered(self, a: Channel, b: Channel) -> None:
        """Reference §6.3: bridging an answered leg to a ringing one answered +OK, then the
        ringing leg died DESTINATION_OUT_OF_ORDER (its pending originate failed) and the
        answered leg ORIGINATOR_CANCEL.  Intercept and att_xfer sank the same way."""
        for leg in (a, b):
            if not leg.answered and leg.alive:
                self.hangup(leg.uuid, "DESTINATION_OUT_OF_ORDER")
        for leg in (a, b):
            if leg.alive:
                self.hangup(leg.uuid, "ORIGINATOR_CANCEL")

    def _release_a_side(self, caller: Channel) -> None:
        """The callee left the bridge: the caller's bridge app returns, then park_after_bridge
        or transfer_after_bridge keep it, else its dialplan goes on (9012 parks) unless
        hangup_after_bridge is set, else it hangs up NORMAL_CLEARING (reference §1.2, §1.4)."""
        if not caller.alive:
            return
        self._unbridge(caller)
        if self._after_bridge(caller):
            return
        if caller.dialplan and caller.variables.get("hangup_after_bridge") != "true":
            self._continue(caller)
            return
        self._teardown(caller, "NORMAL_CLEARING", unwound=True)

    def _release_b_side(self, callee: Channel) -> None:
        """The caller left the bridge (transferred, re-bridged elsewhere): the callee hangs up
        NORMAL_CLEARING unless park_after_bridge or transfer_after_bridge keep it (reference
        §1.2, §1.4: worked for the callee as for the caller)."""
        if not callee.alive:
            return
        if not self._keeps_after_bridge(callee):
            self._teardown(callee, "NORMAL_CLEARING", cascade_bridge=False)
            return
        callee.bridge_peer, callee.bridge_side = None, None
        self._after_bridge(callee)

    @staticmethod
    def _keeps_after_bridge(leg: Channel) -> bool:
        v = leg.variables
        return v.get("park_after_bridge") == "true" or bool(v.get("transfer_after_bridge"))

    def _after_bridge(self, leg: Channel) -> bool:
        """park_after_bridge, then transfer_after_bridge=<ext>:<dialplan>:<context>, checked in
        that order (reference §1.4, (code)); True when one of them kept the leg.  A parked leg
        is in CS_PARK with CHANNEL_PARK and no CHANNEL_EXECUTE park."""
        v = leg.variables
        if v.get("park_after_bridge") == "true":
            self._state(leg, "CS_PARK")
            self._park_event(leg)
            return True
        spec = str(v.get("transfer_after_bridge") or "")
        if spec:
            ext, _, rest = spec.partition(":")
            dialplan, _, context = rest.partition(":")
            self.transfer(leg.uuid, ext, dialplan or "XML", context or "default")
            return True
        return False
