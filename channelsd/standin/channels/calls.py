"""Ready-made calls for tests and the demo: a bridged A -> B call in one step.

Builds the two legs the capture switch's ``9002`` extension makes (s2/s5: ``loopback/9002-b``
runs ``bridge loopback/9000/default`` and ``loopback/9000-a`` is its callee), with the names and
caller ids a test asks for, event for event as the captures show them.  Given :class:`SipEnd`
ends instead, the legs are a SIP deployment's two legs (reference §0.2: "a real SIP deployment
has only the two middle legs"): the caller's ``sofia/...`` leg runs ``bridge`` to the callee's,
with s8's SIP variables and codec.  ``dial`` runs such a bridge on a leg that is already up (a
transferred caller), and ``ring_timeout`` is the originate's timer running out.
"""

from __future__ import annotations

from typing import Any

from ..events import now_us
from .fire import FireMixin
from .leg import Channel
from .sofia import SipEnd, sip_variables
from .tables import STATE_NUMBERS

Party = tuple[str, str]  # (caller/callee id name, number)


class CallsMixin(FireMixin):
    """Whole calls set up in one call (the switch's own transitions, no shortcuts)."""

    def bridged_call(
        self,
        variables_a: dict[str, Any] | None = None,
        variables_b: dict[str, Any] | None = None,
        caller: Party = ("Alice", "1001"),
        callee: Party = ("Bob", "1002"),
        answer: bool = True,
        name_a: str | None = None,
        name_b: str | None = None,
        *,
        sip_a: SipEnd | None = None,
        sip_b: SipEnd | None = None,
        context: str = "default",
        dialled: str | None = None,
    ) -> tuple[str, str]:
        """Two legs bridged like s2/s5's 9002-b -> 9000-a: a (inbound) runs ``bridge``, b is the
        outbound callee; ``answer=False`` leaves b ringing.  ``sip_a`` / ``sip_b`` make them SIP
        legs; ``context`` and ``dialled`` are the caller's ("public" and the DID for a call from
        a trunk; the callee's number by default).  Returns (a_uuid, b_uuid)."""
        dest = dialled or callee[1]
        if sip_a is None:
            a = self._new_channel(name_a or f"loopback/{dest}-b", "inbound")
        else:
            a = self._new_channel(name_a or sip_a.channel_name, "inbound")
        self._bridge_profile(a, "inbound", caller, callee, context)
        a.set_profile(Destination_Number=dest)
        a.initial = {
            "cid_name": caller[0],
            "cid_num": caller[1],
            "dest": dest,
            "dialplan": "xml",
            "context": context,
        }
        a.hit_dialplan = True
        self._base_vars(a, outbound_first=False)
        if sip_a is not None:
            self._sip_leg(a, sip_a, to_user=dest, from_user=caller[1])
        for k, v in (variables_a or {}).items():
            a.set_var(k, v)
        if sip_a is None:
            a.state, a.state_number = "CS_NONE", 0
            self._codec(a)
            self._register(a)
        else:
            # s8's inbound SIP leg: CHANNEL_STATE CS_NEW first, no codec before its media
            self._register(a)
            self._state(a, "CS_NEW")
        self._route_inbound(a)
        self._enter_execute(a)
        b = self._bridge_out(a, callee, variables_b, answer, name_b, sip_b)
        return a.uuid, b.uuid

    def dial(
        self,
        uid: str,
        callee: Party,
        variables: dict[str, Any] | None = None,
        answer: bool = False,
        sip: SipEnd | None = None,
    ) -> str:
        """``uid`` (up, not bridged: parked after a transfer, say) runs ``bridge`` to a new
        callee, which rings (or answers at once).  Returns the callee's uuid."""
        a = self.get(uid)
        if a.bridge_peer or self.ringing_callees(a):
            raise ValueError(f"{uid} is in a bridge already")
        self._unwind(a, hangup=False)
        a.dialplan = []
        return self._bridge_out(a, callee, variables, answer, None, sip).uuid

    def ring_timeout(self, uid: str) -> list[str]:
        """The originate of ``uid``'s ``bridge`` times out (its call_timeout / leg_timeout ran
        out): every callee still ringing hangs up NO_ANSWER and the bridge returns
        (switch_ivr_originate's IDX_TIMEOUT).  Returns the callees hung up."""
        caller = self.get(uid)
        gone = self.ringing_callees(caller)
        for callee in gone:
            if callee.alive:
                self._teardown(callee, "NO_ANSWER")
        return [c.uuid for c in gone]

    # -- the two halves of a call ------------------------------------------------------------
    def _bridge_out(
        self,
        a: Channel,
        callee: Party,
        variables: dict[str, Any] | None,
        answer: bool,
        name: str | None,
        sip: SipEnd | None,
    ) -> Channel:
        """``a`` executes ``bridge``: its callee b is created and rings, or answers and is
        bridged at once (s2/s5's 9002-b -> 9000-a)."""
        dest = callee[1]
        caller: Party = (a.profile.get("Caller-ID-Name", ""), a.profile.get("Caller-ID-Number", ""))
        target = f"loopback/{dest}/default" if sip is None else sip.dial_string
        self._execute(a, "bridge", target)
        a.set_var("current_application", "bridge")
        a.bridge_side = "A"
        if answer and not a.answered:
            self._early_media(a)

        if sip is None:
            b = self._new_channel(name or f"loopback/{dest}-a", "outbound")
        else:
            b = self._new_channel(name or sip.channel_name, "outbound")
        self._bridge_profile(b, "outbound", caller, callee, "default")
        b.initial = {**a.initial, "dest": dest}
        self._base_vars(b, outbound_first=True)
        b.del_var("call_uuid")
        if sip is not None:
            b.set_profile(Source="src/switch_ivr_originate.c", Network_Addr=sip.ip)
            b.initial["ip_addr"] = sip.ip
            self._sip_leg(b, sip, to_user=dest, from_user=caller[1])
        self._originatee_vars(b, a)
        if a.codec_name != "L16":
            b.set_var("originator_codec", f"{a.codec_name}@{a.codec_rate}h@20i")
        b.set_var("originate_early_media", "true")
        b.set_var("originating_leg_uuid", a.uuid)
        for k, v in (variables or {}).items():
            b.set_var(k, v)
        b.state, b.state_number = "CS_NONE", 0
        if sip is None:
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
            if not a.answered:  # an answered caller (transferred) hears ringback, no event
                a.set_time("Channel-Progress-Time", now_us())
                self._ev(a, "CHANNEL_PROGRESS")
        return b

    def _sip_leg(self, ch: Channel, end: SipEnd, to_user: str, from_user: str) -> None:
        """Make ``ch`` a sofia leg towards ``end``: its codec and s8's SIP variables."""
        ch.codec_name, ch.codec_rate = end.codec, end.rate
        if ch.direction == "inbound":
            ch.set_profile(Source="mod_sofia", Network_Addr=end.ip, Username=from_user)
            ch.initial["ip_addr"] = end.ip
        local_ip = self.b.ipv4
        # an even RTP port per session, as FreeSWITCH's rtp-start-port range hands them out
        port = 16384 + (2 * ch.session_id) % 16384
        for k, v in sip_variables(end, ch.direction, local_ip, port, to_user, from_user):
            ch.set_var(k, v)

    @staticmethod
    def _bridge_profile(
        ch: Channel, direction: str, caller: Party, callee: Party, context: str
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
            Context=context,
            Channel_Name=ch.name,
            Profile_Index="1",
        )
