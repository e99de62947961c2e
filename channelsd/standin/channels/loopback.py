"""New legs: the loopback endpoint and originate.

Mirrors FreeSWITCH's ``mod_loopback`` (a ``loopback/<ext>[/<context>]`` dial makes two legs:
``-a``, outbound, which runs the originator's application, and ``-b``, inbound, which runs the
dialplan for ``<ext>``) and ``switch_ivr_originate.c`` (the ``{k=v}`` variable block, the
origination uuid swap with its CHANNEL_UUID event, the ``originator``/``Other-Leg`` bond of an
originated callee, and the ``&app()`` the answered leg runs).  The capture switch has only the
loopback endpoint, so any other dial string is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .dialplan import plan_for
from .fire import FireMixin
from .leg import Channel, new_uuid
from .tables import STATE_NUMBERS

_VARS_BLOCK = re.compile(r"^\{([^}]*)\}")


def parse_loopback(dialstring: str) -> tuple[dict[str, str], str, str] | None:
    """``[{k=v,..}]loopback/<ext>[/<context>]`` -> (variables, ext, context); None for any
    other endpoint (the stand-in only has the loopback endpoint, like the capture switch)."""
    variables: dict[str, str] = {}
    m = _VARS_BLOCK.match(dialstring)
    if m:
        for item in m.group(1).split(","):
            k, _, v = item.partition("=")
            if k.strip():
                variables[k.strip()] = v
        dialstring = dialstring[m.end() :]
    parts = dialstring.split("/")
    if parts[0] != "loopback" or len(parts) < 2 or not parts[1]:
        return None
    return variables, parts[1], parts[2] if len(parts) > 2 and parts[2] else "default"


class LoopbackMixin(FireMixin):
    """Creates loopback pairs and originates calls over them."""

    def originate(
        self,
        dest: str = "9000",
        variables: dict[str, Any] | None = None,
        *,
        answer: bool = True,
        app: str = "park",
        app_arg: str = "",
        uuid: str | None = None,
        use_origination_uuid: bool = True,
        context: str = "default",
    ) -> tuple[str, str]:
        """A loopback pair like s1/s5: a = loopback/<dest>-a runs ``app``, b = -b runs the
        dialplan for ``dest``.  ``answer=False`` makes the b-leg ring (ring_ready + park, like
        9004) until :meth:`answer`.  Returns (a_uuid, b_uuid)."""
        variables = dict(variables or {})
        if "origination_uuid" in variables:
            uuid = str(variables.pop("origination_uuid"))
        if uuid is None and use_origination_uuid:
            uuid = new_uuid()
        a, b = self.originate_legs(dest, context, variables, uuid, (app, app_arg), answer)
        return a.uuid, b.uuid

    def originate_legs(
        self,
        dest: str,
        context: str,
        variables: dict[str, Any],
        origination_uuid: str | None,
        start_app: tuple[str, str],
        answer: bool = True,
    ) -> tuple[Channel, Channel]:
        """Create a loopback pair whose -b leg runs the dialplan for ``dest``."""
        return self._loopback_pair(
            dest, context, variables, origination_uuid, plan_for(dest, answer), start_app
        )

    def _loopback_pair(
        self,
        dest: str,
        context: str,
        variables: dict[str, Any],
        origination_uuid: str | None,
        plan: list[tuple[str, str]] | None,
        start_app: tuple[str, str] | None,
        originator: Channel | None = None,
    ) -> tuple[Channel, Channel]:
        """Create loopback/<dest>-a (outbound) and -b (inbound, runs ``plan``)."""
        a = self._new_channel(f"loopback/{dest}-a", "outbound", origination_uuid)
        b = self._new_channel(f"loopback/{dest}-b", "inbound")
        a.loopback_peer, b.loopback_peer = b.uuid, a.uuid
        cid = ("", "0000000000")
        if originator is not None:
            cid = (
                originator.profile.get("Caller-ID-Name", ""),
                originator.profile.get("Caller-ID-Number", "0000000000"),
            )
        self._loopback_profile(a, dest, context, cid)
        self._loopback_profile(b, dest, context, cid)
        b.hit_dialplan = True
        b.dialplan = list(plan or [])
        a.start_app = start_app
        temp_name = f"loopback/{dest}/{context}-a"

        # a-leg: codec under a throwaway uuid, then CHANNEL_UUID (origination_uuid path)
        if originator is not None:
            for k, v in (
                ("direction", "outbound"),
                ("is_outbound", "true"),
                ("uuid", a.uuid),
                ("session_id", str(a.session_id)),
                ("read_codec", "L16"),
                ("read_rate", "8000"),
                ("write_codec", "L16"),
                ("write_rate", "8000"),
                ("loopback_from_uuid", originator.uuid),
                ("channel_name", a.name),
            ):
                a.set_var(k, v)
            self._originatee_vars(a, originator)
        else:
            self._base_vars(a, outbound_first=True)
        if origination_uuid is not None:
            temp = Channel(
                uuid=new_uuid(), name=temp_name, direction="outbound", created_us=a.created_us
            )
            temp.profile, temp.times = a.profile, a.times
            temp.state, temp.state_number = "CS_NONE", 0
            self._codec(temp)
            a.codecs = 2
            a.state_number = STATE_NUMBERS["CS_INIT"]
            a.state = "CS_NONE"
            self._ev(a, "CHANNEL_UUID", pre=[("Old-Unique-ID", temp.uuid)])
        else:
            a.state, a.state_number = "CS_NONE", 0
            self._codec(a, temp_name)
            a.state_number = STATE_NUMBERS["CS_INIT"]
        self._register(a)
        self._ev(a, "CHANNEL_OUTGOING")
        # variables set by the originate {} block and the loopback endpoint (presence_id is
        # already visible on the CS_INIT state event in s5_vars)
        if origination_uuid is not None:
            a.set_var("origination_uuid", origination_uuid)
        for k, v in variables.items():
            a.set_var(k, v)
        a.set_var("originate_early_media", "true")
        if originator is not None:
            a.set_var("originating_leg_uuid", originator.uuid)
        a.set_var("originate_endpoint", "loopback")
        a.set_var("other_loopback_leg_uuid", b.uuid)
        a.set_var("loopback_leg", "A")
        self._state(a, "CS_INIT")
        b.state, b.state_number = "CS_NONE", 0
        self._codec(b)
        self._register(b)
        a.state_number = STATE_NUMBERS["CS_ROUTING"]
        a.sql_call_uuid = a.call_uuid
        self._ev(a, "CHANNEL_CREATE")
        self._ev(a, "CHANNEL_ORIGINATE")
        self._state(a, "CS_ROUTING")
        if a.variables.get("presence_id"):
            a.state_number = STATE_NUMBERS["CS_CONSUME_MEDIA"]
            self._presence(a, "CS_ROUTING", "progressing", "check_presence")
        self._state(a, "CS_CONSUME_MEDIA")

        self._base_vars(b, outbound_first=False)
        if origination_uuid is not None:
            b.set_var("origination_uuid", origination_uuid)
        for k, v in variables.items():
            b.set_var(k, v)
        b.set_var("other_loopback_leg_uuid", a.uuid)
        if originator is not None:
            b.set_var("other_loopback_from_uuid", originator.uuid)
        b.set_var("loopback_leg", "B")
        self._route_inbound(b)
        if plan is None:
            # no dialplan match: the -b leg dies in routing, its twin follows
            self.hangup(b.uuid, "NO_ROUTE_DESTINATION")
            return a, b
        self._enter_execute(b)
        self._continue(b)
        return a, b

    def _loopback_profile(self, ch: Channel, dest: str, context: str, cid: tuple[str, str]) -> None:
        ch.set_profile(
            Direction=ch.direction,
            Logical_Direction=ch.direction,
            Dialplan="xml",
            Caller_ID_Name=cid[0],
            Caller_ID_Number=cid[1],
            Orig_Caller_ID_Number=cid[1],
            Callee_ID_Name="Outbound Call",
            Callee_ID_Number="default",
            ANI=cid[1],
            Destination_Number=dest,
            Unique_ID=ch.uuid,
            Source="mod_loopback",
            Context=context,
            Channel_Name=ch.name,
            Profile_Index="1",
        )
        ch.initial = {
            "cid_name": cid[0],
            "cid_num": cid[1],
            "dest": dest,
            "dialplan": "xml",
            "context": context,
        }

    def _base_vars(self, ch: Channel, outbound_first: bool) -> None:
        """The variables a fresh session carries (order as captured per leg type)."""
        sid = str(ch.session_id)
        if outbound_first:
            ch.set_var("direction", ch.direction)
            ch.set_var("is_outbound", "true")
            ch.set_var("session_id", sid)
            for k, v in (("read_codec", "L16"), ("read_rate", "8000")):
                ch.set_var(k, v)
            for k, v in (("write_codec", "L16"), ("write_rate", "8000")):
                ch.set_var(k, v)
            ch.set_var("channel_name", ch.name)
            ch.set_var("uuid", ch.uuid)
            ch.set_var("call_uuid", ch.uuid)
        else:
            ch.set_var("direction", ch.direction)
            ch.set_var("uuid", ch.uuid)
            ch.set_var("call_uuid", ch.uuid)
            ch.set_var("session_id", sid)
            ch.set_var("channel_name", ch.name)
            for k, v in (
                ("read_codec", "L16"),
                ("read_rate", "8000"),
                ("write_codec", "L16"),
                ("write_rate", "8000"),
            ):
                ch.set_var(k, v)

    def _originatee_vars(self, callee: Channel, caller: Channel) -> None:
        callee.set_var("max_forwards", "70")
        callee.set_var("originator_codec", "L16@8000h@20i")
        callee.set_var("originator", caller.uuid)
        callee.set_var("signal_bond", caller.uuid)
        callee.set_var("call_uuid", caller.uuid)
        callee.other_type = "originator"
        callee.other_profile = caller.other_leg_profile(with_times=False)

    def _start_originate_app(self, a: Channel) -> None:
        """Once the originated -a leg is answered (or has early media) it flips caller id
        (CALL_UPDATE) and runs the ``&app()`` of the originate."""
        if a.start_app is None or not a.alive:
            return
        app, arg = a.start_app
        a.start_app = None
        old_name = a.profile.get("Caller-ID-Name", "")
        old_num = a.profile.get("Caller-ID-Number", "")
        a.set_profile(
            Caller_ID_Name=a.profile.get("Callee-ID-Name", ""),
            Caller_ID_Number=a.profile.get("Callee-ID-Number", ""),
            Callee_ID_Name=old_name,
            Callee_ID_Number=old_num,
        )
        if "endpoint_disposition" not in a.variables:
            a.set_var("endpoint_disposition", "ANSWER")
        a.set_var("pre_transfer_caller_id_number", old_num)
        a.set_var("channel_cid_flipped", "yes")
        a.hit_dialplan = True
        a.callee_direction = "RECV"
        self._ev(a, "CALL_UPDATE", pre=[("Direction", "RECV")])
        self._enter_execute(a)
        if app == "__transfer__":
            # originate <url> <exten>: the leg runs the dialplan of that extension
            a.dialplan = plan_for(arg) or [("hangup", "NO_ROUTE_DESTINATION")]
        else:
            a.dialplan = [(app, arg)]
        self._continue(a)

    def on_answer(self, uid: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` once ``uid`` is answered (what api originate waits for)."""
        self._answer_waiters.setdefault(uid, []).append(callback)
