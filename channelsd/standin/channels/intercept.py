"""The ``intercept`` application: take over a leg, its former partner hangs up PICKED_OFF.

Mirrors FreeSWITCH's ``switch_ivr_intercept_session`` (``switch_ivr_bridge.c``) behind
``mod_dptools``' ``intercept [-bleg] <uuid>``, with every case of reference §3.3:

* the target's *partner* is what ``switch_channel_get_partner_uuid`` names: its bridge
  partner, or for a ringing callee the caller that originated it (signal_bond), or for a
  caller still ringing its callee that pending callee (originate_signal_bond) -- call pickup;
* ``-bleg <uuid>`` intercepts that partner of ``<uuid>`` instead (switch_ivr_find_bridged_uuid);
* ``intercept_unbridged_only=true`` refuses a bridged target, ``intercept_unanswered_only=true``
  an answered one (code; not tried on the reference switch): the interceptor just ends;
* an inbound target is answered; an outbound one cannot be, so the uuid_bridge that follows
  loses it and the interceptor (bridge.py, §6.3) and then its caller is picked off: everybody
  lost, as the reference saw for the ringing outbound callee leg itself.
"""

from __future__ import annotations

from .dialplan import dialplan_app
from .fire import FireMixin
from .leg import Channel


class InterceptMixin(FireMixin):
    """The ``intercept`` dialplan application."""

    @dialplan_app("intercept")
    def _app_intercept(self, me: Channel, arg: str) -> bool:
        """dptools ``intercept [-bleg] <uuid>`` run by the interceptor ``me`` (answered by its
        originate before the app runs, §3.2).  Whenever nothing is intercepted the app
        returns and the interceptor hangs up NORMAL_CLEARING (§3.3, the refused and unknown
        targets: the originate's reply still said +OK)."""
        self._execute(me, "intercept", arg)
        target = self._intercept_target(arg)
        if target is None or target is me or not self._may_intercept(me, target):
            self.hangup(me.uuid, "NORMAL_CLEARING")
            return True
        partner = self._intercept_partner(target)
        if partner is me:
            partner = None
        if not target.answered and target.direction == "inbound":
            self._answer(target)  # §3.3 (b): its twin's pending originate completes
            self._flush_deferred()
        for leg in (target, partner):
            if leg is not None and not leg.answered and leg.other_type == "originator":
                # CF_TRANSFER + CS_PARK: a ringing callee involved is out of its caller's
                # originate, which neither cancels it nor fails with it any more
                leg.del_var("originator")
        if partner is not None:
            self._pick_off(target, partner)  # §3.2: before the target's UNPARK and the bridge
        # An outbound target is still unanswered (intercept cannot answer it): the bridge
        # loses it and the interceptor (§3.3, the ringing outbound callee leg itself).
        self.uuid_bridge(me.uuid, target.uuid)
        return True

    def _intercept_target(self, arg: str) -> Channel | None:
        words = arg.split()
        if not words:
            return None
        if words[0].lower() != "-bleg":
            return self.locate(words[0])
        named = self.locate(words[1]) if len(words) > 1 else None
        return self._intercept_partner(named) if named is not None else None

    @staticmethod
    def _may_intercept(me: Channel, target: Channel) -> bool:
        if me.variables.get("intercept_unbridged_only") == "true" and target.bridge_peer:
            return False  # §3.3 (c): refused without any error
        return not (me.variables.get("intercept_unanswered_only") == "true" and target.answered)

    def _intercept_partner(self, ch: Channel) -> Channel | None:
        """What switch_channel_get_partner_uuid names for ``ch``, while it is up."""
        if ch.bridge_peer:
            return self.locate(ch.bridge_peer)
        if not ch.answered and ch.other_type == "originator":
            return self.locate(ch.variables.get("originator"))  # the caller ringing it
        if ch.app == "bridge" and ch.app_running:
            # a caller still ringing its callee: the leg its bridge app originated
            return next(
                (
                    c
                    for c in self.channels.values()
                    if c.alive and c.variables.get("originator") == ch.uuid and not c.answered
                ),
                None,
            )
        return None

    def _pick_off(self, target: Channel, partner: Channel) -> None:
        """The target's former partner hangs up PICKED_OFF; its loopback twin was seen ending
        NORMAL_CLEARING (§3.3 (c))."""
        if target.bridge_peer == partner.uuid and target.bridge_side == "A":
            self._unbridge(target)
        twin = self._peer(partner)
        if twin is not None:
            self._announce_hangup(twin, "NORMAL_CLEARING")
        self._teardown(partner, "PICKED_OFF", cascade_bridge=False)
        target.bridge_peer = None
