"""An outside attack (issue #16) on three changes of the ingest path: the picker's kept values
(picker.c value_of / last), the cut's hints (b"" / None / the body) and details(held, ...)
answering None (fields.c holds_all, fields.py pick_details, ChannelTable._details).

What could crash the process runs in a child interpreter with the same extensions
(_in_child, as tests/test_eventpick_attack.py does), so that a crash is a failed test.

One found a defect, since fixed (see its docstring):
test_a_detail_key_that_changes_found_under_the_held_walk_is_no_use_after_free. The others are
attacks that held, kept for the coverage the other tests lack."""

from __future__ import annotations

import gc
import math
import random
import sys
import tracemalloc
from typing import Any

import orjson
import pytest
from test_eventpick import _state
from test_eventpick_attack import _in_child, _ok

from channelsd import esl, eventpick
from channelsd.eventpick import TableReader
from channelsd.events import parse_json
from channelsd.fields import loops, pick_details
from channelsd.table import _CORE_DETAILS, _RTP_DETAILS, ChannelTable, Identity

Picker = eventpick.Picker
pytestmark = pytest.mark.usefixtures("picker_built")  # (each fails where it is not)

KEPT = 64  # picker.c's MAX_KEPT_VALUE


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body) + body


# -- the defect ------------------------------------------------------------------------------


def test_a_detail_key_that_changes_found_under_the_held_walk_is_no_use_after_free() -> None:
    """Before the fix, fields.c holds_all() walked `found` with PyDict_Next and held neither
    the borrowed key nor the borrowed value across PyDict_GetItemWithError(held, key) and
    PyObject_RichCompareBool(kept, v), taking it that nothing could change `found`
    meanwhile. A detail key that is not an exact str (the C checks only that an entry is a
    3-tuple) runs Python code in that lookup (__hash__/__eq__), and such a key makes `found`
    a GC-tracked dict that gc.get_referrers() hands out. Cleared there, `found` freed the int
    it held for a numeric detail (PyLong_FromLong(12345): its only reference), and the
    compare read freed memory; here the next int made takes that memory, so held's 12345
    was compared with 50000 and details() answered `{}` (the cleared dict) instead of None,
    while pick_details() raises RuntimeError ("dictionary changed size during iteration").
    The table passes exact-str keys only: it was the C function alone that was unsafe (its
    contract: what pick_details() does, or TypeError)."""
    done = _in_child(
        """
        import gc
        from channelsd.fields import loops
        _, details = loops(True)
        calls = [0]; busy = [False]; seen = {}
        class Key(str):
            __slots__ = ()
            def __hash__(self):
                if not busy[0]:
                    calls[0] += 1
                    if calls[0] == 3:  # holds_all's lookup in held (1, 2: found's own)
                        busy[0] = True
                        for r in gc.get_referrers(self):
                            if type(r) is dict and r is not held and any(x is self for x in r):
                                seen["freed"] = id(next(iter(r.values())))
                                r.clear()
                        for i in range(200):  # the freed int's memory, taken by a new int
                            j = int(str(50000 + i))
                            junk.append(j)
                            if id(j) == seen.get("freed"):
                                seen["reused by"] = j
                                break
                        busy[0] = False
                return str.__hash__(self)
            __eq__ = str.__eq__
        junk = []
        held = None
        key = Key("read_rate")
        held = {key: 12345}
        calls[0] = 0
        try:
            got = details(held, {"Channel-Read-Codec-Rate": "12345"},
                          ((key, "Channel-Read-Codec-Rate", True),), {})
        except (RuntimeError, TypeError) as exc:
            print("raised", exc)
        else:
            # held has read_rate == 12345, the event carries 12345: None (or an error)
            assert got is None, f"details() answered {got!r}: it compared held's 12345 " \\
                f"with a freed int whose memory became {seen.get('reused by')!r} ({seen})"
        """
    )
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout}\n{done.stderr[-2000:]}"


# -- kept values: attacks that held ----------------------------------------------------------


def _value(n: int, escape: str) -> str:
    """A JSON string's text of `n` bytes ending with `escape` (as written in the body)."""
    return "x" * (n - len(escape)) + escape


@pytest.mark.parametrize(
    ("n", "escape"),
    [
        (n, escape)
        for escape in ["", "\\/", "\\t", "\\\\", '\\"', "\\b"]
        for n in [0, 1, 2, KEPT - 2, KEPT - 1, KEPT, KEPT + 1, KEPT + 2]
        if n >= len(escape)  # room for the escape
    ],
)
def test_values_either_side_of_the_kept_length_are_orjsons(n: int, escape: str) -> None:
    """A value of 62..66 bytes, plain or ending with an escape (so that the raw and the
    decoded length sit either side of 64), then the same text spelt the other way, then
    again: every pick is orjson's, and a plain value is given again as the same object only
    when it was kept."""
    picker = Picker(["Unique-ID", "Channel-State"], "variable_ecallmgr_")
    text = _value(n, escape)
    plain = orjson.loads(b'"' + text.encode() + b'"')
    spelt = orjson.dumps(plain).decode()[1:-1]  # orjson's own spelling (no "\\/")
    bodies = [
        f'{{"Unique-ID":"{text}","Channel-State":"{text}","variable_ecallmgr_a":"{text}"}}',
        f'{{"Unique-ID":"{spelt}","Channel-State":"{spelt}"}}',
        f'{{"Unique-ID":"{spelt}","Channel-State":"{text}"}}',
        f'{{"Unique-ID":"{text}"}}',
    ]
    previous: dict[str, Any] = {}
    previous_plain = False
    for body in bodies + bodies:
        raw = body.encode()
        got = picker.pick(raw)
        assert got == orjson.loads(raw), raw
        assert all(v.__class__ is str for v in got.values())
        plain = "\\" not in body
        for k, v in got.items():
            if plain and previous_plain and previous.get(k) == v and len(v) <= KEPT:
                assert v is previous[k], (k, raw)  # kept, and given again
            if len(v) > KEPT:
                assert v is not previous.get(k), (k, raw)  # never kept
        previous, previous_plain = got, plain


def test_kept_values_are_counted_once_and_freed_with_the_picker() -> None:
    """A kept value's references: one held by the picker, none added per pick; released by
    a re-initialisation (fewer names) and by the picker's death. No growth over many picks
    and cuts of kept, unkept and escaped values."""
    picker = Picker(["A", "B", "Event-Name"], "v_")
    v = picker.pick(b'{"A":"same"}')["A"]
    base = sys.getrefcount(v)
    for _ in range(1000):
        assert picker.pick(b'{"A":"same"}')["A"] is v
    assert sys.getrefcount(v) == base
    picker.__init__(["B"], "v_")
    assert sys.getrefcount(v) == base - 1  # the picker let it go
    w = picker.pick(b'{"B":"other"}')["B"]
    before = sys.getrefcount(w)
    del picker
    assert sys.getrefcount(w) == before - 1

    picker = Picker(["A", "B", "Event-Name"], "v_")
    bodies = [
        orjson.dumps({"Event-Name": "CHANNEL_X", "A": _value(n, e), "B": "b", "v_1": "x" * n})
        for n in (0, 1, KEPT - 1, KEPT, KEPT + 1, 300)
        for e in ("", "\t", "/")
    ]
    buf = b"".join(frame(b) for b in bodies)

    def run(rounds: int) -> None:
        for _ in range(rounds):
            for body in bodies:
                assert picker.pick(body) == orjson.loads(body)
            picks, _, _, _ = picker.cut(buf, 0, 10**6, 14, 10**6, "CHANNEL_", frozenset())
            assert picks == [orjson.loads(b) for b in bodies]

    run(20)
    gc.collect()
    tracemalloc.start()
    try:
        first = tracemalloc.take_snapshot()
        run(1000)
        gc.collect()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(first, "filename"))
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown


def test_a_finalizer_that_reinitialises_with_fewer_names_while_values_are_kept() -> None:
    """Values kept for 300 names; a collection in the pick (or between a cut's frames) runs a
    finalizer that re-initialises the picker with fewer names in another order, or none: the
    `last` array of the old names is never read for the new ones (each pick is orjson's for
    the names the picker has when the pick reads them)."""
    _ok(
        """
        import gc, random, orjson
        from channelsd_picker import Picker
        rng = random.Random(7)
        ALL = ["N%d" % i for i in range(300)]
        p = Picker(ALL, "v_")
        state = {"names": set(ALL), "prefix": "v_"}
        class Bomb:
            def __del__(self):
                names = rng.sample(ALL, rng.choice([0, 1, 5, 299]))
                prefix = rng.choice(["v_", "", "N"])
                p.__init__(names, prefix)
                state["names"], state["prefix"] = set(names), prefix
        texts = ["a", "x" * 63, "x" * 64, "x" * 65, "", "a/b"]
        for it in range(3000):
            ev = {rng.choice(ALL): rng.choice(texts) for _ in range(rng.randint(0, 40))}
            body = orjson.dumps(ev)
            if it % 2:
                body = body.replace(b"/", b"\\\\/")
            gc.disable(); b = Bomb(); b.me = b; del b; gc.set_threshold(1); gc.enable()
            got = p.pick(body)
            gc.set_threshold(700)
            names, prefix = state["names"], state["prefix"]
            want = {k: v for k, v in ev.items() if k in names or k.startswith(prefix)}
            assert got == want, (it, got, want)
        """
    )


def test_picks_and_reinitialisations_from_several_threads() -> None:
    """Threads that pick and cut while others re-initialise the picker (directly and from
    finalizers run by collections in the picks): no crash, and every picked value is the
    value orjson reads for its key."""
    _ok(
        """
        import gc, sys, threading, orjson
        from channelsd_picker import Picker
        sys.setswitchinterval(1e-4)
        N = ["Event-Name", "Unique-ID", "A", "B", "C", "D"]
        p = Picker(N, "v_")
        bodies = [orjson.dumps({"Event-Name": "CHANNEL_X", "Unique-ID": "u" * n, "A": "a" * n,
                                "D": "d", "v_1": "x" * n}) for n in (0, 1, 63, 64, 65)]
        buf = b"".join(b"Content-Length: %d\\nContent-Type: text/event-json\\n\\n" % len(b) + b
                       for b in bodies)
        stop = False; errors = []
        class Bomb:
            def __del__(self):
                p.__init__(["D"], "")
        def check(picked, body):
            whole = orjson.loads(body)
            errors.extend((k, v) for k, v in picked.items() if whole.get(k) != v)
        def picking():
            for _ in range(3000):
                for b in bodies:
                    d = p.pick(b)
                    if d is not None:
                        check(d, b)
                picks, bs, hints, pos = p.cut(buf, 0, 100, 14, 10**6, "CHANNEL_", frozenset())
                for d, b in zip(picks, bs):
                    if d is not None:
                        check(d, b)
        def initialising():
            i = 0
            while not stop:
                i += 1
                p.__init__(N[: i % 7], ["v_", "", "U"][i % 3])
                if i % 50 == 0:
                    b = Bomb(); b.me = b; del b
        gc.set_threshold(5)
        ts = [threading.Thread(target=picking) for _ in range(3)]
        ts += [threading.Thread(target=initialising) for _ in range(2)]
        for t in ts: t.start()
        for t in ts[:3]: t.join()  # the pickers' rounds done
        stop = True
        for t in ts[3:]: t.join()
        assert not errors, errors[:3]
        """
    )


# -- the hints and the table: attacks that held ----------------------------------------------

PRE = "variable_ecallmgr_"
UUIDS = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(3)]
KEYS = [
    "Channel-Name", "Channel-State", "Channel-Call-State", "Caller-Caller-ID-Number",
    "variable_sip_from_user", PRE + "Account-ID", PRE + "Owner-ID", PRE + "Other",
    "variable_acc_x", "variable_x", "Channel-Read-Codec-Name", "Channel-Read-Codec-Rate",
    "variable_sip_call_id", "variable_sip_network_ip", "Caller-Network-Addr",
    "variable_rtp_secure_media_confirmed", "variable_zrtp_secure_media_confirmed_audio",
    "variable_loopback_leg", "Answer-State", "Caller-Destination-Number",
    "Other-Leg-Unique-ID", "variable_current_application", "variable_sip_network_port",
]  # fmt: skip
VALUES = [
    "", "a", "b", "x" * 63, "x" * 64, "x" * 65, "y" * 64, "a\\/b", "a/b", "a\\tb", "\\\\",
    '\\"', "\\u0041", "\u00e9", "true", "8000", "08000", "123456", "CS_EXECUTE", "answered",
    "loopback/x", "sofia/a", PRE, PRE + "x", UUIDS[1], "\\/" * 32, "/" * 64, "\\/" * 33,
]  # fmt: skip
NAMES = [
    "CHANNEL_CREATE", "CHANNEL_DATA", "CHANNEL_STATE", "CHANNEL_CALLSTATE", "CHANNEL_ANSWER",
    "CHANNEL_EXECUTE", "CHANNEL_HANGUP", "CHANNEL_DESTROY", "CHANNEL_HOLD", "CHANNEL_BRIDGE",
]  # fmt: skip


def _identity(k: int) -> Identity:
    if k == 1:
        chains = {
            "owner_id": [PRE + "Owner-ID", "Caller-Caller-ID-Number"],
            "account_id": ["variable_sip_from_user", PRE + "Account-ID"],
        }
        return Identity(chains, ccv_prefix=PRE)
    if k == 2:
        return Identity({"owner_id": ["variable_x"]}, ccv_prefix="variable_")
    if k == 3:
        return Identity(ccv_prefix="variable_acc_")
    return Identity(ccv_prefix=PRE)


def _body(rng: random.Random) -> bytes:
    uuid = rng.choice(UUIDS)
    parts = [
        ("Event-Name", rng.choice(NAMES)),
        ("Unique-ID", uuid),
        ("Caller-Channel-Created-Time", "1700000000000000"),
    ]
    if rng.random() < 0.6:
        parts.append(("variable_uuid", uuid))
    parts += [(rng.choice(KEYS), rng.choice(VALUES)) for _ in range(rng.randint(0, 10))]
    rng.shuffle(parts)
    return ("{" + ",".join(f'"{k}":"{v}"' for k, v in parts) + "}").encode()


@pytest.mark.parametrize("seed", range(40))
def test_a_table_fed_cut_picks_and_hints_equals_one_fed_whole_events_across_sighups(
    seed: int,
) -> None:
    """Hostile streams about three channels (values of 63/64/65 bytes, escapes, \\u, non-
    ASCII, the prefix in values, secure media, numbers spelt 5 or 6 digits), cut as the
    reader cuts them, with identities (prefix, chains of custom variables) changed at random
    between events, inside a cut too (the reader then picks the body anew, as esl._events
    does when holds() is false): after each event the table fed picks and hints equals the
    table fed the whole events with their bodies."""
    rng = random.Random(seed)
    k = rng.randrange(4)
    whole = ChannelTable(_identity(k), clock=lambda: 1.0)
    fed = ChannelTable(_identity(k), clock=lambda: 1.0)
    reader = TableReader(fed)
    bodies = [_body(rng) for _ in range(rng.randint(20, 80))]
    stream = b"".join(frame(b) for b in bodies)
    pos = done = 0
    hints_seen: set[Any] = set()
    while done < len(bodies):
        cut = reader.cut(stream, pos, rng.randint(1, 20), esl.BIG_EVENT_SHIFT, esl.MAX_EVENT_BYTES)
        assert cut is not None
        picks, cut_bodies, hints, pos, holds = cut
        for picked, body, hint in zip(picks, cut_bodies, hints, strict=True):
            if rng.random() < 0.05:  # a SIGHUP
                k = rng.randrange(4)
                whole.set_identity(_identity(k))
                fed.set_identity(_identity(k))
            try:
                event = parse_json(body)
            except Exception:
                event = None
            if event is not None:
                whole.apply("fs1", event, body)
            if picked is None:
                if event is not None:
                    fed.apply("fs1", event, body)
            elif not holds():
                fed.apply("fs1", reader.parse(body), body)
            else:
                hints_seen.add(hint)
                fed.apply("fs1", picked, hint)
            assert _state(fed) == _state(whole), body
            done += 1
    assert pos == len(stream)
    assert hints_seen, "no pick was applied with its hint"


# -- details(held, ...): attacks that held -------------------------------------------------


class _Always(str):
    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        return True


class _Never(str):
    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        return False


class _Unsure(str):
    __hash__ = str.__hash__

    def __eq__(self, other: object) -> Any:
        return NotImplemented


class _NoTruth:
    def __bool__(self) -> bool:
        raise ValueError("no truth")


class _Odd(str):
    __hash__ = str.__hash__

    def __eq__(self, other: object) -> Any:
        return _NoTruth()


class _Raising(str):
    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        raise KeyError("eq")


class _Mutating(str):
    """Empties the held dict it is compared from (held is walked by key, found by C)."""

    __hash__ = str.__hash__
    target: dict[str, Any] = {}

    def __eq__(self, other: object) -> bool:
        self.target.clear()
        return str.__eq__(self, other)


EVENT = {
    "Channel-Read-Codec-Name": "PCMU",
    "Channel-Read-Codec-Rate": "8000",
    "variable_sip_call_id": "abc",
    "variable_sip_network_port": "123456",  # refused: six digits
}
SAME = {"read_codec": "PCMU", "read_rate": 8000, "sip_call_id": "abc"}


def _helds() -> list[tuple[str, dict[str, Any]]]:
    mutating = _Mutating("PCMU")
    held_mutated = {**SAME, "read_codec": mutating}
    _Mutating.target = held_mutated
    return [
        ("lists", {k: [v] for k, v in SAME.items()}),
        ("float", {**SAME, "read_rate": 8000.0}),
        ("bool", {**SAME, "read_rate": True}),
        ("nan", {**SAME, "read_rate": math.nan}),
        ("spelt", {**SAME, "read_rate": "8000"}),
        ("always", {**SAME, "read_codec": _Always("G722"), "sip_call_id": _Always("x")}),
        ("never", {**SAME, "read_codec": _Never("PCMU")}),
        ("unsure", {**SAME, "read_codec": _Unsure("PCMU")}),
        ("no truth", {**SAME, "read_codec": _Odd("PCMU")}),
        ("raising", {**SAME, "read_codec": _Raising("PCMU")}),
        ("mutating", held_mutated),
        ("subclass key", {_Always("read_codec"): "PCMU", "read_rate": 8000, "sip_call_id": "abc"}),
        ("more", {**SAME, "secure_media": "srtp", "x": [1]}),
        ("empty", {}),
    ]


@pytest.mark.parametrize("details", [_RTP_DETAILS, _CORE_DETAILS], ids=["rtp", "core"])
def test_details_with_held_values_of_any_type_equal_the_python_loop(details: Any) -> None:
    """held whose values are lists, floats, bools, NaN, numbers spelt as text, or str
    subclasses whose __eq__ is always/never true, NotImplemented, a result without a truth
    value, raises, or empties held: the C answers (or raises) exactly as pick_details()."""
    _, c_details = loops(True)
    for i, (name, _) in enumerate(_helds()):
        results = []
        for f in (c_details, pick_details):
            held = _helds()[i][1]  # made anew for each (one of them empties itself)
            refused: dict[str, int] = {}
            try:
                results.append((repr(f(held, EVENT, details, refused)), refused))
            except Exception as exc:  # noqa: BLE001 - compared, not swallowed
                results.append((f"raised {exc!r}", refused))
        assert results[0] == results[1], name
