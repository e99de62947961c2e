"""What channelsd promises about its channel table, checked against random interleavings.

Two stand-in FreeSWITCH nodes (real ESL over TCP) and a real daemon. Hypothesis drives calls
that are set up, answered, re-assigned (uuid_setvar) and hung up, and the faults a real
deployment sees: events lost, connections dropped at any point (mid-frame, mid-reconcile, a
whole outage with calls coming and going meanwhile), listings that lag, fail or time out,
FreeSWITCH restarts (new Core-UUID, calls kept or lost), the same uuid on both nodes, and a
hostile but framing-valid switch (objects, huge strings, non-uuid ids, lying renames, late
events of destroyed calls).

The promises, checked after every step:

1. The indices always agree with the rows (`ChannelTable.problems()`).
2. While nothing was lost (no fault since the last reconcile), every node's rows are exactly
   the switch's live channels, with the identity (account, owner, device) and answer state
   the switch holds: events alone keep the table exact.
3. After a fault, one reconcile of a connected node restores promise 2: no live channel stays
   hidden, no destroyed one stays listed, no identity stays unknown or stale. The API's
   system list says the same as the table.
4. A listing that fails or lags never removes a row of a connected node that is alive.
5. Nothing a hostile switch sends becomes a row unless it names a valid uuid, and a value of
   the wrong shape never replaces a field.

CI runs a bounded, derandomised number of examples; CHANNELSD_MODEL_EXAMPLES=500 (say) runs
more by hand. The counts go into RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid as uuidlib
from typing import Any

import gevent
import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from channelsd.config import parse
from channelsd.daemon import Daemon
from channelsd.node import ReconcileUnknown
from channelsd.standin.replay import Frame
from channelsd.standin.server import StandinSwitch

from conftest import config_dict, wait_until

EXAMPLES = int(os.environ.get("CHANNELSD_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("CHANNELSD_MODEL_STEPS", "30"))
COMMAND_TIMEOUT = 0.4
ACCOUNTS = ("acc1", "acc2", "acc3")
STEP_LOG: dict[str, int] = {"examples": 0, "steps": 0}


def live(switch: StandinSwitch) -> dict[str, Any]:
    return {u: ch for u, ch in switch.channels.items() if not ch.destroyed}


def in_order(switch: StandinSwitch, uuids: Any) -> list[str]:
    """uuids in the order the switch created them: uuids are random, and hypothesis must draw
    the same way when it replays an example."""
    chans = switch.channels
    return sorted(uuids, key=lambda u: (chans[u].session_id, u))


def truth(ch: Any) -> tuple[Any, ...]:
    v = ch.variables
    return (v.get("account_id"), v.get("owner_id"), v.get("authorizing_id"), ch.answered)


def known(row: Any) -> tuple[Any, ...]:
    return (row.account_id, row.owner_id, row.authorizing_id, row.answered)


def journaled(step: Any) -> Any:
    """Note each step (and what it picked) in the machine's journal: an assertion shows the
    last steps, so that a failure hypothesis cannot replay (timing) can still be read."""

    @functools.wraps(step)
    def run(self: Any, **kwargs: Any) -> Any:
        shown = {k: v for k, v in kwargs.items() if k != "data"}
        self.journal.append(f"{step.__name__}({shown})")
        return step(self, **kwargs)

    return run


def json_frame(event: dict[str, Any]) -> Frame:
    body = orjson.dumps(event)
    head = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body)
    name = event["Event-Name"] if isinstance(event["Event-Name"], str) else "CHANNEL_CREATE"
    return Frame("text/event-json", name, None, head + body)


class Node:
    """One stand-in switch, the daemon's link to it, and what the test knows about the pair."""

    def __init__(self, name: str, switch: StandinSwitch) -> None:
        self.name = name
        self.switch = switch
        self.link: Any = None
        # Something was lost since the last good reconcile: promise 2 waits for promise 3.
        self.dirty = False
        # Calls hung up by the test, in order, and those whose destroy the daemon heard (a
        # late event of theirs must not revive them).
        self.destroyed: list[str] = []
        self.heard_destroyed: set[str] = set()
        # uuids a hostile switch lied about (a rename onto a live call): their fields stay
        # unknowable (answered, once true, never goes back; a dump cannot undo it), their
        # presence does not.
        self.tainted: set[str] = set()
        self.barriers = 0
        self.heard: set[str] = set()


class TableModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[Node] = []
        self.daemon: Daemon | None = None
        self.journal: list[str] = []

    # -- set-up and tear-down ----------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        STEP_LOG["examples"] += 1
        self.nodes = [
            Node(f"fs{i + 1}", StandinSwitch(hostname=f"model{i + 1}").start()) for i in range(2)
        ]
        cfg = config_dict(
            [n.switch for n in self.nodes],
            sync={
                "backoff_initial": 0.02,
                "backoff_max": 0.1,
                "command_timeout": COMMAND_TIMEOUT,
                "tombstone_ttl": 600,
            },
        )
        self.daemon = Daemon(parse(cfg, "model.toml"))
        for n in self.nodes:
            n.link = self.daemon.nodes[n.name]
        self._record_barriers()
        self.daemon.start()
        for n in self.nodes:
            wait_until(lambda n=n: n.link.state == "ready", 10, f"{n.name} ready")

    def teardown(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        for n in self.nodes:
            n.switch.stop()

    def _record_barriers(self) -> None:
        """Note the marker API events the daemon has applied (see barrier()), at the table:
        the events connection gives picked events to table.apply itself, not to the node's
        handler."""
        assert self.daemon is not None
        table = self.daemon.table
        apply = table.apply
        by_name = {n.name: n for n in self.nodes}

        def recorded(node: str, event: dict[str, Any], raw: bytes | None = None) -> None:
            apply(node, event, raw)
            if event.get("API-Command") == "model-barrier":
                by_name[node].heard.add(event.get("API-Command-Argument", ""))

        table.apply = recorded  # type: ignore[method-assign]

    @property
    def table(self) -> Any:
        assert self.daemon is not None
        return self.daemon.table

    def barrier(self, n: Node) -> bool:
        """Wait until the daemon has applied everything the switch sent so far (one marker
        event behind it on the same connection); False when nothing is delivered to it now.
        The switch's side is the authority on delivery: the daemon may not have noticed a
        dropped connection yet."""
        if not (self.subscribed(n) and n.link.state == "ready"):
            return False
        n.barriers += 1
        marker = f"{n.name}-{n.barriers}"
        n.switch.fire("API", [("API-Command", "model-barrier"), ("API-Command-Argument", marker)])
        wait_until(lambda: marker in n.heard or not self.subscribed(n), 5, f"{n.name} barrier")
        return marker in n.heard

    @staticmethod
    def subscribed(n: Node) -> bool:
        return any(c.wants("CHANNEL_DESTROY") for c in n.switch.connections)

    def pick(self, data: Any, n: Node) -> str:
        picked = data.draw(st.sampled_from(in_order(n.switch, live(n.switch))))
        self.journal.append(f"  picked {picked} on {n.name}")
        return picked

    def touch(self, n: Node) -> bool:
        """About to change the switch: will the daemon hear of it?"""
        heard = self.subscribed(n)
        if not heard:
            n.dirty = True
        return heard

    # -- calls -------------------------------------------------------------------------------

    @rule(
        i=st.integers(0, 1),
        account=st.sampled_from(ACCOUNTS),
        kind=st.sampled_from(["bridged", "ringing", "parked", "one-leg-ringing"]),
    )
    @journaled
    def call(self, i: int, account: str, kind: str) -> None:
        sw = self.nodes[i].switch
        self.touch(self.nodes[i])
        ident = {"account_id": account, "owner_id": f"{account}-u", "authorizing_id": "dev"}
        if kind in ("bridged", "ringing"):
            sw.bridged_call(
                variables_a=ident, variables_b={"account_id": account}, answer=kind == "bridged"
            )
        else:  # a loopback pair set up with origination_uuid: it starts with CHANNEL_UUID
            sw.originate(dest="9003" if kind == "parked" else "9004", variables=ident)

    def ringing(self) -> list[tuple[Node, str]]:
        return [
            (n, u)
            for n in self.nodes
            for u, ch in sorted(live(n.switch).items())
            if not ch.answered
        ]

    def anything_live(self) -> bool:
        return any(live(n.switch) for n in self.nodes)

    @precondition(lambda self: self.ringing())
    @rule(data=st.data())
    @journaled
    def answer(self, data: Any) -> None:
        n, uuid = data.draw(st.sampled_from(self.ringing()))
        self.touch(n)
        n.switch.answer(uuid)

    @precondition(lambda self: self.anything_live())
    @rule(data=st.data(), i=st.integers(0, 1), lose_destroy=st.booleans())
    @journaled
    def hangup(self, data: Any, i: int, lose_destroy: bool) -> None:
        n = self.nodes[i]
        if not live(n.switch):
            return
        uuid = self.pick(data, n)
        before = in_order(n.switch, live(n.switch))
        if lose_destroy:  # the last events of the call never reach the daemon
            n.switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}
            n.switch.drop_event_fraction = 1.0
            n.dirty = True
        delivered = self.touch(n) and not lose_destroy
        n.switch.hangup(uuid)
        n.switch.drop_event_fraction = 0.0
        after = live(n.switch)
        gone = [u for u in before if u not in after]
        n.destroyed += gone
        if delivered:
            n.heard_destroyed.update(gone)

    @precondition(lambda self: self.anything_live())
    @rule(data=st.data(), i=st.integers(0, 1), account=st.sampled_from(ACCOUNTS))
    @journaled
    def move_to_account(self, data: Any, i: int, account: str) -> None:
        """uuid_setvar from another ESL client: only an API event says so."""
        n = self.nodes[i]
        if live(n.switch):
            self.touch(n)
            n.switch.set_variable(self.pick(data, n), "account_id", account)

    @rule()
    @journaled
    def twin_call(self) -> None:
        """The same origination uuid on both nodes (a dialplan chose it)."""
        twin = str(uuidlib.uuid4())
        for n in self.nodes:
            self.touch(n)
            n.switch.originate(
                dest="9003", variables={"origination_uuid": twin, "account_id": "acc1"}
            )

    @rule()
    @journaled
    def portal_lists(self) -> None:
        """Lists asked now keep their order, which every later event must keep in step
        (indices_agree compares each kept order with its members sorted)."""
        if self.daemon is not None:
            self.table.all()
            for account in ACCOUNTS:
                self.table.by_account(account)

    # -- faults ------------------------------------------------------------------------------

    @rule(i=st.integers(0, 1), how=st.sampled_from(["plain", "mid-frame", "mid-reconcile"]))
    @journaled
    def drop_connection(self, i: int, how: str) -> None:
        n = self.nodes[i]
        n.dirty = True
        if how == "mid-frame" and n.link.connected:
            body = b'{"Event-Name":"CHANNEL_CREATE","Unique-ID":"cut-short"}'
            head = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % (len(body) + 50)
            n.switch.send_frames([Frame("text/event-json", "CHANNEL_CREATE", None, head + body)])
            gevent.sleep(0.02)
        elif how == "mid-reconcile" and n.link.connected:
            n.switch.reply_delay = 0.1
            n.link.request_reconcile()
            wait_until(
                lambda: any(c.startswith("api show channels") for _, c in n.switch.received[-3:]),
                5,
                "listing in flight",
            )
            n.switch.reply_delay = 0.0
        n.switch.drop_connections()

    @rule(data=st.data(), i=st.integers(0, 1), activity=st.integers(0, 3))
    @journaled
    def outage(self, data: Any, i: int, activity: int) -> None:
        """The node is unreachable for a while; calls come and go meanwhile."""
        n = self.nodes[i]
        n.dirty = True
        n.switch.pause_accept(True)
        n.switch.drop_connections()
        wait_until(lambda: not n.link.connected, 5, "node down")
        for _ in range(activity):
            if live(n.switch) and data.draw(st.booleans()):
                n.switch.hangup(self.pick(data, n))
            else:
                account = data.draw(st.sampled_from(ACCOUNTS))
                n.switch.bridged_call(variables_a={"account_id": account})
        n.switch.pause_accept(False)

    @rule(i=st.integers(0, 1), keep=st.booleans())
    @journaled
    def restart(self, i: int, keep: bool) -> None:
        """FreeSWITCH restarted: a new Core-UUID; a fast restart may have kept its calls."""
        n = self.nodes[i]
        n.dirty = True
        n.heard_destroyed.clear()  # a new process: no late event of an old call can come
        n.switch.restart(keep_channels=keep)

    @precondition(lambda self: self.anything_live())
    @rule(data=st.data(), i=st.integers(0, 1))
    @journaled
    def listing_lags(self, data: Any, i: int) -> None:
        """The SQL view has not caught up: the newest calls are missing from the listing."""
        n = self.nodes[i]
        newest = sorted(live(n.switch).values(), key=lambda ch: ch.created_us)
        k = data.draw(st.integers(1, max(1, len(newest))))
        n.switch.hide_from_listing = {ch.uuid for ch in newest[-k:]}
        self._reconcile_under_fault(n)

    @rule(i=st.integers(0, 1))
    @journaled
    def listing_fails(self, i: int) -> None:
        n = self.nodes[i]
        n.switch.sql_disabled = True
        self._reconcile_under_fault(n)

    def _reconcile_under_fault(self, n: Node) -> None:
        """Promise 4: the rows of live channels the daemon held are all still there."""
        if not self.barrier(n):
            return
        held = self.table.node_uuids(n.name) & set(live(n.switch))
        with contextlib.suppress(ReconcileUnknown):
            n.link.reconcile()
        missing = held - self.table.node_uuids(n.name)
        assert not missing, f"{n.name}: a lagging or failed listing removed {missing}"
        n.switch.hide_from_listing = set()
        n.switch.sql_disabled = False

    @rule(i=st.integers(0, 1))
    @journaled
    def listing_times_out(self, i: int) -> None:
        n = self.nodes[i]
        if not n.link.connected:
            return
        n.dirty = True
        reconnects = n.link.reconnects
        n.switch.reply_delay = COMMAND_TIMEOUT * 2
        n.link.request_reconcile()
        wait_until(lambda: n.link.reconnects > reconnects, 5, "reconnect after the timeout")
        n.switch.reply_delay = 0.0

    # -- a hostile switch --------------------------------------------------------------------

    @rule(
        data=st.data(),
        i=st.integers(0, 1),
        kind=st.sampled_from(["object", "huge", "not-a-uuid", "ghost", "lying-rename", "late"]),
    )
    @journaled
    def hostile(self, data: Any, i: int, kind: str) -> None:
        n = self.nodes[i]
        # Everything is drawn before anything that depends on timing (is the daemon connected
        # yet?): hypothesis must draw alike when it replays the example.
        rows = in_order(n.switch, live(n.switch))
        event: dict[str, Any] | None = None
        if kind in ("object", "huge") and rows:
            target = data.draw(st.sampled_from(rows))
            value: Any = {"$ne": None} if kind == "object" else "x" * 100_000
            event = {
                "Event-Name": "CHANNEL_CALLSTATE",
                "Unique-ID": target,
                "variable_account_id": value,
                "variable_owner_id": [value],
            }
        elif kind == "not-a-uuid" and rows:
            target = data.draw(st.sampled_from(rows))
            event = {"Event-Name": "CHANNEL_CREATE", "Unique-ID": f"{target} USER_BUSY"}
        elif kind == "ghost":  # a channel the switch never had
            ghost = str(uuidlib.uuid4())
            event = {"Event-Name": "CHANNEL_CREATE", "Unique-ID": ghost, "variable_uuid": ghost}
        elif kind == "lying-rename" and len(rows) >= 2:
            old, new = data.draw(st.permutations(rows))[:2]
            event = {"Event-Name": "CHANNEL_UUID", "Unique-ID": new, "Old-Unique-ID": old}
        elif kind == "late" and n.destroyed:
            gone = data.draw(st.sampled_from(n.destroyed))
            if gone in n.heard_destroyed:  # a late event of a call whose destroy it heard
                event = {
                    "Event-Name": "CHANNEL_STATE",
                    "Unique-ID": gone,
                    "Channel-State": "CS_EXECUTE",
                }
        if event is None or not self.touch(n):
            return
        if set(rows) - self.table.node_uuids(n.name) or kind in ("ghost", "lying-rename"):
            n.dirty = True  # the daemon now holds something the switch does not
        if kind == "lying-rename":
            n.tainted.add(event["Unique-ID"])
        n.switch.send_frames([json_frame(event)])

    # -- reconcile, and the promises ---------------------------------------------------------

    @rule(i=st.integers(0, 1))
    @journaled
    def reconcile(self, i: int) -> None:
        """Faults cleared, the node connected: one reconcile restores the exact table."""
        n = self.nodes[i]
        sw = n.switch
        sw.pause_accept(False)
        sw.hide_from_listing, sw.sql_disabled, sw.reply_delay = set(), False, 0.0
        wait_until(
            lambda: self.subscribed(n) and n.link.connected and n.link.state == "ready",
            10,
            f"{n.name} back",
        )
        # What the switch sent before the reconcile is applied first, so that the promise
        # checked is the reconcile's own: an event still on its way when the reconcile asks
        # makes its answer older than what the row heard since, and such an answer is
        # dropped (but a "gone" after a hang-up: tests/test_reconcile.py).
        assert self.barrier(n)
        n.link.reconcile()
        assert self.barrier(n)
        n.dirty = False
        self.assert_exact(n)
        # (the other node may be reconnecting meanwhile: only this one's rows hold still)
        api = sorted(c["uuid"] for c in self._system_list() if c["node"] == n.name)
        assert api == sorted(self.table.node_uuids(n.name)), "the API differs from the table"

    def _system_list(self) -> list[dict[str, Any]]:
        assert self.daemon is not None
        host, port = self.daemon.http_address
        import requests

        resp = requests.get(
            f"http://{host}:{port}/v2/channels",
            headers={"X-Auth-Token": "tok-super-0123456789"},
            timeout=5,
        )
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]

    def assert_exact(self, n: Node) -> None:
        switch_live = live(n.switch)
        rows = {u: self.table.row(n.name, u) for u in self.table.node_uuids(n.name)}
        ghosts = set(rows) - set(switch_live)
        hidden = set(switch_live) - set(rows)
        recent = "\n".join(self.journal[-25:])
        for u in ghosts:
            ch = n.switch.channels.get(u)
            recent += f"\nghost {u}: on the switch {ch and (ch.name, ch.destroyed)}, "
            recent += f"hung up by the test {u in n.destroyed}, heard {u in n.heard_destroyed}"
        assert not ghosts and not hidden, f"{n.name}: ghosts {ghosts}, hidden {hidden}\n{recent}"
        for uuid, ch in switch_live.items():
            if uuid not in n.tainted:
                assert known(rows[uuid]) == truth(ch), f"{n.name} {uuid}: fields\n{recent}"

    @invariant()
    def indices_agree(self) -> None:
        if self.daemon is not None:
            STEP_LOG["steps"] += 1
            problems = self.table.problems()
            assert not problems, "; ".join(problems)

    @invariant()
    def events_alone_keep_it_exact(self) -> None:
        for n in self.nodes:
            if not n.dirty and self.barrier(n) and not n.dirty:
                self.assert_exact(n)


TestTableModel = TableModel.TestCase
TestTableModel.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize="CHANNELSD_MODEL_EXAMPLES" not in os.environ,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def test_zz_record_model_counts(figure: Any) -> None:
    """Runs after the state machine (file order): its examples and steps for RELIABILITY.md."""
    figure(
        "table model (hypothesis stateful)",
        cases=STEP_LOG["examples"],
        held=STEP_LOG["examples"],
        steps=STEP_LOG["steps"],
    )
