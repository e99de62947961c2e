"""Outside attack, round 2: a reused uuid's new call against the old call's late events (the
table), and the json log form's fields() against arguments % cannot format."""

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from test_logs import journal
from test_table import A, CREATED_US, Clock, with_vars

from channelsd.ended import EndedCalls
from channelsd.table import ChannelTable

OLD, NEW = CREATED_US, CREATED_US + 5_000_000  # the old call, and the one reusing its uuid


def of(created: int, name: str, **variables: str) -> dict[str, str]:
    e = with_vars(name, account_id="acc1", **variables)
    e["Caller-Channel-Created-Time"] = str(created)
    return e


def state(created: int, value: str) -> dict[str, str]:
    e = of(created, "CHANNEL_STATE")
    e["Channel-State"] = value
    return e


@pytest.fixture
def table() -> Iterator[tuple[ChannelTable, EndedCalls, list[Any]]]:
    clock = Clock()
    t = ChannelTable(tombstone_ttl=60, clock=clock)
    ended = EndedCalls(clock=clock)
    notes: list[Any] = []
    t.listen(lambda kind, ch, info: notes.append((kind, ch.created_us)))
    t.listen(ended.on_change, destroys_only=True)
    yield t, ended, notes
    assert t.problems() == []


def hung_up_old_call(t: ChannelTable, complete: bool = True) -> None:
    t.apply("fs1", of(OLD, "CHANNEL_CREATE"))
    t.apply("fs1", of(OLD, "CHANNEL_HANGUP", hangup_cause="NORMAL_CLEARING"))
    if complete:
        t.apply("fs1", of(OLD, "CHANNEL_HANGUP_COMPLETE", billsec="3"))


@pytest.mark.parametrize(
    "late",
    [of(OLD, "CHANNEL_DESTROY"), state(OLD, "CS_DESTROY")],
    ids=["CHANNEL_DESTROY", "CS_DESTROY"],
)
def test_the_old_calls_destroy_after_the_new_calls_events_keeps_the_new_call(
    table: Any, late: dict[str, str]
) -> None:
    """FreeSWITCH takes a session out of its uuid table before it fires its CHANNEL_DESTROY
    (switch_core_session_perform_destroy), and CS_DESTROY's state event follows it: a new call
    under the same uuid (origination_uuid) can be heard of first, without anything being
    lost. The new call's second event drops the old call's tombstone (a newer channel), and
    the old call's destroy then removes the live new call and tombstones it with the new
    call's own creation time: every later event of it, and the reconcile's uuid_dump of it,
    are refused until the tombstone expires, and the live call is recorded as ended."""
    t, ended, _ = table
    hung_up_old_call(t)
    t.apply("fs1", of(NEW, "CHANNEL_CREATE"))
    t.apply("fs1", of(NEW, "CHANNEL_ORIGINATE"))
    t.apply("fs1", late)  # the old call's, late
    ch = t.get(A)
    assert ch is not None and ch.created_us == NEW and ch.ending is None
    t.apply("fs1", of(NEW, "CHANNEL_ANSWER"))
    assert t.get(A) is not None and t.get(A).answered
    assert len(ended) == 1  # the old call only
    assert t.hydrate("fs1", of(NEW, "CHANNEL_DATA")) is not None


def test_the_old_calls_late_hangup_complete_does_not_end_the_new_call(table: Any) -> None:
    """The old call's HANGUP_COMPLETE, reordered after the new call's events (its CREATE,
    then one more: the old tombstone is gone), folds into the new live call: its ending is
    set (the old call's cause and billing seconds), which actions and a reconcile read as a
    call that hung up."""
    t, _, _ = table
    hung_up_old_call(t, complete=False)
    t.apply("fs1", of(NEW, "CHANNEL_CREATE"))
    t.apply("fs1", of(NEW, "CHANNEL_ORIGINATE"))
    t.apply("fs1", of(OLD, "CHANNEL_HANGUP_COMPLETE", billsec="3"))
    ch = t.get(A)
    assert ch is not None and ch.created_us == NEW
    assert ch.ending is None


@pytest.mark.parametrize(
    "args",
    [("auth_token=tok-0123456789", float("inf")), ("auth_token=tok-0123456789", 2**64)],
    ids=["inf", "big"],
)
def test_a_json_field_that_percent_cannot_format_is_one_safe_line(
    args: tuple[Any, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """`%d` of an infinity (and `%c` of a code point past U+10FFFF) raises OverflowError,
    which fields() does not catch (only KeyError, IndexError, TypeError, ValueError): the
    json formatter raises, and logging's handleError prints "--- Logging error ---", a
    traceback and the record's raw arguments to stderr (the journal), around mask() and
    escape(): the token is written as it was given. (The text form writes one line.)"""
    template = "node=%s took=%d" if isinstance(args[1], float) else "node=%s char=%c"
    with journal("json") as stream:
        logging.getLogger("channelsd.test").warning(template, *args)
    err = capsys.readouterr().err
    out = stream.getvalue()
    assert "Logging error" not in err and "tok-0123456789" not in err
    assert out.count("\n") == 1 and "tok-0123456789" not in out


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_a_json_field_whose_argument_str_raises_is_one_safe_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """message_of() catches any exception of an argument's __str__ ("unformattable log
    call"); fields() formats the same argument again and lets a RuntimeError through."""
    with journal("json") as stream:
        logging.getLogger("channelsd.test").warning("x=%s y=%s", Unprintable(), "auth_token=t-99")
    assert "Logging error" not in capsys.readouterr().err
    assert stream.getvalue().count("\n") == 1 and "t-99" not in stream.getvalue()

