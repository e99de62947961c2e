"""A list's order, once sorted, is kept in step with its members (channelsd.table.Scope).

Every way a member joins, leaves or moves (a new channel, its creation time learnt, its account
or owner or device changed, a rename onto another row, a destroy, a reconcile's removal, the
same uuid on two nodes) is drawn at random between lists asked; after each step every kept
order must equal its members sorted afresh, and every list the table answers must too.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channelsd import table as table_module
from channelsd.channel import Channel
from channelsd.table import ChannelTable

UUIDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(8)]
NODES = ("fs1", "fs2")
ACCOUNTS = ("acc1", "acc2")
# Few seconds, so that many channels share one and the uuid breaks the tie.
SECONDS = st.integers(1_795_000_000, 1_795_000_003)

create = st.tuples(
    st.just("create"),
    st.sampled_from(NODES),
    st.sampled_from(UUIDS),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(("u1", "u2")),
    st.one_of(st.none(), SECONDS),
)
learn_created = st.tuples(
    st.just("created"), st.sampled_from(NODES), st.sampled_from(UUIDS), SECONDS
)
move = st.tuples(
    st.just("move"),
    st.sampled_from(NODES),
    st.sampled_from(UUIDS),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(("u1", "u2", "d1")),
)
rename = st.tuples(
    st.just("rename"), st.sampled_from(NODES), st.sampled_from(UUIDS), st.sampled_from(UUIDS)
)
destroy = st.tuples(st.just("destroy"), st.sampled_from(NODES), st.sampled_from(UUIDS))
forget = st.tuples(st.just("forget"), st.sampled_from(NODES), st.sampled_from(UUIDS))
ask = st.tuples(st.just("list"))
STEPS = st.lists(
    st.one_of(create, learn_created, move, rename, destroy, forget, ask, ask), max_size=60
)


def apply(t: ChannelTable, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "create":
        _, node, uuid, account, owner, created = step
        event = {
            "Event-Name": "CHANNEL_CREATE",
            "Unique-ID": uuid,
            "variable_account_id": account,
            "variable_owner_id": owner,
            "variable_authorizing_id": "d" + owner,
        }
        if created is not None:
            event["Caller-Channel-Created-Time"] = str(created * 1_000_000 + 5)
        t.apply(node, event)
    elif kind == "created":
        _, node, uuid, created = step
        t.apply(
            node,
            {
                "Event-Name": "CHANNEL_STATE",
                "Unique-ID": uuid,
                "Channel-State": "CS_ROUTING",
                "Caller-Channel-Created-Time": str(created * 1_000_000),
            },
        )
    elif kind == "move":
        _, node, uuid, account, owner = step
        t.apply(
            node,
            {
                "Event-Name": "CHANNEL_DATA",
                "Unique-ID": uuid,
                "variable_account_id": account,
                "variable_owner_id": owner,
                "variable_authorizing_id": "d" + owner,
            },
        )
    elif kind == "rename":
        _, node, old, new = step
        t.apply(node, {"Event-Name": "CHANNEL_UUID", "Unique-ID": new, "Old-Unique-ID": old})
    elif kind == "destroy":
        _, node, uuid = step
        t.apply(node, {"Event-Name": "CHANNEL_DESTROY", "Unique-ID": uuid})
    elif kind == "forget":
        _, node, uuid = step
        t.remove(node, uuid, tombstone=False)  # a reconcile found it gone
    else:
        lists = [t.all()]
        for account in ACCOUNTS:
            lists.append(t.by_account(account))
            for user in ("u1", "u2", "d1"):
                lists.append(t.by_device(account, "d" + user))
        for listed in lists:
            assert listed == sorted(listed, key=Channel.sort_key)


@pytest.fixture
def keep_short_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lists here are a handful of channels: kept in order as long ones are."""
    monkeypatch.setattr(table_module, "KEEP_ORDER_FROM", 0)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_kept_orders_follow_every_change(
    keep_short_orders: None, steps: list[tuple[Any, ...]]
) -> None:
    t = ChannelTable(tombstone_ttl=0.0)
    for step in steps:
        apply(t, step)
        problems = t.problems()
        assert not problems, f"after {step}: {problems}"
    apply(t, ("list",))


def test_a_kept_order_is_not_sorted_again_when_a_member_joins_or_leaves(
    keep_short_orders: None,
) -> None:
    """The point of keeping it: a joining channel takes its place, nothing is sorted anew."""
    t = ChannelTable()
    for i, uuid in enumerate(UUIDS[:4]):
        apply(t, ("create", "fs1", uuid, "acc1", "u1", 1_795_000_000 + i))
    order = t.all_scope().order
    assert order is None  # nobody asked yet
    first = t.all()
    kept = t.all_scope().order
    assert kept is not None and [c.uuid for c in first] == UUIDS[:4]
    apply(t, ("create", "fs1", UUIDS[4], "acc1", "u1", 1_795_000_001))
    apply(t, ("destroy", "fs1", UUIDS[0]))
    assert t.all_scope().order is kept  # the same list, changed in place
    assert [c.uuid for c in t.all()] == [UUIDS[1], UUIDS[4], UUIDS[2], UUIDS[3]]


def test_a_burst_nobody_lists_between_drops_the_kept_order(keep_short_orders: None) -> None:
    """A reconcile's thousands of changes are not inserted one by one into an order nobody
    asks for meanwhile: it is dropped, and sorted once when asked."""
    t = ChannelTable()
    apply(t, ("create", "fs1", UUIDS[0], "acc1", "u1", 1_795_000_000))
    t.all()
    for i in range(100):
        uuid = f"00000000-0000-4000-9000-{i:012d}"
        t.apply("fs1", {"Event-Name": "CHANNEL_CREATE", "Unique-ID": uuid})
    assert t.all_scope().order is None
    listed = t.all()
    assert listed == sorted(listed, key=Channel.sort_key) and len(listed) == 101


def test_a_short_list_is_sorted_again_rather_than_kept() -> None:
    t = ChannelTable()
    apply(t, ("create", "fs1", UUIDS[0], "acc1", "u1", 1_795_000_000))
    t.by_account("acc1")
    apply(t, ("create", "fs1", UUIDS[1], "acc1", "u1", 1_795_000_001))
    assert t.account_scope("acc1").order is None
    assert [c.uuid for c in t.by_account("acc1")] == UUIDS[:2]
