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
from .leg import Channel


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
        if callee is not None and callee.bridge_peer == caller.uuid:
            # a transferee keeps its bond to a transferor that is consulting someone else
            callee.bridge_peer = None
            callee.del_var("bridge_to")
        if caller.app == "bridge" and caller.app_running:
            # uuid_bridge has no app of its own to complete (s6: UNBRIDGE straight to STATE)
            self._execute_complete(caller)
        return callee

    def uuid_bridge(self, uid_a: str, uid_b: str) -> str:
        """uuid_bridge of two parked legs (s6: UNPARK, EXECUTE uuid_bridge x2, BRIDGE)."""
        a = self.get(uid_a, replies.INVALID_UUID)
        b = self.get(uid_b, replies.INVALID_UUID)
        for leg in (a, b):
            self._attxfer_forget(leg)
        for leg, other in ((a, b), (b, a)):
            partner = self.channels.get(leg.bridge_peer or "")
            if partner is not None and partner is not other:
                if leg.bridge_side == "A":
                    self._unbridge(leg)
                else:
                    self._unbridge(partner)
                self._teardown(partner, "NORMAL_CLEARING", unwound=partner.bridge_side == "A")
            elif leg.parked or leg.playing is not None or leg.app_running:
                self._unwind(leg, hangup=False)
            leg.dialplan = []
        for leg in (a, b):
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
