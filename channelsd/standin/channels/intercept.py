"""The ``intercept`` application: take over a leg, its former partner hangs up PICKED_OFF.

Mirrors FreeSWITCH's ``switch_ivr_intercept_session`` (``switch_ivr_bridge.c``) behind
``mod_dptools``' ``intercept [-bleg] <uuid>``, as verified on a real switch (reference §3).
Call pickup and the other §3.3 cases belong here.
"""

from __future__ import annotations

from .dialplan import dialplan_app
from .fire import FireMixin
from .leg import Channel


class InterceptMixin(FireMixin):
    """The ``intercept`` dialplan application."""

    @dialplan_app("intercept")
    def _app_intercept(self, me: Channel, arg: str) -> bool:
        """dptools ``intercept [-bleg] <uuid>`` as verified on a real switch: the target is
        answered if ringing, its former partner hangs up PICKED_OFF, then target and
        interceptor are uuid_bridge'd.  A missing target, or a bridged one with
        intercept_unbridged_only=true, just ends the interceptor (NORMAL_CLEARING)."""
        self._execute(me, "intercept", arg)
        words = arg.split()
        bleg = bool(words) and words[0] == "-bleg"
        uid = words[-1] if words else ""
        target = self.channels.get(uid)
        if target is not None and bleg:
            target = self.channels.get(target.bridge_peer or "")
        if target is None or not target.alive or target is me:
            self.hangup(me.uuid, "NORMAL_CLEARING")
            return True
        partner = self.channels.get(target.bridge_peer or "")
        if partner is not None and me.variables.get("intercept_unbridged_only") == "true":
            self.hangup(me.uuid, "NORMAL_CLEARING")
            return True
        if not target.answered:
            self._answer(target)
            self._flush_deferred()
        if partner is not None:
            if target.bridge_side == "A":
                self._unbridge(target)
            self._teardown(partner, "PICKED_OFF", cascade_bridge=False)
            target.bridge_peer = None
        self.uuid_bridge(me.uuid, target.uuid)
        return True
