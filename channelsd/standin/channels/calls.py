"""Ready-made calls for tests and the demo: a bridged A -> B call in one step.

Builds the two legs the capture switch's ``9002`` extension makes (s2/s5: ``loopback/9002-b``
runs ``bridge loopback/9000/default`` and ``loopback/9000-a`` is its callee), with the names and
caller ids a test asks for, event for event as the captures show them.
"""

from __future__ import annotations

from typing import Any

from ..events import now_us
from .fire import FireMixin
from .leg import Channel
from .tables import STATE_NUMBERS


class CallsMixin(FireMixin):
    """Whole calls set up in one call (the switch's own transitions, no shortcuts)."""

    def bridged_call(
        self,
        variables_a: dict[str, Any] | None = None,
        variables_b: dict[str, Any] | None = None,
        caller: tuple[str, str] = ("Alice", "1001"),
        callee: tuple[str, str] = ("Bob", "1002"),
        answer: bool = True,
        name_a: str | None = None,
        name_b: str | None = None,
    ) -> tuple[str, str]:
        """Two legs bridged like s2/s5's 9002-b -> 9000-a: a (inbound) runs ``bridge``, b is the
        outbound callee.  Returns (a_uuid, b_uuid)."""
        dest = callee[1]
        a = self._new_channel(name_a or f"loopback/{dest}-b", "inbound")
        self._bridge_profile(a, "inbound", caller, callee)
        a.initial = {
            "cid_name": caller[0],
            "cid_num": caller[1],
            "dest": dest,
            "dialplan": "xml",
            "context": "default",
        }
        a.hit_dialplan = True
        self._base_vars(a, outbound_first=False)
        for k, v in (variables_a or {}).items():
            a.set_var(k, v)
        a.state, a.state_number = "CS_NONE", 0
        self._codec(a)
        self._register(a)
        self._route_inbound(a)
        self._enter_execute(a)
        target = f"loopback/{dest}/default"
        self._execute(a, "bridge", target)
        a.set_var("current_application", "bridge")
        a.bridge_side = "A"
        if answer:
            self._early_media(a)

        b = self._new_channel(name_b or f"loopback/{dest}-a", "outbound")
        self._bridge_profile(b, "outbound", caller, callee)
        b.initial = dict(a.initial)
        self._base_vars(b, outbound_first=True)
        b.del_var("call_uuid")
        self._originatee_vars(b, a)
        b.set_var("originate_early_media", "true")
        b.set_var("originating_leg_uuid", a.uuid)
        for k, v in (variables_b or {}).items():
            b.set_var(k, v)
        b.state, b.state_number = "CS_NONE", 0
        self._codec(b, f"loopback/{dest}/default-a")
        self._register(b)
        b.state_number = STATE_NUMBERS["CS_INIT"]
        self._ev(b, "CHANNEL_OUTGOING")
        self._state(b, "CS_INIT")
        b.state_number = STATE_NUMBERS["CS_ROUTING"]
        b.sql_call_uuid = b.call_uuid
        self._ev(b, "CHANNEL_CREATE")
        self._ev(b, "CHANNEL_ORIGINATE")
        self._state(b, "CS_ROUTING")
        self._state(b, "CS_CONSUME_MEDIA")
        if answer:
            self._mark_answered(b)
            b.set_var("endpoint_disposition", "ANSWER")
            self._complete_bridge(a, b)
        else:
            self._ring(b)
            a.set_time("Channel-Progress-Time", now_us())
            self._ev(a, "CHANNEL_PROGRESS")
        return a.uuid, b.uuid

    @staticmethod
    def _bridge_profile(
        ch: Channel, direction: str, caller: tuple[str, str], callee: tuple[str, str]
    ) -> None:
        """The caller profile both legs of a bridged call carry (s2/s5's 9002-b and 9000-a)."""
        ch.set_profile(
            Direction=direction,
            Logical_Direction=direction,
            Dialplan="xml",
            Caller_ID_Name=caller[0],
            Caller_ID_Number=caller[1],
            Orig_Caller_ID_Number=caller[1],
            Callee_ID_Name=callee[0],
            Callee_ID_Number=callee[1],
            ANI=caller[1],
            Destination_Number=callee[1],
            Unique_ID=ch.uuid,
            Source="mod_loopback",
            Context="default",
            Channel_Name=ch.name,
            Profile_Index="1",
        )
