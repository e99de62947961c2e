"""A leg's way through routing, execute, ringing, early media and answer.

Mirrors FreeSWITCH's ``switch_core_state_machine.c`` (CS_INIT -> CS_ROUTING -> CS_EXECUTE, with
Channel-State-Number running ahead as the *requested* state) and the answer path of
``switch_channel.c`` (``switch_channel_perform_mark_ring_ready``, ``..._mark_pre_answered``,
``..._mark_answered``): a loopback twin follows its leg, the ``-a`` (outbound) side first.
The ``answer`` and ``ring_ready`` applications live here too.
"""

from __future__ import annotations

from functools import partial

from ..events import now_us
from .dialplan import dialplan_app
from .fire import FireMixin
from .leg import Channel
from .tables import STATE_NUMBERS


class StateMachineMixin(FireMixin):
    """Routing, execute, progress and answer of a leg (and its loopback twin)."""

    def _route_inbound(self, ch: Channel) -> None:
        """An inbound leg's start, as captured: CS_INIT, CREATE, then routing (RINGING), with
        the presence probes a leg with a presence_id fires."""
        self._state(ch, "CS_INIT")
        ch.state_number = STATE_NUMBERS["CS_ROUTING"]
        self._ev(ch, "CHANNEL_CREATE")
        ch.state = "CS_ROUTING"
        self._callstate(ch, "RINGING")
        self._state(ch, "CS_ROUTING")
        if ch.variables.get("presence_id"):
            ch.state_number = STATE_NUMBERS["CS_EXECUTE"]
            self._presence(ch, "CS_ROUTING", "alerting", "check_presence")

    def _enter_execute(self, ch: Channel) -> None:
        # FreeSWITCH re-sets call_uuid when the session starts executing (it moves to the end
        # of the variable list in every capture).
        ch.set_var("call_uuid", ch.variables.get("call_uuid", ch.uuid))
        self._state(ch, "CS_EXECUTE")

    def _ring(self, ch: Channel) -> None:
        """ring_ready on a loopback -b leg: the -a twin sees PROGRESS + RINGING first."""
        peer = self._peer(ch)
        for leg in ([peer] if peer else []) + [ch]:
            if leg.times.get("Channel-Progress-Time"):
                continue
            leg.set_time("Channel-Progress-Time", now_us())
            self._ev(leg, "CHANNEL_PROGRESS")
            if leg.call_state != "RINGING":
                self._callstate(leg, "RINGING")

    def _early_media(self, ch: Channel) -> None:
        """Pre-answer (the bridge app gives the caller early media)."""
        peer = self._peer(ch)
        legs = ([peer] if peer and not peer.answered else []) + [ch]
        for leg in legs:
            self._media_up(leg)
            leg.set_time("Channel-Progress-Media-Time", now_us())
            leg.answer_state = "early"
            if leg.direction == "outbound":
                leg.set_var("endpoint_disposition", "EARLY MEDIA")
            elif leg.bridge_side == "A":
                # the bridge's originate reports early media on the caller (s5_vars)
                leg.set_var("originate_disposition", "failure")
                leg.set_var("DIALSTATUS", "INVALIDARGS")
                leg.set_var("endpoint_disposition", "EARLY MEDIA")
            self._ev(leg, "CHANNEL_PROGRESS_MEDIA")
            self._callstate(leg, "EARLY")
        if peer is not None and peer.start_app is not None:
            self._start_originate_app(peer)

    def _media_up(self, ch: Channel) -> None:
        """A leg with no codec yet gets one when its media starts (s8's SIP legs: CODEC x2 right
        before early media or the answer); loopback legs have theirs from creation."""
        if ch.codecs == 0:
            self._codec(ch)

    def _mark_answered(self, ch: Channel) -> None:
        self._media_up(ch)
        ch.set_time("Channel-Answered-Time", now_us())
        ch.answer_state = "answered"
        self._ev(ch, "CHANNEL_ANSWER")
        if ch.other_type == "originator" or (
            ch.variables.get("endpoint_disposition") == "EARLY MEDIA" and ch.direction == "outbound"
        ):
            ch.set_var("endpoint_disposition", "ANSWER")
        self._presence(ch, "answered", "active", "mark_answered")
        self._callstate(ch, "ACTIVE")
        for cb in self._answer_waiters.pop(ch.uuid, []):
            cb()

    def _answer(self, ch: Channel) -> None:
        """Answer ``ch``; a loopback twin answers too, outbound (-a) side first."""
        peer = self._peer(ch)
        legs = [ch]
        if peer is not None and not peer.answered:
            legs = [peer, ch] if peer.direction == "outbound" else [ch, peer]
        for leg in legs:
            if not leg.answered:
                self._mark_answered(leg)
        for leg in legs:
            if leg.start_app is not None:
                self._deferred.append(partial(self._start_originate_app, leg))

    def answer(self, uid: str) -> None:
        """Answer a ringing leg (and its loopback twin / the bridge waiting on it)."""
        ch = self.get(uid)
        if ch.bridge_side == "A" and not ch.bridge_peer:
            # answering a caller that waits in ``bridge`` means its callee picked up
            callee = next(
                (c for c in self.channels.values() if c.variables.get("originator") == ch.uuid),
                None,
            )
            if callee is not None and callee.alive and not callee.answered:
                ch = callee
        if ch.answered:
            return
        peer = self._peer(ch)
        caller = self.channels.get(ch.variables.get("originator", ""))
        xf, role = self._attxfer_of(ch)
        if role != "target" and peer is not None:
            xf, role = self._attxfer_of(peer)
        self._answer(ch)
        self._flush_deferred()
        if xf is not None and role == "target":
            if not xf.answered and self.locate(xf.target):
                self._attxfer_connect(xf)
            return
        if caller is not None and caller.bridge_side == "A" and not caller.bridge_peer:
            self._complete_bridge(caller, ch)
        elif peer is not None and peer.other_type == "originator":
            owner = self.channels.get(peer.variables.get("originator", ""))
            if owner is not None and not owner.bridge_peer:
                self._complete_bridge(owner, peer)

    @dialplan_app("answer")
    def _app_answer(self, ch: Channel, data: str) -> bool:
        self._execute(ch, "answer")
        if not ch.answered:
            self._answer(ch)
        ch.set_var("endpoint_disposition", "ANSWER")
        self._execute_complete(ch)
        return False

    @dialplan_app("ring_ready")
    def _app_ring_ready(self, ch: Channel, data: str) -> bool:
        self._execute(ch, "ring_ready")
        self._ring(ch)
        self._execute_complete(ch)
        return False
