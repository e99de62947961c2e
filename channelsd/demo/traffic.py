"""The demo's calls: a small PBX's day, played on the stand-in switch.

Each call is a caller's SIP leg running ``bridge`` to a callee that rings.  What happens next
is drawn when it starts ringing: the callee answers after a few seconds, refuses (busy), the
caller gives up (its callee is cancelled, ORIGINATOR_CANCEL), or nobody answers and the ring
timeout hangs the callee up (NO_ANSWER) -- the deadline is always scheduled, so no leg rings
past its timeout whatever else happens.  An answered call talks for a while, sometimes with a
hold, a recording or a blind transfer to a colleague (whose phone then rings), and ends with one
side's BYE.  New calls arrive so that about ``target_calls`` calls are up.

Time is the traffic's own: events wait in a queue keyed by simulated seconds.  ``run`` plays
them in real time; ``advance`` plays the next N seconds at once (tests run an hour in seconds),
so the traffic is deterministic for a seed and costs nothing between events.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent

from channelsd.standin.channels import SwitchError

from . import pbx

log = logging.getLogger("channelsd.demo")

HEARTBEAT_SECONDS = 20.0
MEAN_CALL_SECONDS = 60.0  # a call's life, ringing included (what the arrival rate aims at)
MEAN_TALK_SECONDS = 70.0
MAX_CALL_SECONDS = 1800.0  # a PBX's longest call: ended then (ALLOTTED_TIMEOUT), whatever kept it
PHONE_TIMEOUT = 20  # seconds a phone rings before the switch gives up (call_timeout)
TRUNK_TIMEOUT = 30
# What a ringing callee does: (outcome, probability); the rest ring out (NO_ANSWER).
OUTCOMES = (("answer", 0.72), ("give_up", 0.10), ("refuse", 0.05))
KINDS = (("internal", 0.40), ("outbound", 0.35), ("inbound", 0.25))


@dataclass(eq=False)
class Call:
    """One call the traffic placed: its caller leg, its current callee, every leg it had."""

    id: int
    kind: str  # "internal", "outbound" (to the trunk) or "inbound" (from the trunk)
    user: pbx.DemoUser  # the account's phone on the call: the caller's, or the callee's
    # when the call came from the trunk (after a transfer: the colleague's)
    caller: str  # the leg that runs ``bridge``
    callee: str  # the leg it rings or talks to now
    timeout: float
    placed: float
    ring_start: float = 0.0
    epoch: int = 0  # bumped by a transfer: events scheduled before it are void
    held: str | None = None
    legs: list[str] = field(default_factory=list)


class Traffic:
    """Keeps a realistic, changing set of calls up on the stand-in switch."""

    def __init__(self, switch: Any, target_calls: int, seed: int | None = None) -> None:
        self.switch = switch
        self.model = switch.model
        self.target = max(1, target_calls)
        self.rng = random.Random(seed)
        self.users = pbx.demo_users()
        self.calls: dict[int, Call] = {}
        self.now = 0.0
        self.started = False
        self._ids = itertools.count(1)
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        # what happened, for tests: (time, what, call id), and the steps that went wrong
        self.history: list[tuple[float, str, int]] = []
        self.failures: list[str] = []

    # -- the clock ----------------------------------------------------------------------------
    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn, args))

    def start(self) -> None:
        """The first calls (already talking, so the board is full at once) and the timers."""
        if self.started:
            return
        self.started = True
        for _ in range(self.target):
            self._place(
                self._draw(KINDS), answered=True, user=self.rng.choice(self._least_busy()[1])
            )
        self.at(self.now + self.rng.uniform(1, 4), self._arrival)
        self.at(self.now + self.rng.uniform(2, 4), self._refill)
        self.at(self.now + HEARTBEAT_SECONDS, self._heartbeat)

    def advance(self, seconds: float) -> None:
        """Play the next ``seconds`` of traffic at once (simulated time, no sleeping)."""
        self.advance_to(self.now + seconds)

    def advance_to(self, when: float) -> None:
        self.start()
        while self._queue and self._queue[0][0] <= when:
            due, _, fn, args = heapq.heappop(self._queue)
            self.now = max(self.now, due)
            try:
                fn(*args)
            except SwitchError as exc:
                # the call changed under the step (an operator hung it up or moved it through
                # the API): the switch refused, the traffic goes on
                self._failed(f"{fn.__name__} refused by the switch: {exc.reply.strip()}")
                log.info("demo traffic step refused by the switch: %s", exc.reply.strip())
            except Exception as exc:  # the demo must keep going; say what broke
                self._failed(f"{fn.__name__} failed: {exc!r}")
                log.exception("demo traffic step failed")
        self.now = max(self.now, when)

    def run(self) -> None:
        """Play the traffic in real time, for ever."""
        self.start()
        origin = time.monotonic() - self.now
        while True:
            due = self._queue[0][0] if self._queue else self.now + 1.0
            gevent.sleep(max(0.0, due - (time.monotonic() - origin)))
            self.advance_to(time.monotonic() - origin)

    # -- what the calls are -------------------------------------------------------------------
    def _draw(self, table: tuple[tuple[str, float], ...]) -> str:
        roll = self.rng.random()
        for name, p in table:
            if roll < p:
                return name
            roll -= p
        return ""

    def _colleagues(self, user: pbx.DemoUser) -> list[pbx.DemoUser]:
        return [u for u in self.users if u.account == user.account and u != user]

    def live_calls(self) -> list[Call]:
        """The calls some leg of which is still on the switch."""
        self._reap()
        return list(self.calls.values())

    def _least_busy(self) -> tuple[int, list[pbx.DemoUser]]:
        """The fewest calls any account has up, and the phones of the accounts that have as
        few (for the first calls, and the refill of an account left with none)."""
        up = Counter(call.user.account for call in self.calls.values())
        least = min(up[u.account] for u in self.users)
        return least, [u for u in self.users if up[u.account] == least]

    def _place(self, kind: str, answered: bool = False, user: pbx.DemoUser | None = None) -> None:
        rng = self.rng
        user = user or rng.choice(self.users)
        colleagues = self._colleagues(user)
        if kind == "internal" and not colleagues:
            kind = "outbound"
        if kind == "internal":
            other = rng.choice(colleagues)
            how = dict(
                variables_a=pbx.leg_vars(user),
                variables_b=pbx.leg_vars(other),
                caller=(user.name, user.extension),
                callee=(other.name, other.extension),
                sip_a=pbx.phone_calling(user, rng),
                sip_b=pbx.phone_called(other, rng),
            )
            timeout = PHONE_TIMEOUT
        elif kind == "outbound":
            number = pbx.outside_number(rng)
            how = dict(
                variables_a=pbx.leg_vars(user),
                variables_b=pbx.trunk_vars(user),
                caller=(user.name, user.extension),
                callee=(number, number),
                sip_a=pbx.phone_calling(user, rng),
                sip_b=pbx.trunk_called(number, rng),
            )
            timeout = TRUNK_TIMEOUT
        else:  # from the outside to the account's number, ringing one of its phones
            number = pbx.outside_number(rng)
            how = dict(
                variables_a=pbx.trunk_vars(user),
                variables_b=pbx.leg_vars(user),
                caller=(pbx.outside_name(rng, number), number),
                callee=(user.name, user.extension),
                sip_a=pbx.trunk_calling(number, rng),
                sip_b=pbx.phone_called(user, rng),
                context="public",
                dialled=pbx.main_number(user),
            )
            timeout = PHONE_TIMEOUT
        how["variables_a"]["call_timeout"] = str(timeout)  # what mod_dptools' bridge reads
        a, b = self.model.bridged_call(answer=answered, **how)
        call = Call(next(self._ids), kind, user, a, b, float(timeout), self.now, legs=[a, b])
        self.calls[call.id] = call
        self._note("place", call)
        self.at(self.now + MAX_CALL_SECONDS, self._expire, call.id)
        if answered:
            self._talk(call)
        else:
            self._ring(call)

    # -- ringing ------------------------------------------------------------------------------
    def _ring(self, call: Call) -> None:
        """The callee rings: its deadline is set, and what it will do is drawn."""
        rng = self.rng
        call.ring_start = self.now
        deadline = self.now + call.timeout
        self.at(deadline, self._ring_out, call.id, call.callee)
        outcome = self._draw(OUTCOMES)
        callee = call.callee
        if outcome == "answer":
            when = self.now + rng.uniform(2.0, min(12.0, call.timeout - 1))
            self.at(when, self._pick_up, call, callee)
        elif outcome == "give_up":
            self.at(self.now + rng.uniform(3.0, call.timeout - 1), self._give_up, call, callee)
        elif outcome == "refuse":
            cause = rng.choice(("USER_BUSY", "USER_BUSY", "CALL_REJECTED"))
            self.at(self.now + rng.uniform(1.0, 4.0), self._refuse, call, callee, cause)

    def _ringing(self, call: Call, callee: str) -> bool:
        ch = self.model.locate(callee)
        return call.callee == callee and ch is not None and not ch.answered

    def _pick_up(self, call: Call, callee: str) -> None:
        if self._ringing(call, callee):
            self.model.answer(callee)
            self._note("answer", call)
            self._talk(call)

    def _give_up(self, call: Call, callee: str) -> None:
        """The caller hangs up while it hears ringback: its phone sends CANCEL (a BYE when its
        leg was answered already: a transferred caller)."""
        caller = self.model.locate(call.caller)
        if self._ringing(call, callee) and caller is not None:
            if caller.answered:
                self._ended_by_far_end(call.caller, "recv_bye")
                self.model.hangup(call.caller, "NORMAL_CLEARING")
            else:
                self._ended_by_far_end(call.caller, "recv_cancel")
                self.model.hangup(call.caller, "ORIGINATOR_CANCEL")
            self._note("give up", call)

    def _refuse(self, call: Call, callee: str, cause: str) -> None:
        """The callee's phone (or the far end) answers the INVITE with busy / declined."""
        if self._ringing(call, callee):
            self._ended_by_far_end(callee, "recv_refuse")
            self.model.hangup(callee, cause)
            self._note("refuse", call)

    def _ring_out(self, call_id: int, callee: str) -> None:
        """The callee's timeout: still ringing, the switch gives up on it (NO_ANSWER)."""
        call = self.calls.get(call_id)
        if call is None or not self._ringing(call, callee):
            return
        if self.model.locate(call.caller) is not None:
            self.model.ring_timeout(call.caller)
        if self._ringing(call, callee):
            # its caller left the bridge some other way (an operator moved it through the API):
            # the demo still lets nothing ring past its timeout, and says so
            self._failed(f"{callee} rang past its timeout: hung up")
            self.model.hangup(callee, "NO_ANSWER")
        self._note("no answer", call)

    # -- talking ------------------------------------------------------------------------------
    def _talk(self, call: Call) -> None:
        """The call is up: its length, and maybe a hold, a recording or a transfer in it."""
        rng = self.rng
        length = min(900.0, max(8.0, rng.expovariate(1 / MEAN_TALK_SECONDS)))
        end = self.now + length
        epoch = call.epoch
        self.at(end, self._hang_up, call, epoch)
        phones = [call.caller] if call.kind == "internal" else []
        phones.append(call.callee if call.kind != "outbound" else call.caller)
        if length > 15 and rng.random() < 0.3:
            start = self.now + rng.uniform(3.0, length / 2)
            hold_for = rng.uniform(4.0, min(40.0, end - start - 2))
            self.at(start, self._hold, call, epoch, rng.choice(phones), hold_for)
        if rng.random() < 0.25:
            stop = self.now + rng.uniform(3.0, length) if rng.random() < 0.5 else None
            self.at(self.now + rng.uniform(0.5, 2.0), self._record, call, epoch, stop)
        if call.kind != "outbound" and call.epoch == 0 and length > 20 and rng.random() < 0.15:
            self.at(self.now + rng.uniform(5.0, length - 5), self._transfer, call, epoch)

    def _bridged(self, call: Call, epoch: int) -> bool:
        a, b = self.model.locate(call.caller), self.model.locate(call.callee)
        return call.epoch == epoch and a is not None and b is not None and a.bridge_peer == b.uuid

    def _hold(self, call: Call, epoch: int, leg: str, seconds: float) -> None:
        """A phone puts the call on hold (SIP: CALLSTATE HELD + CHANNEL_HOLD on its leg)."""
        if self._bridged(call, epoch) and call.held is None:
            self.model.hold(leg)
            call.held = leg
            self._note("hold", call)
            self.at(self.now + seconds, self._unhold, call, leg)

    def _unhold(self, call: Call, leg: str) -> None:
        ch = self.model.locate(leg)
        if call.held == leg and ch is not None and ch.held:
            self.model.unhold(leg)
            self._note("unhold", call)
        call.held = None

    def _record(self, call: Call, epoch: int, stop: float | None) -> None:
        """Call recording: started on the account's phone leg, stopped later or by the hangup."""
        if not self._bridged(call, epoch):
            return
        leg = call.callee if call.kind == "inbound" else call.caller
        path = f"/var/lib/freeswitch/recordings/{call.user.realm}/{leg}.wav"
        self.model.record(leg, "start", path)
        self._note("record", call)
        if stop is not None:
            self.at(stop, self._stop_recording, leg, path)

    def _stop_recording(self, leg: str, path: str) -> None:
        ch = self.model.locate(leg)
        if ch is not None and path in ch.recordings:
            self.model.record(leg, "stop", path)

    def _transfer(self, call: Call, epoch: int) -> None:
        """The account's phone on the call blind-transfers the other party to a colleague: the
        switch transfers that party's leg (the callee's leg goes, s2_transfer) and its dialplan
        bridges to the colleague's phone, which rings."""
        if not self._bridged(call, epoch) or call.held is not None:
            return
        caller, callee = self.model.locate(call.caller), self.model.locate(call.callee)
        on_the_call = {
            caller.profile.get("Caller-ID-Number") if caller else None,
            callee.profile.get("Destination-Number") if callee else None,
        }
        colleagues = [
            u
            for u in self.users
            if u.account == call.user.account and u.extension not in on_the_call
        ]
        if not colleagues:
            return
        other = self.rng.choice(colleagues)
        call.epoch += 1
        self.model.transfer(call.caller, other.extension)
        if self.model.locate(call.caller) is None:
            return
        callee = self.model.dial(
            call.caller,
            (other.name, other.extension),
            pbx.leg_vars(other),
            sip=pbx.phone_called(other, self.rng),
        )
        call.callee = callee
        call.user = other
        call.legs.append(callee)
        self._note("transfer", call)
        self._ring(call)

    def _hang_up(self, call: Call, epoch: int) -> None:
        """One side hangs up (its phone or the far end sends BYE); the other follows.  A call
        an operator rearranged through the API (parked, picked up, ...) ends here too: what is
        left of it hangs up."""
        if call.epoch != epoch:
            return  # a transfer gave the call a new end
        if self._bridged(call, epoch):
            leg = self.rng.choice((call.caller, call.callee))
            self._ended_by_far_end(leg, "recv_bye")
            self.model.hangup(leg, "NORMAL_CLEARING")
            self._note("hang up", call)
            return
        for leg in call.legs:
            ch = self.model.locate(leg)
            if ch is not None and not self.model.ringing_callees(ch):
                self._ended_by_far_end(leg, "recv_bye")
                self.model.hangup(leg, "NORMAL_CLEARING")

    def _ended_by_far_end(self, leg: str, disposition: str) -> None:
        if self.model.locate(leg) is not None:
            self.model.set_variable(leg, "sip_hangup_disposition", disposition)

    # -- the call's end and the flow of new calls ---------------------------------------------
    def _expire(self, call_id: int) -> None:
        """A call still up after MAX_CALL_SECONDS (something outside the traffic kept it, an
        API user's park, say) is ended: the demo never keeps a leg for ever."""
        call = self.calls.get(call_id)
        if call is None:
            return
        for leg in call.legs:
            if self.model.locate(leg) is not None:
                self.model.hangup(leg, "ALLOTTED_TIMEOUT")
        self.calls.pop(call_id, None)

    def _reap(self) -> None:
        """Forget calls none of whose legs is left on the switch."""
        channels = self.model.channels
        for cid in [c.id for c in self.calls.values() if not any(x in channels for x in c.legs)]:
            del self.calls[cid]

    def _arrival(self) -> None:
        self._reap()
        up = len(self.calls)
        if up < 2 * self.target:
            self._place(self._draw(KINDS) or "internal")
        # Poisson arrivals aimed at ``target`` calls up (Little's law), leaning on the count
        gap = MEAN_CALL_SECONDS / self.target * min(3.0, max(0.3, (up + 1) / self.target))
        self.at(self.now + self.rng.expovariate(1 / gap), self._arrival)

    def _refill(self) -> None:
        """An account left with no call gets one within seconds, beside the arrivals (whose
        gaps run to a minute), so the board never lacks an account for long. The arrivals
        themselves go to any phone: sent to the least busy account, they all went to one whose
        calls an operator kept hanging up, and the other accounts' calls died out."""
        self._reap()
        least, idle = self._least_busy()
        if least == 0 and len(self.calls) < 2 * self.target:
            self._place(self._draw(KINDS) or "internal", user=self.rng.choice(idle))
        self.at(self.now + self.rng.uniform(2, 4), self._refill)

    def _heartbeat(self) -> None:
        self.switch.heartbeat()
        self.at(self.now + HEARTBEAT_SECONDS, self._heartbeat)

    def _failed(self, what: str) -> None:
        self.failures.append(f"{self.now:.1f}s {what}")
        del self.failures[:-100]

    def _note(self, what: str, call: Call) -> None:
        self.history.append((round(self.now, 3), what, call.id))
        if len(self.history) > 10_000:
            del self.history[:5_000]
