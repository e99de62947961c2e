"""The call model: the concept mixins composed into ``CallModel``.

Where a change goes (each file names the FreeSWITCH source it mirrors):

  tables.py         state / call-state numbers, hangup causes (switch_types.h)
  leg.py            Channel: one leg's state, profile and variables (switch_channel)
  base.py           the shared state and the lookups (switch_core_session_locate)
  fire.py           firing channel events from a leg's state
  loopback.py       new legs: loopback pairs, originate and its &app()
  state_machine.py  routing, execute, ring, early media, answer
  dialplan.py       the extensions, the application loop, @dialplan_app, unwinding an app
  bridge.py         the bridge app, uuid_bridge, leaving a bridge
  intercept.py      the intercept app (call pickup)
  dtmf.py           uuid_recv_dtmf, bind_digit_action and its digit machine
  eavesdrop.py      the eavesdrop app (listen in, whisper, barge) and its DTMF keys
  calls.py          ready-made bridged calls for tests and the demo, dial, ring_timeout
  sofia.py          SIP legs: mod_sofia's names, variables and codec (s8), hangup disposition
  media.py          playback, uuid_broadcast, uuid_break, uuid_record
  hold.py           uuid_hold
  transfer.py       uuid_transfer, uuid_park
  att_xfer.py       attended transfer (reference §2)
  hangup.py         uuid_kill, hupall, the hangup app, teardown and destroy, and a ringing
                    bridge's originate ending (ORIGINATOR_CANCEL, NO_ANSWER, a refusal)
  cdr.py            the CDR variables set at reporting time

The api commands that drive these are in ``standin/commands.py`` (``@api_command``), their reply
texts in ``standin/replies.py``.
"""

from __future__ import annotations

from typing import Any

from ..events import now_us
from .att_xfer import AttXferMixin
from .bridge import BridgeMixin
from .calls import CallsMixin
from .dialplan import DialplanMixin
from .dtmf import DtmfMixin
from .eavesdrop import EavesdropMixin
from .fire import FireMixin
from .hangup import HangupMixin
from .hold import HoldMixin
from .intercept import InterceptMixin
from .loopback import LoopbackMixin
from .media import MediaMixin
from .state_machine import StateMachineMixin
from .transfer import TransferMixin


class CallModel(
    EavesdropMixin,  # first: it hooks teardown, unwinding, call state and DTMF
    HangupMixin,
    AttXferMixin,
    DtmfMixin,
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

    def set_variable(self, uid: str, name: str, value: Any) -> None:
        """uuid_setvar: an empty value unsets the variable; no event of its own."""
        ch = self.get(uid)
        if value is None or value == "":
            ch.del_var(name)
        else:
            ch.set_var(name, value)

    def sessions_per_second(self) -> int:
        cutoff = now_us() - 1_000_000
        return sum(1 for ch in self.channels.values() if ch.created_us >= cutoff)

    def reset(self) -> None:
        """Forget every channel (a switch restart that recovered nothing)."""
        self.stop_timers()
        self.channels.clear()
        self._deferred.clear()
        self._answer_waiters.clear()
        self.attxfers.clear()
        self.zombies.clear()
        self.eavesdrops.clear()
