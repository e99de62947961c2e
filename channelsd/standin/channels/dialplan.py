"""The dialplan: the capture switch's extensions, and the loop that runs a leg's applications.

Mirrors FreeSWITCH's ``mod_dialplan_xml`` (the extension -> applications table) and
``switch_core_session_execute_application`` (applications looked up by name and run in
order until one blocks).  Applications register themselves with :func:`dialplan_app`, the way
``mod_dptools`` registers them with ``SWITCH_ADD_APP``; each lives in the file of its concept
(``bridge`` in bridge.py, ``playback`` in media.py, ...).  A new application is one decorated
method: ``@dialplan_app("eavesdrop")`` on a mixin composed into ``CallModel``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .fire import FireMixin
from .leg import Channel

# The capture switch's dialplan (context "default"); any other extension answers and parks.
TONE = "tone_stream://%(1000,0,350);loops=-1"
DIALPLAN: dict[str, list[tuple[str, str]]] = {
    "9000": [("answer", ""), ("playback", TONE), ("park", "")],
    "9001": [("answer", ""), ("echo", "")],
    "9002": [("bridge", "loopback/9000/default")],
    "9003": [("answer", ""), ("park", "")],
    "9004": [("ring_ready", ""), ("park", "")],
    "9005": [
        ("answer", ""),
        ("playback", "tone_stream://%(500,500,440);loops=5"),
        ("playback", "tone_stream://%(500,500,480);loops=5"),
        ("playback", "tone_stream://%(500,500,620);loops=5"),
        ("park", ""),
    ],
    "9009": [("hangup", "USER_BUSY")],
    # reference §0.1: like 9002, but the dialplan parks once the bridge returns
    "9012": [("bridge", "loopback/9000/default"), ("park", "")],
    # reference §0.1: a caller whose callee rings forever
    "9014": [("bridge", "loopback/9004/default")],
}

NO_ROUTE = {"9999"}
DEFAULT_ANSWERED = [("answer", ""), ("park", "")]
DEFAULT_RINGING = [("ring_ready", ""), ("park", "")]


def plan_for(dest: str, answer: bool = True) -> list[tuple[str, str]] | None:
    """Applications the -b leg of loopback/<dest> runs; None means no route."""
    if dest in NO_ROUTE:
        return None
    if dest in DIALPLAN:
        plan = list(DIALPLAN[dest])
        if not answer and plan and plan[0][0] == "answer":
            return list(DEFAULT_RINGING)
        return plan
    return list(DEFAULT_ANSWERED if answer else DEFAULT_RINGING)


# An application runs on a leg with its argument string; True while the leg blocks in it.
DialplanApp = Callable[[Any, Channel, str], bool]
_App = TypeVar("_App", bound=DialplanApp)
DIALPLAN_APPS: dict[str, DialplanApp] = {}


def dialplan_app(name: str) -> Callable[[_App], _App]:
    """Register a ``CallModel`` method as the dialplan application ``name``."""

    def register(fn: _App) -> _App:
        DIALPLAN_APPS[name] = fn
        return fn

    return register


class DialplanMixin(FireMixin):
    """Runs a leg's queued applications."""

    def _continue(self, ch: Channel) -> None:
        """Run ``ch``'s queued applications until one blocks (park, playback, echo, bridge)."""
        while ch.dialplan and ch.alive:
            app, data = ch.dialplan.pop(0)
            if self._run_app(ch, app, data):
                break
        self._flush_deferred()

    def _run_app(self, ch: Channel, app: str, data: str) -> bool:
        """Execute one app; True when the app keeps running (the leg blocks in it)."""
        run = DIALPLAN_APPS.get(app)
        if run is None:
            # unknown applications behave like &nosuchapp(): the leg dies
            self.hangup(ch.uuid, "DESTINATION_OUT_OF_ORDER")
            return True
        return run(self, ch, data)

    def _unwind(self, ch: Channel, hangup: bool) -> None:
        """The running application returns (hangup, transfer, park, uuid_bridge); apps a
        broadcast nested on top of it return first."""
        status = "done" if hangup else "break"
        if ch.playing is not None:
            self._stop_playback(ch, status)
            if not ch.app_stack:
                return  # a dialplan playback: nothing runs underneath it
        while ch.app_stack:
            if ch.app_running:
                self._execute_complete(ch)
            ch.unnest_app()
            if self._resume_paused(ch):
                # the dialplan playback a broadcast paused ends too (reference §5.2)
                self._stop_playback(ch, status)
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

    @dialplan_app("park")
    def _app_park(self, ch: Channel, data: str) -> bool:
        self._execute(ch, "park")
        self._park_event(ch)
        return True

    @dialplan_app("echo")
    def _app_echo(self, ch: Channel, data: str) -> bool:
        self._execute(ch, "echo")
        return True
