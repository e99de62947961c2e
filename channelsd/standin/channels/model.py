"""The call model: every channel of one switch and the transitions between their states."""

from __future__ import annotations

import time
from typing import Any

from .. import templates
from ..events import now_us
from .att_xfer import AttXferMixin
from .bridge import BridgeMixin
from .calls import CallsMixin
from .dialplan import (
    DialplanMixin,
    dialplan_app,
)
from .fire import FireMixin
from .hold import HoldMixin
from .intercept import InterceptMixin
from .leg import Channel
from .loopback import LoopbackMixin
from .media import MediaMixin
from .state_machine import StateMachineMixin
from .tables import CAUSES, STATE_NUMBERS, str2cause
from .transfer import TransferMixin

# Order FreeSWITCH adds the CDR variables in at reporting time (from the captures).
_CDR_RANK = {name: i for i, name in enumerate(templates.load()["cdr_variables"])}


class CallModel(
    AttXferMixin,
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

            # attxfer_conf_key (three_way) is not modelled

    def sessions_per_second(self) -> int:
        cutoff = now_us() - 1_000_000
        return sum(1 for ch in self.channels.values() if ch.created_us >= cutoff)

    def reset(self) -> None:
        self.channels.clear()
        self._deferred.clear()
        self._answer_waiters.clear()
        self.attxfers.clear()
        self.zombies.clear()
