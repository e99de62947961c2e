"""Channel/call model of the stand-in switch, one file per FreeSWITCH concept.

Every transition emits, in order, the events a FreeSWITCH 1.11 with loopback legs put on the wire
in the captures (see tests/fixtures/captures/SUMMARY.txt for the per-leg sequences).  Where the
captures interleave the legs of one call differently from run to run (dispatch threads race),
one observed interleaving is used; the per-leg order always matches the captures.

Traps reproduced on purpose, because a daemon has to cope with them:
  * CHANNEL_STATE(CS_INIT) precedes CHANNEL_CREATE; CHANNEL_STATE(CS_DESTROY) follows
    CHANNEL_DESTROY.
  * originate with an origination uuid fires two CODEC events under a throwaway uuid and then
    CHANNEL_UUID (Old-Unique-ID -> Unique-ID).
  * CHANNEL_HANGUP can precede CHANNEL_UNPARK / CHANNEL_EXECUTE_COMPLETE of the running app.
  * CHANNEL_BRIDGE / CHANNEL_UNBRIDGE fire once, on the leg that ran ``bridge``.
  * Channel-State-Number is the *requested* state, so it runs ahead of Channel-State.
  * att_xfer (reference notes §2): a consulting transferor has two bridges at once, and a
    Bridge-A transferor that hangs up to complete the transfer becomes a zombie -- listed, but
    gone for uuid_* commands -- until the target<->transferee bridge ends.
"""

from .leg import Channel, SwitchCrash, SwitchError, new_uuid
from .media import BROADCAST_APPS, GLOBAL_HOLD_MUSIC
from .model import CallModel
from .tables import str2cause

__all__ = [
    "BROADCAST_APPS",
    "GLOBAL_HOLD_MUSIC",
    "CallModel",
    "Channel",
    "SwitchCrash",
    "SwitchError",
    "new_uuid",
    "str2cause",
]
