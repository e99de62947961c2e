"""Outside attack on the event broker's watched-accounts change (channelsd/stream.py,
channelsd/feeds.py): rendering only watched accounts, Broker.covers, Feed.unsure, _Message.was.

Each test failed before its fix, and says whether the defect came with the change (its first
form) or is older (checked against the code before it). The clients are
tests/test_stream_watch.py's: each builds its view from its frames as an EventSource client
does (snapshot, create, update, destroy) and counts an update of a channel it never held.
"""

from __future__ import annotations

from typing import Any

import gevent
from test_stream import ACC1, ACC1_OTHER, Subscriber
from test_stream_watch import (
    NODE,
    Client,
    create,
    grace_passes,
    move,
    new_broker,
    rename,
    settle,
    uuid_of,
)

from conftest import Harness

# -- defects that came with the change -------------------------------------------------------------


def test_a_resume_from_the_message_its_account_was_watched_again_at_misses_calls() -> None:
    """Failed before the fix (came with the change): Broker.covers takes `watched_from <=
    position` as whole, but `_watched_from[A]` is the sequence number when A began to be
    watched again, and the changes of A's calls made before that join (not rendered: nobody
    watched A) did not advance the sequence. A client whose Last-Event-ID is that very number
    is resumed without a snapshot and never hears of a call created while A was unwatched.

    Sequence (hostile network): two tabs on account A, a keeper on account B keeps the broker
    from idleness (no gap recorded). Both tabs drop; A's grace runs out, A is forgotten; call 1
    starts in A (dropped, no message). Tab 1 reconnects: not covered, starts over from a
    snapshot, and its join sets watched_from[A] = seq (unchanged since the tabs' last id).
    Tab 2 reconnects with the same last id: covers(A, id) is true, ": resumed", nothing to
    catch up: call 1 is missing from tab 2's view for good. Passes before the change (every
    account was rendered)."""
    table, broker = new_broker()
    keeper = Client(broker, table, "B")
    tab1 = Client(broker, table, "A")
    tab2 = Client(broker, table, "A")
    try:
        create(table, 0, "A")
        settle(broker)
        assert tab1.last_id == tab2.last_id
        tab1.leave()
        tab2.leave()
        grace_passes(broker)
        create(table, 1, "A")  # nobody watches A: not rendered, the sequence does not move
        settle(broker)
        tab1.connect()
        settle(broker)
        assert tab1.seen() == tab1.truth()
        tab2.connect()
        settle(broker)
        assert tab2.seen() == tab2.truth(), (tab2.resumes, tab2.snapshots)
    finally:
        for c in (keeper, tab1, tab2):
            c.leave()


def test_a_user_token_that_resumes_is_told_of_other_users_calls(
    daemon: Harness, switch: Any
) -> None:
    """Failed before the fix (came with the change; a tenant-internal leak): a `user`
    token sees only its owner's calls (spec §6), but the resumed catch-up tells whole every
    message whose channel was last published in the stream's account (`_Message.was`) with
    frame_for's `unsure`, which skips in_scope, so the owner narrowing. user1 resuming on acc1
    gets a `destroy` with hangup cause, duration and billing seconds for user2's calls, and
    a bare {uuid, node} destroy for each of user2's calls that merely changed (held). Before
    the change the catch-up's destroys were of channels in scope (narrowed) only.

    Sequence: an admin portal watches acc1; user1 connects, keeps its snapshot id, drops.
    user2 has two calls: one is put on hold, the other hangs up. user1 reconnects with its id
    (any id of this run in the ring would do: the client chooses Last-Event-ID)."""
    admin = Subscriber(daemon, "/v2/accounts/acc1/channel_events")
    mine = Subscriber(daemon, "/v2/accounts/acc1/channel_events", tok="user1")
    again = None
    try:
        admin.wait_for("snapshot")
        last = mine.wait_for("snapshot")["id"]
        mine.close()
        ended, ended_b = switch.bridged_call(
            variables_a=ACC1_OTHER, variables_b=ACC1_OTHER, caller=("Private", "5550100")
        )
        held, held_b = switch.bridged_call(variables_a=ACC1_OTHER, variables_b=ACC1_OTHER)
        admin.wait_for("create", lambda d: d["uuid"] == held)
        switch.hold(held)
        switch.hangup(ended)
        admin.wait_for("destroy", lambda d: d["uuid"] == ended)
        admin.wait_for("update", lambda d: d["uuid"] == held and "is_onhold" in d["changed"])
        own, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        again = Subscriber(daemon, "/v2/accounts/acc1/channel_events", tok="user1", last_id=last)
        again.wait_for("create", lambda d: d["uuid"] == own)  # its own call: caught up
        gevent.sleep(0.3)
        others = {ended, ended_b, held, held_b}
        leaked = [
            e
            for e in again.events
            if isinstance(e["data"], dict) and e["data"].get("uuid") in others
        ]
        assert not leaked, leaked
    finally:
        admin.close()
        mine.close()
        if again is not None:
            again.close()


# -- older holes, on the paths the change set out to close ---------------------------------------


def test_a_resumed_client_keeps_a_call_its_snapshot_caught_before_its_first_publish() -> None:
    """Failed before the fix; older than the change, but it is the
    hole the change claims to close ("a call that left the account ... while its client was
    away stayed on that client's screen for good") on a path `was` does not cover: a call
    rendered by the client's snapshot while its first change was still pending was never in
    `_published`, so its first message has `was` NEVER and is not told to the resumed client.

    Sequence: a portal watches A; call 0 starts in A (pending, < 0.1 s old); a second tab
    connects (its snapshot holds call 0) and drops at once; call 0 is moved to account B
    before the first publish; the tab resumes with its snapshot id: the create of call 0 in B
    is out of its scope and not `told`: call 0 stays in the tab's view of A for good."""
    table, broker = new_broker()
    portal = Client(broker, table, "A")
    create(table, 0, "A")  # not yet published
    tab = Client(broker, table, "A")  # its snapshot holds call 0
    try:
        assert uuid_of(0) in tab.view
        tab.leave()
        move(table, 0, "B")
        settle(broker)
        assert portal.seen() == portal.truth()
        tab.connect()
        settle(broker)
        assert tab.resumes == 1
        assert tab.seen() == tab.truth()
    finally:
        portal.leave()
        tab.leave()


def test_a_subscriber_that_starts_over_after_the_ring_overflowed_keeps_a_call_that_left() -> None:
    """Failed before the fix; older than the change. The change's
    `_join` marks a joining subscriber's calls that its feed does not know as `unsure`, but a
    subscriber that starts over from a snapshot inside the stream (it fell behind its feed, or
    the ring moved on past the feed: Feed.catch_up's reset) does not go through `_join`: the
    feed's `visible` lacks every call created in the lost burst, so when one of them leaves
    the scope its message is dropped for that feed and the call stays in the view for good.

    Sequence (api.event_buffer small, a burst): a subscriber on A; 10 calls start in A within
    one publish interval (ring of 5: the feed is reset and the subscriber starts over from a
    snapshot holding the 10); call 0 moves to account B: no frame, call 0 stays."""
    table, broker = new_broker(size=5)
    s = Client(broker, table, "A")
    try:
        for i in range(10):
            create(table, i, "A")
        settle(broker)
        assert s.snapshots == 2 and s.seen() == s.truth()
        move(table, 0, "B")
        settle(broker)
        assert s.seen() == s.truth()
    finally:
        s.leave()


def test_a_snapshot_of_a_pending_change_undone_before_the_publish_stays_wrong() -> None:
    """Failed before the fix; older than the change. A snapshot
    renders a channel's pending state (not put in `_published`: a change is on its way); the
    message that follows is the diff of the last published item against the current one. A
    value that changes and changes back within the publish interval gives no message, and
    the new subscriber keeps the intermediate value for good. `_join`'s `unsure` is only for
    calls the feed does not know.

    Sequence (hostile network): a subscriber on A holds call 0; the node's connection drops
    (every channel of it is `stale`, pending); a second subscriber joins (its snapshot says
    stale: true); the connection comes back before the next publish (stale: false, no diff):
    the second subscriber shows call 0 stale for good. The same with a hold/unhold or any
    field that flips back."""
    table, broker = new_broker()
    s1 = Client(broker, table, "A")
    s2 = None
    try:
        create(table, 0, "A")
        settle(broker)
        table.mark_stale(NODE)
        s2 = Client(broker, table, "A")
        table.clear_stale(NODE)
        settle(broker)
        assert not s1.view[uuid_of(0)]["stale"]
        assert not s2.view[uuid_of(0)]["stale"]
    finally:
        s1.leave()
        if s2 is not None:
            s2.leave()


def test_a_call_that_leaves_and_comes_back_across_a_snapshot_is_sent_as_an_update() -> None:
    """Failed before the fix; older than the change: an update is
    sent to a client that never got the channel. The feed's `visible` holds call 0; the new
    subscriber's snapshot does not (call 0 was in account B, pending, when it was rendered);
    call 0 comes back to A and changes before the publish: the feed sends an `update` of
    call 0, which the new subscriber cannot apply (an EventSource client drops it): call 0 is
    missing from its view. `_join` handles what a subscriber holds and the feed does not, not
    the reverse.

    Sequence: s1 on A holds call 0; call 0 moves to B (pending); s2 joins A; call 0 moves
    back to A and its callee name changes; publish."""
    table, broker = new_broker()
    keeper = Client(broker, table, "B")  # B is watched: the move to B is followed
    s1 = Client(broker, table, "A")
    s2 = None
    try:
        create(table, 0, "A")
        settle(broker)
        move(table, 0, "B")
        s2 = Client(broker, table, "A")
        assert uuid_of(0) not in s2.view
        move(table, 0, "A")
        rename(table, 0, "x")
        settle(broker)
        assert s1.seen() == s1.truth()
        assert not s2.unknown_updates, s2.unknown_updates
        assert s2.seen() == s2.truth()
    finally:
        for c in (keeper, s1, s2):
            if c is not None:
                c.leave()


def test_what_is_published_while_a_resumed_client_is_written_its_catch_up_is_lost() -> None:
    """Failed before the fix; older than the change. The resumed
    branch yields each catch-up frame on its own (a slow socket makes the write, so the
    generator, wait: the hub runs publishes meanwhile), then sets `position = broker.seq` and
    joins the feed there: the messages published while it wrote are never sent to it. A call
    created meanwhile is missing (its next update is then an update of an unknown call).

    Sequence: a portal on A (the feed lives on); a client on A leaves; calls 0 and 1 change;
    the client resumes; after its first catch-up frame (its socket full) call 2 starts and is
    published; the client's catch-up ends and it follows the feed from the current seq."""
    table, broker = new_broker()
    portal = Client(broker, table, "A")
    c = Client(broker, table, "A")
    gen = None
    try:
        create(table, 0, "A")
        create(table, 1, "A")
        settle(broker)
        c.leave()
        rename(table, 0, "x")
        rename(table, 1, "x")
        settle(broker)
        gen = c.stream()
        # ": resumed" and the catch-up: before the fix, its first frame (the socket took
        # no more for now); since, the whole catch-up in one write
        c.apply(next(gen))
        create(table, 2, "A")
        settle(broker)
        assert portal.seen() == portal.truth()
        reader = gevent.spawn(lambda: [c.apply(chunk) for chunk in gen])
        gevent.sleep(0.05)
        rename(table, 2, "y")
        settle(broker)
        gevent.sleep(0.05)
        reader.kill()
        assert not c.unknown_updates, c.unknown_updates
        assert c.seen() == c.truth()
    finally:
        portal.leave()
        if gen is not None:
            gen.close()
