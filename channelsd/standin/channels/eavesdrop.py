"""The ``eavesdrop`` application: one leg listens in on another, and may whisper or barge.

Mirrors ``mod_dptools``' ``eavesdrop <uuid>`` (``eavesdrop_function``) and
``switch_ivr_eavesdrop_session`` (``switch_ivr_async.c``), as read in FreeSWITCH's source and
the mod_dptools documentation.  NOTHING here was run on a real switch
(freeswitch-actions-verified.md has no eavesdrop, no capture runs it); only the layout of
MEDIA_BUG_START / MEDIA_BUG_STOP is captured (s8_sip_call, for a ``session_record`` bug).

What the source says and the model does:
  * The listener's variables are read once, when the app starts: ``eavesdrop_enable_dtmf``
    (DTMF controls, on unless false), ``eavesdrop_whisper_aleg`` (ED_MUX_READ: the listener
    is mixed into what the target reads, so the target's bridge partner hears it) and
    ``eavesdrop_whisper_bleg`` (ED_MUX_WRITE: mixed into what is written to the target, so
    the target's own phone hears it); both is what ``three_way`` does.
    ``eavesdrop_require_group`` needs the target's ``eavesdrop_group`` (a comma list) to name it.
  * The app ends at once when the argument is empty, the target is not found, is the
    listener itself, or the group does not match.
  * A media bug ``eavesdrop`` with target ``<uuid>`` on the target: MEDIA_BUG_START; its
    removal (MEDIA_BUG_STOP) when the listener's loop ends, or in the target's hangup state
    (``switch_core_media_bug_remove_all``, just before CHANNEL_CALLSTATE HANGUP).
  * DTMF on the listener (``uuid_recv_dtmf <listener>``), when enabled: ``1`` talk to the
    target's partner, ``2`` talk to the target, ``3`` both, ``0`` listen only, ``*`` stop;
    ``4``-``6`` only change the video layout and nothing else does anything (``#`` included).
  * The loop ends when the target goes (the listener's app returns, and with no application
    left the listener hangs up NORMAL_CLEARING, "executed the last dialplan instruction") or
    when the listener goes (the target is untouched but for MEDIA_BUG_STOP).

Not modelled: audio itself; the wait of up to ~6 s for a target without media (here the app
ends at once); the caller-id display update; ``eavesdrop all``; the ``eavesdrop-command``
event header; a loopback -b leg passing its phone's DTMF on to the -a leg running the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dialplan import dialplan_app
from .fire import FireMixin
from .leg import Channel

# switch_true(): what FreeSWITCH reads as true in a variable (switch_utils.h).
_TRUE = frozenset(("yes", "on", "true", "t", "enabled", "active", "allow"))


def switch_true(value: Any) -> bool:
    text = str(value or "").strip().lower()
    if text in _TRUE:
        return True
    return text.lstrip("-").isdigit() and int(text) != 0


@dataclass
class Eavesdrop:
    """One running eavesdrop: ``listener`` runs the app on ``target``."""

    listener: str
    target: str
    mux_read: bool  # the target's partner hears the listener (key 1)
    mux_write: bool  # the target hears the listener (key 2)
    dtmf: bool
    bug: bool = True  # the media bug is still on the target

    @property
    def mode(self) -> str:
        """listen / whisper-peer / whisper-self / barge, for tests and the demo."""
        return {
            (False, False): "listen",
            (True, False): "whisper-peer",
            (False, True): "whisper-self",
            (True, True): "barge",
        }[(self.mux_read, self.mux_write)]


class EavesdropMixin(FireMixin):
    """The ``eavesdrop`` dialplan application and its DTMF controls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # running eavesdrops by listener uuid
        self.eavesdrops: dict[str, Eavesdrop] = {}

    @dialplan_app("eavesdrop")
    def _app_eavesdrop(self, me: Channel, arg: str) -> bool:
        self._execute(me, "eavesdrop", arg)
        target = self.locate(arg) if arg else None
        if target is None or target is me or not self._group_ok(me, target):
            return self._eavesdrop_returned(me)
        if not (self._has_media(me) and self._has_media(target)):
            # the real app first waits up to ~6 s for the target's media
            return self._eavesdrop_returned(me)
        v = me.variables
        dtmf = switch_true(v["eavesdrop_enable_dtmf"]) if "eavesdrop_enable_dtmf" in v else True
        self.eavesdrops[me.uuid] = Eavesdrop(
            me.uuid,
            target.uuid,
            mux_read=switch_true(v.get("eavesdrop_whisper_aleg")),
            mux_write=switch_true(v.get("eavesdrop_whisper_bleg")),
            dtmf=dtmf,
        )
        self._bug_event(target, "MEDIA_BUG_START", arg)
        return True

    @staticmethod
    def _has_media(ch: Channel) -> bool:
        """switch_channel_media_up: answered or early media."""
        return ch.answered or ch.answer_state == "early"

    @staticmethod
    def _group_ok(me: Channel, target: Channel) -> bool:
        group = me.variables.get("eavesdrop_require_group")
        if not group:
            return True
        names = str(target.variables.get("eavesdrop_group") or "").split(",")
        return str(group) in names

    def _bug_event(self, target: Channel, name: str, bug_target: str) -> None:
        pre = [("Media-Bug-Function", "eavesdrop"), ("Media-Bug-Target", bug_target)]
        self._ev(target, name, pre=pre)

    def _eavesdrop_returned(self, me: Channel) -> bool:
        """The app returned on ``me``: the next application, or the end of the extension."""
        self._execute_complete(me)
        if me.dialplan:
            return False
        self.hangup(me.uuid, "NORMAL_CLEARING")
        return True

    def _listener_done(self, uid: str) -> None:
        """The loop ended with the listener still up: its app returns, the dialplan goes on."""
        listener = self.locate(uid)
        if listener is not None and not self._eavesdrop_returned(listener):
            self._continue(listener)

    def _stop_eavesdrop(self, e: Eavesdrop) -> None:
        """The listener's loop ended: the bug leaves the target (if it is still there)."""
        self.eavesdrops.pop(e.listener, None)
        target = self.channels.get(e.target)
        if e.bug and target is not None:
            e.bug = False
            self._bug_event(target, "MEDIA_BUG_STOP", e.target)

    # -- the listener's DTMF ------------------------------------------------------------------

    def recv_dtmf(self, uid: str, digits: str) -> None:
        super().recv_dtmf(uid, digits)  # finds the channel (or refuses), att_xfer keys
        for digit in digits:
            e = self.eavesdrops.get(uid)
            if e is None or not e.dtmf:
                return
            if digit == "*":
                self._stop_eavesdrop(e)
                self._listener_done(uid)
                return
            flags = {"1": (True, False), "2": (False, True), "3": (True, True), "0": (False, False)}
            if digit in flags:
                e.mux_read, e.mux_write = flags[digit]

    # -- hooks into what other concepts do ----------------------------------------------------

    def _callstate(self, ch: Channel, new: str) -> None:
        if new == "HANGUP":
            # switch_core_session_hangup_state removes every media bug, then sets the
            # call state: each listener's bug goes, the listener itself only after.
            for e in self.eavesdrops.values():
                if e.target == ch.uuid and e.bug:
                    e.bug = False
                    self._bug_event(ch, "MEDIA_BUG_STOP", e.target)
        super()._callstate(ch, new)

    def _unwind(self, ch: Channel, hangup: bool) -> None:
        # The listener hangs up, is transferred, parked or bridged: its loop ends, the bug
        # leaves the target, then the app returns (EXECUTE_COMPLETE in the unwinding).
        e = self.eavesdrops.get(ch.uuid)
        if e is not None:
            self._stop_eavesdrop(e)
        super()._unwind(ch, hangup)

    def _teardown(
        self,
        ch: Channel,
        cause: str,
        announced: bool = False,
        unwound: bool = False,
        cascade_bridge: bool = True,
    ) -> None:
        super()._teardown(ch, cause, announced, unwound, cascade_bridge)
        # The eavesdropped leg is gone: each listener's loop sees it and the app returns.
        for e in [e for e in self.eavesdrops.values() if e.target == ch.uuid]:
            self._stop_eavesdrop(e)
            self._listener_done(e.listener)
