"""Leaving the running application for elsewhere: ``uuid_transfer`` and ``uuid_park``.

Mirrors FreeSWITCH's ``switch_ivr_session_transfer`` (a new caller profile -- index+1, RDNIS,
Transfer-Source -- then routing again into the new extension; the other party of a bridge hangs
up, s2_transfer, reference §1) and ``switch_ivr_park_session`` (CS_PARK and CHANNEL_PARK with
no EXECUTE).
"""

from __future__ import annotations

from ..events import now_us
from .dialplan import DEFAULT_ANSWERED, DIALPLAN, NO_ROUTE
from .fire import FireMixin
from .leg import Channel, new_uuid
from .tables import STATE_NUMBERS


class TransferMixin(FireMixin):
    """``uuid_transfer`` and ``uuid_park``."""

    def transfer(
        self,
        uid: str,
        dest: str,
        dialplan: str = "XML",
        context: str = "default",
        keep_partner: bool = False,
    ) -> None:
        """uuid_transfer of one leg (s2_transfer); the other party of a bridge hangs up unless
        park/transfer_after_bridge keep it (reference §1.4) or it is transferred too
        (``keep_partner``: ``-both``, §1.2)."""
        ch = self.get(uid)
        self._attxfer_forget(ch)
        partner = self.channels.get(ch.bridge_peer or "")
        if partner is not None and ch.bridge_side == "A":
            if not keep_partner:
                self._release_b_side(partner)
            ch.state_number = STATE_NUMBERS["CS_ROUTING"]
            ch.other_type, ch.other_profile = None, None
            self._new_profile(ch, dest, dialplan, context)
            self._unbridge(ch)
            ch.state = "CS_ROUTING"
            self._callstate(ch, "RINGING")
            self._state(ch, "CS_ROUTING")
            ch.state_number = STATE_NUMBERS["CS_EXECUTE"]
            ch.state = "CS_EXECUTE"
            self._callstate(ch, "ACTIVE")
            self._state(ch, "CS_EXECUTE")
        elif partner is not None and ch.bridge_side == "B":
            ch.state_number = STATE_NUMBERS["CS_ROUTING"]
            if keep_partner:
                self._unbridge(partner)
            else:
                self._release_a_side(partner)
            ch.bridge_peer, ch.bridge_side = None, None
            ch.other_type, ch.other_profile = None, None
            self._new_profile(ch, dest, dialplan, context)
            self._state(ch, "CS_ROUTING")
            ch.hit_dialplan = True
            ch.set_var("call_uuid", ch.uuid)
            self._ev(ch, "CALL_UPDATE", pre=[("Direction", "RECV")])
            self._state(ch, "CS_EXECUTE")
        else:
            ch.state_number = STATE_NUMBERS["CS_ROUTING"]
            self._new_profile(ch, dest, dialplan, context)
            self._unwind(ch, hangup=False)
            ch.bridge_side = None
            self._state(ch, "CS_ROUTING")
            self._state(ch, "CS_EXECUTE")
        ch.broadcast_queue.clear()
        if dest in NO_ROUTE:
            self.hangup(ch.uuid, "NO_ROUTE_DESTINATION")
            return
        ch.dialplan = list(DIALPLAN.get(dest, DEFAULT_ANSWERED))
        self._continue(ch)

    def transfer_both(
        self, uid: str, dest: str, dialplan: str = "XML", context: str = "default"
    ) -> None:
        """uuid_transfer -both (reference §1.2): each leg of the bridge runs the extension on
        its own; nobody is hung up and the two are not connected afterwards."""
        ch = self.get(uid)
        partner = self._partner(ch)
        self.transfer(ch.uuid, dest, dialplan, context, keep_partner=partner is not None)
        if partner is not None and partner.alive:
            self.transfer(partner.uuid, dest, dialplan, context)

    def _new_profile(self, ch: Channel, dest: str, dialplan: str, context: str) -> None:
        """A transfer gives the leg a new caller profile (index+1, RDNIS, Transfer-Source)."""
        ts = now_us()
        source = f"{ts // 1_000_000}:{new_uuid()}:bl_xfer:{dest}/{context}/{dialplan}"
        old_dest = ch.profile.get("Destination-Number", "")
        index = int(ch.profile.get("Profile-Index", "1")) + 1
        ch.set_profile(
            Logical_Direction="inbound",
            Dialplan=dialplan,
            Destination_Number=dest,
            Transfer_Source=source,
            Context=context,
            RDNIS=old_dest,
            Profile_Index=str(index),
        )
        ch.set_time("Channel-Transfer-Time", ts)
        fwd = int(str(ch.variables.get("max_forwards", "71"))) - 1
        ch.set_var("max_forwards", str(fwd))
        history = ch.variables.get("transfer_history")
        if history is None:
            ch.set_var("transfer_history", source)
        elif isinstance(history, list):
            ch.variables["transfer_history"] = [*history, source]
        else:
            ch.variables["transfer_history"] = [history, source]
        ch.set_var("transfer_source", source)

    def park(self, uid: str) -> None:
        """uuid_park: leave the running app and sit in CS_PARK (CHANNEL_PARK, no EXECUTE)."""
        ch = self.get(uid)
        if ch.parked:
            return
        self._attxfer_forget(ch)
        partner = self.channels.get(ch.bridge_peer or "")
        self._unwind(ch, hangup=False)
        if partner is not None and ch.bridge_side == "A":
            self._release_b_side(partner)
        elif partner is not None and ch.bridge_side == "B":
            self._release_a_side(partner)
            ch.bridge_peer, ch.bridge_side = None, None
        ch.dialplan = []
        self._state(ch, "CS_PARK")
        self._park_event(ch)
