"""Outside review of the reconcile "gone after a hang-up" change and of the log formatter's
exception text: what still breaks."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from typing import Any

import gevent

from conftest import wait_until

ACC = {"account_id": "acc1", "owner_id": "user1", "authorizing_id": "dev1"}

# Everything a hang-up fires after CHANNEL_HANGUP (the stand-in's teardown).
AFTER_HANGUP = {
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_UNPARK",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
    "PRESENCE_IN",
    "RECORD_STOP",
}


def listed(h: Any, tok: str = "super") -> set[str]:
    return {i["uuid"] for i in h.api.data("/v2/channels", tok)}


def _reconcile_while_hanging_up(switch: Any, h: Any, a: str, b: str) -> Any:
    """Ask about a and b (as after a reconnect), hang the call up while the answers are on
    their way, and hold what the hang-up fires after CHANNEL_HANGUP until the reconcile is
    done: FreeSWITCH answers "No such channel" as soon as a channel is down (its read lock
    fails), while its HANGUP_COMPLETE waits for the reporting state and the event thread."""
    node = h.node()
    node._unverified = True
    node._subscribed_at = h.table.now() + 1
    switch.reply_delay = 0.3
    asked = len(switch.received)
    reconciling = gevent.spawn(node.reconcile)
    wait_until(
        lambda: any(c.startswith("api uuid_dump") for _, c in switch.received[asked:]),
        what="the question sent",
    )
    with switch.events_held(AFTER_HANGUP):
        switch.hangup(a)
        wait_until(
            lambda: all(h.table.row("fs1", u).ending is not None for u in (a, b)),
            what="the hang-ups heard",
        )
        return reconciling.get(timeout=10)


def test_a_late_hangup_complete_does_not_bring_back_a_call_the_reconcile_removed(
    switch: Any, make_daemon: Any
) -> None:
    """The reconcile removes a hung-up row on "No such channel" without a tombstone, so the
    call's own HANGUP_COMPLETE, still on its way, makes it a row again: the streams hear the
    call destroyed, created anew (a hung-up call!) and destroyed again, and the ended calls
    hold it twice. With its DESTROY lost (the case the change is for) the ghost it meant to
    remove is back."""
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    assert listed(h) == {a, b}
    notices: list[tuple[str, str]] = []
    h.table.listen(lambda kind, ch, _info: notices.append((kind, ch.uuid)))
    _reconcile_while_hanging_up(switch, h, a, b)
    # the held HANGUP_COMPLETE, DESTROY ... have now been sent
    wait_until(
        lambda: all(h.table.is_tombstoned("fs1", u) for u in (a, b)), what="the DESTROYs heard"
    )
    assert listed(h) == set()
    creates = [u for kind, u in notices if kind == "create"]
    destroys = [u for kind, u in notices if kind == "destroy"]
    assert creates == [], f"a hung-up call created anew: {creates}"
    assert sorted(destroys) == sorted([a, b]), f"destroyed more than once: {destroys}"
    ended = [i["uuid"] for i in h.api.data("/v2/channels?ended=true")]
    assert sorted(ended) == sorted([a, b]), f"ended calls: {ended}"


def test_a_late_hangup_complete_with_its_destroy_lost_leaves_no_ghost(
    switch: Any, make_daemon: Any
) -> None:
    """The change's own case (DESTROY lost), with the HANGUP_COMPLETE a little later than the
    "No such channel": the row removed comes back from the HANGUP_COMPLETE, and stays."""
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    assert listed(h) == {a, b}
    switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}
    switch.drop_event_fraction = 1.0
    _reconcile_while_hanging_up(switch, h, a, b)
    gevent.sleep(0.5)
    assert listed(h) == set(), "the hung-up call is listed again (a ghost)"


def test_a_gone_answer_does_not_hide_a_new_call_that_reuses_a_hung_up_uuid(
    switch: Any, make_daemon: Any
) -> None:
    """A uuid is reused (a dialplan's origination_uuid on a sofia leg: CHANNEL_CREATE under
    that uuid, no CHANNEL_UUID) after its first call hung up and that call's DESTROY was
    lost. The new call's events fold into the old row, whose `ending` stays set: a reconcile
    that asked before the new call existed ("No such channel", true when answered) now
    removes the live call, since the row "heard its hang-up"."""
    a, b = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    h = make_daemon([switch])
    assert listed(h) == {a, b}
    switch.drop_event_names = {"CHANNEL_DESTROY", "CHANNEL_STATE"}
    switch.drop_event_fraction = 1.0
    switch.hangup(a)
    wait_until(
        lambda: all(
            (r := h.table.row("fs1", u)) is not None and r.ending is not None and r.ending.complete
            for u in (a, b)
        ),
        what="the hang-ups heard (their DESTROYs lost)",
    )
    switch.drop_event_fraction = 0.0
    # The switch answers what was true when the question reached it: a was gone then.
    answer = switch.api.execute
    gone_then = {a}

    def as_when_asked(command: str, arg: str) -> bytes:
        if command == "uuid_dump" and arg.split()[0] in gone_then:
            return b"-ERR No such channel!\n"
        return answer(command, arg)

    switch.api.execute = as_when_asked
    switch.reply_delay = 0.3
    asked = len(switch.received)
    reconciling = gevent.spawn(h.node().reconcile)
    wait_until(
        lambda: any(c == f"api uuid_dump {a} json" for _, c in switch.received[asked:]),
        what="the question about a sent",
    )
    # Now a new call is created under the same uuid (FreeSWITCH lets it: the old session is
    # gone from its hash).
    model = switch.model
    new_channel = model._new_channel
    reused = [a]

    def with_reused_uuid(name: str, direction: str, uid: str | None = None) -> Any:
        return new_channel(name, direction, uid or (reused.pop() if reused else None))

    model._new_channel = with_reused_uuid
    a2, b2 = switch.bridged_call(variables_a=ACC, variables_b=ACC)
    model._new_channel = new_channel
    assert a2 == a
    wait_until(lambda: {a, b2} <= listed(h), what="the new call heard")
    reconciling.get(timeout=10)
    gone_then.clear()
    assert a in switch.channels  # the call is up
    assert {a, b2} <= listed(h), "a live call hidden by the reconcile"


def _long_chain(n: int) -> BaseException:
    """An exception whose __context__ chain is n long, as a retry loop that raises while
    handling the previous attempt's error leaves it (no recursion: any stack depth)."""
    exc: BaseException | None = None
    for i in range(n):
        try:
            try:
                if exc is not None:
                    raise exc
                raise KeyError("first")
            except Exception:
                raise ValueError(f"attempt {i}")  # noqa: B904
        except ValueError as e:
            exc = e
    assert exc is not None
    return exc


def test_format_exception_takes_a_chain_the_interpreter_takes() -> None:
    """traceback.format_exception walks a chain without recursion; format_exception recursed
    once per link and raised RecursionError past ~1,000 links."""
    import traceback

    from channelsd import logs

    exc = _long_chain(1500)
    assert "attempt 1499" in "".join(traceback.format_exception(exc))
    try:
        text = logs.format_exception((type(exc), exc, exc.__traceback__))
    except RecursionError as e:
        text = repr(e)
    assert text.rstrip().endswith("ValueError: attempt 1499"), text[-200:]


def test_logging_such_an_exception_does_not_raise_into_the_caller() -> None:
    """logging re-raises a formatter's RecursionError (it does not handleError() it): the
    caller's log.error(..., exc_info=True), in an except block, itself raised."""
    import io

    from channelsd import logs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter("%(levelname)s %(name)s %(message)s"))
    log = logging.getLogger("channelsd.attack.chain")
    log.addHandler(handler)
    log.propagate = False
    raised = None
    try:
        exc = _long_chain(1500)
        try:
            raise exc
        except ValueError:
            try:
                log.error("request failed", exc_info=True)
            except RecursionError as e:
                raised = repr(e)  # (not re-raised here: pytest would render the whole chain)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert raised is None, f"log.error raised {raised}"
    assert "ValueError: attempt 1499" in stream.getvalue()


def test_a_greenlet_failing_with_a_long_chain_is_logged() -> None:
    """The hub path (log_greenlet_errors) in a real process: the greenlet's failure must reach
    the log as `<greenlet> failed with ValueError` and its traceback; with the formatter's
    RecursionError only gevent's own print of that RecursionError reached stderr."""
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import gevent, sys
        sys.path.insert(0, "tests")
        from channelsd import logs
        from test_attack_round import _long_chain
        logs.log_greenlet_errors(gevent.get_hub())
        logs.setup("info", "json")
        def fail():
            raise _long_chain(1500)
        gevent.spawn(fail).join()
        gevent.sleep(0.1)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    import json

    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(
        e["logger"] == "channelsd.greenlet" and "failed with ValueError" in e["msg"] for e in lines
    ), proc.stderr[-2000:]
    assert "RecursionError" not in proc.stderr
