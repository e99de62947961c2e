"""Outside attack, round 3: tombstones kept while a new channel reuses the uuid, reuse only on
starting events, and the reconcile's "No such channel" (table only)."""

from typing import Any

from channelsd.table import ChannelTable
from tests.test_table import CREATED_US, A, B, Clock, ev, with_vars

OLD = CREATED_US  # the destroyed channel's creation time
NEW = CREATED_US + 5_000_000  # a channel created 5 s later


def _table(**kw: Any) -> tuple[ChannelTable, Clock, list[tuple[str, str]]]:
    clock = Clock()
    t = ChannelTable(tombstone_ttl=60, clock=clock, **kw)
    notices: list[tuple[str, str]] = []
    t.listen(lambda kind, ch, _info: notices.append((kind, ch.uuid)))
    return t, clock, notices


def _at(e: dict[str, str], created: int) -> dict[str, str]:
    e["Caller-Channel-Created-Time"] = str(created)
    return e


def _creates_minus_destroys(notices: list[tuple[str, str]], uuid: str) -> int:
    n = 0
    for kind, u in notices:
        if u == uuid:
            n += kind == "create"
            n -= kind == "destroy"
            assert 0 <= n <= 1, notices
    return n


def test_a_live_channel_renamed_onto_a_tombstoned_uuid_is_heard_under_it() -> None:
    # A (created later) was destroyed; B, an older live call, is renamed to A (CHANNEL_UUID).
    # The rename is done before the tombstone is asked, then the event is dropped: no "create"
    # for A, and every later event of B (created before the tombstone's channel) is dropped,
    # its DESTROY included -- the row stays until a reconcile, whose removal is a destroy
    # without a create.
    t, _clock, notices = _table()
    t.apply("fs1", _at(with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1"), OLD))
    t.apply("fs1", _at(with_vars("CHANNEL_CREATE", uuid=A, account_id="acc1"), NEW))
    t.apply("fs1", _at(with_vars("CHANNEL_DESTROY", uuid=A, account_id="acc1"), NEW))
    t.apply("fs1", _at(ev("CHANNEL_UUID", uuid=A, **{"Old-Unique-ID": B}), OLD))
    assert t.get(A) is not None and t.get(B) is None
    assert _creates_minus_destroys(notices, A) == 1  # streams were told of A
    t.apply("fs1", _at(ev("CHANNEL_ANSWER", uuid=A, **{"Answer-State": "answered"}), OLD))
    assert t.get(A).answered  # the live call's events are folded in
    t.apply("fs1", _at(ev("CHANNEL_HANGUP", uuid=A, **{"Hangup-Cause": "NORMAL_CLEARING"}), OLD))
    t.apply("fs1", _at(ev("CHANNEL_DESTROY", uuid=A), OLD))
    assert t.get(A) is None  # its DESTROY removed it
    assert _creates_minus_destroys(notices, A) == 0
    assert t.problems() == []


def test_a_rename_onto_a_hung_up_rows_uuid_is_not_ended_by_that_rows_late_destroy() -> None:
    # A1 heard its HANGUP; FreeSWITCH freed its uuid and B (a live call) was renamed to it
    # before A1's DESTROY was fired. The rename replaced A1's row without a tombstone (as "the
    # same leg heard of before the rename"), so A1's DESTROY, which nothing now drops, removes
    # the live call -- and tombstones the uuid under B's creation time: B's own later events
    # and a reconcile's hydrate of it are refused until the tombstone expires.
    t, _clock, notices = _table()
    t.apply("fs1", _at(with_vars("CHANNEL_CREATE", account_id="acc1"), OLD))
    t.apply("fs1", _at(ev("CHANNEL_HANGUP", **{"Hangup-Cause": "NORMAL_CLEARING"}), OLD))
    t.apply("fs1", _at(with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1"), NEW))
    t.apply("fs1", _at(ev("CHANNEL_UUID", uuid=A, **{"Old-Unique-ID": B}), NEW))
    t.apply("fs1", _at(ev("CHANNEL_DESTROY"), OLD))  # A1's, late
    live = t.get(A)
    assert live is not None and live.ending is None and live.created_us == NEW
    assert t.problems() == []
