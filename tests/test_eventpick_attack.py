"""An outside attack on channelsd_picker and its wiring (tests/test_eventpick.py holds the
contract on captures and hostile bodies; these are what it did not try).

What could crash the process runs in a child interpreter with the same channelsd_picker, so
that a crash is a failed test, not a dead test run."""

from __future__ import annotations

import array
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from channelsd import builds, eventpick
from channelsd.table import ChannelTable, Identity

Picker = eventpick.Picker
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("picker_built")  # (each fails where it is not)


def _in_child(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports this channelsd_picker."""
    import channelsd_picker

    path = [os.path.dirname(channelsd_picker.__file__), str(ROOT), *sys.path]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _ok(code: str) -> None:
    done = _in_child(code)
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout}\n{done.stderr[-2000:]}"


def test_the_build_tested_is_of_this_source() -> None:
    # An in-place build (pip install -e ., or a venv shared with another checkout) is found
    # first and is never rebuilt by editing picker.c: the tests then hold an old build.
    assert builds.source_state("channelsd_picker") == "current", (
        "channelsd_picker was not built from channelsd/picker.c as it is now: "
        "`pip install -e .` again"
    )


# -- the object's life: crashes ----------------------------------------------------------------


def test_a_picker_never_initialised_raises_instead_of_crashing() -> None:
    _ok(
        """
        from channelsd_picker import Picker
        p = Picker.__new__(Picker)
        try:
            p.pick(b'{"a":"b"}')
        except TypeError:
            pass
        else:
            raise SystemExit("picked with no names")
        """
    )


def test_a_picker_whose_first_init_failed_raises_instead_of_crashing() -> None:
    _ok(
        """
        from channelsd_picker import Picker
        p = Picker.__new__(Picker)
        try:
            p.__init__(["a", "b", "c", 5], "x")
        except ValueError:
            pass
        for body in (b'{"a":"1"}', b'{"c":"1"}', b'{"xa":"1"}'):
            try:
                p.pick(body)
            except TypeError:
                pass
            else:
                raise SystemExit("picked with no names")
        """
    )


def test_a_failed_init_leaves_the_picker_as_it_was() -> None:
    # The names' hash chains were rewritten before a later name was refused: the old names
    # were then looked up at the new indices (a read past the old tuple).
    _ok(
        """
        from channelsd_picker import Picker
        p = Picker(["a"], "x")
        for bad in (["b", "c", "d", "e", "f", 5], ["b", "c", "d"] + ["x\\u00e9"]):
            try:
                p.__init__(bad, "x")
            except ValueError:
                pass
        try:
            p.__init__(["b", "c", "d", "e", "f"], "\\u00e9")
        except ValueError:
            pass
        for k in "abcdef":
            got = p.pick(('{"%s":"1","xy":"2"}' % k).encode())
            want = {"xy": "2", **({"a": "1"} if k == "a" else {})}
            assert got == want, (k, got)
        """
    )


def test_a_finalizer_that_reinitialises_the_picker_during_a_pick() -> None:
    # A collection can run in the pick (its dict is allocated there) and a finalizer can call
    # __init__ again: the prefix read before it was freed (heap-use-after-free under ASan;
    # here its memory is taken by junk of the same size, so that the old code misses the key).
    _ok(
        """
        import gc
        from channelsd_picker import Picker
        P = "variable_" + "ecallmgr_" * 3
        p = Picker(["a"], P)
        body = ('{"%sx":"1"}' % P).encode()
        junk = []
        class Bomb:
            def __del__(self):
                p.__init__(["b"], P)
                junk.append([bytes([90]) * len(P) for _ in range(8)])
        keep = []
        for i in range(20):
            gc.disable()
            b = Bomb(); b.me = b; del b
            keep.append([{} for _ in range(200)])  # no dict left in the free list
            gc.set_threshold(1)
            gc.enable()
            got = p.pick(body)
            gc.set_threshold(700)
            assert got == {P + "x": "1"}, (i, got)
            p.__init__(["a"], P)
        """
    )


# -- the contract ------------------------------------------------------------------------------


def test_an_empty_prefix_is_every_key_as_the_contract_says() -> None:
    # k.startswith("") holds for every k; the picker took "" for "no prefix".
    body = b'{"a":"1","b":"2","":"3"}'
    assert Picker(["a"], "").pick(body) == {"a": "1", "b": "2", "": "3"}


def test_a_table_whose_prefix_is_empty_is_fed_what_it_reads() -> None:
    # Identity(ccv_prefix="") makes every header a custom channel variable (the config's
    # schema does not allow it, the class does): picked, the channel lost all of them.
    uuid = "0d3f1e2a-1111-4222-8333-444455556666"
    event = {
        "Event-Name": "CHANNEL_CREATE",
        "Unique-ID": uuid,
        "variable_uuid": uuid,
        "Channel-Name": "sofia/internal/1001@a.example.com",
        "variable_foo": "bar",
    }
    body = orjson.dumps(event)
    whole, picked = (ChannelTable(Identity(None, ""), clock=lambda: 1.0) for _ in range(2))
    whole.apply("fs1", event, body)
    picked.apply("fs1", eventpick.parser_for(picked)(body), body)
    assert picked.all()[0].ccvs == whole.all()[0].ccvs


class _Bytes(bytes):
    pass


class _ByteArray(bytearray):
    pass


BODY = b'{"Event-Name":"CHANNEL_STATE","a":"1"}'


@pytest.mark.parametrize(
    "arg",
    [
        BODY.decode(),
        _Bytes(BODY),
        _ByteArray(BODY),
        array.array("b", BODY),
        pickle.PickleBuffer(BODY),
        memoryview(BODY + b" ")[::2],
        None,
        1,
    ],
    ids=[
        "str",
        "bytes-subclass",
        "bytearray-subclass",
        "array",
        "picklebuffer",
        "strided",
        "none",
        "int",
    ],
)
def test_what_orjson_does_not_read_as_bytes_is_left_to_orjson(arg: Any) -> None:
    # "None, or exactly orjson's parse": a body of another type is orjson's to judge (it
    # refuses all of these but str, which it parses); the picker took any buffer.
    assert Picker(["a", "Event-Name"], "variable_").pick(arg) is None


def test_a_released_memoryview_is_left_to_orjson() -> None:
    view = memoryview(BODY)
    view.release()
    assert Picker(["a"], "variable_").pick(view) is None


def test_names_given_as_one_string_are_refused() -> None:
    # `k in "Unique-ID"` is a substring test; the picker took the string's characters.
    with pytest.raises(TypeError):
        Picker("Unique-ID", "variable_")


def test_names_of_a_str_subclass_run_no_code_and_give_str_keys() -> None:
    calls = []

    class Name(str):
        def __hash__(self) -> int:
            calls.append(self)
            return str.__hash__(self)

        def __eq__(self, other: object) -> bool:
            calls.append(self)
            return str.__eq__(self, other)

    picker = Picker([Name("a")], "variable_")
    calls.clear()
    got = picker.pick(b'{"a":"1"}')
    assert got == {"a": "1"} and [type(k) for k in got] == [str]
    assert not calls


def test_every_byte_value_around_every_structural_position() -> None:
    picker = Picker(["Event-Name", ""], "variable_x")
    templates = [
        b'{"Event-Name":"a%sb"}',
        b'{"Event-Name":"\\%s"}',
        b'{%s"Event-Name":"x"}',
        b'{"Event-Name"%s:"x"}',
        b'{"Event-Name":%s"x"}',
        b'{"Event-Name":"x"%s}',
        b'{"a":"b"%s"c":"d"}',
        b"%s{}",
        b"{}%s",
        b'{"variable_x%s":"v"}',
        b'{"%s":"v"}',
    ]
    for c in range(256):
        for template in templates:
            body = template.replace(b"%s", bytes([c]))
            got = picker.pick(body)
            if got is not None:
                whole = orjson.loads(body)
                want = {
                    k: v
                    for k, v in whole.items()
                    if k in ("Event-Name", "") or k.startswith("variable_x")
                }
                assert got == want, body


# -- the operator ------------------------------------------------------------------------------


def test_check_and_run_warn_when_the_picker_is_missing() -> None:
    # eventpick.built()'s docstring said `channelsd check` and the start-up log tell; no code
    # did, and `pip install .` says nothing of an extension it could not build (without -v).
    done = _in_child(
        f"""
        import sys
        sys.modules["channelsd_picker"] = None  # as where it could not be built
        from channelsd.cli import main
        sys.exit(main(["check", "-c", {str(ROOT / "conf/channelsd.toml")!r}]))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "warning: channelsd_picker (C) is not installed" in done.stderr
    assert "C compiler" in done.stderr
    assert eventpick.install_warning() is None  # here it is built: nothing to say


def test_an_identity_the_picker_cannot_match_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    # The schema's `$` lets a trailing newline through ("variable_x\n" passes
    # ^[A-Za-z0-9_-]+$): the picker then silently stood aside for every event.
    table = ChannelTable(Identity({"account_id": ["variable_acct\n"]}))
    with caplog.at_level("WARNING", logger="channelsd.eventpick"):
        assert eventpick.picker_for(table) is None
    assert "parsed whole" in caplog.text


def test_picks_of_any_size_in_any_order_are_orjsons() -> None:
    """A pick's dict is sized for as many headers as the pick before it took (capped): a
    sequence of tiny, huge and empty picks, with names that share their last eight bytes
    (what the picker compares before the bytes themselves) and keys that only end like the
    prefix, each equals orjson's, whatever came before it."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    names = ("Event-Name", "Unique-ID", "Channel-State", "xUnique-ID", "Unique-ID ", "d-State")
    prefix = "variable_ecallmgr_"
    picker = Picker(names, prefix)
    keys = st.sampled_from(
        [
            *names,
            "Channel-Statf",
            "Channel-StatE",
            "variable_ecallmgr_",
            "variable_ecallmgr_A",
            "variable_xcallmgr_A",
            "Xariable_ecallmgr_A",
            "ecallmgr_",
            "variable_ecallmg",
            "x",
            "",
        ]
    )
    body = st.dictionaries(
        st.one_of(keys, st.integers(0, 400).map(lambda i: f"variable_ecallmgr_{i}")),
        st.text('abc\\"/ \t', max_size=8),
        max_size=300,
    )

    @given(st.lists(body, min_size=1, max_size=6))
    @settings(max_examples=150, deadline=None, derandomize=True)
    def run(bodies: list[dict[str, str]]) -> None:
        for event in bodies:
            raw = orjson.dumps(event)
            parsed = orjson.loads(raw)
            want = {k: v for k, v in parsed.items() if k in names or k.startswith(prefix)}
            assert picker.pick(raw) == want

    run()


def test_a_kept_value_is_given_again_only_for_the_same_text() -> None:
    """The picker gives a header's last value again when an event carries the same text
    (most headers do: issue #16). Through re-initialisations with fewer names or in another
    order (an index then belongs to another name, or to none), values either side of the
    kept length, and one value spelt plain and escaped, every pick equals orjson's. Equal
    short values are one object; longer ones are not kept (a hostile switch's long values
    are not held)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    names = ["Event-Name", "Unique-ID", "Channel-State", "Channel-Name", "Answer-State"]
    picker = Picker(names, "variable_ecallmgr_")
    kept = 64  # picker.c's MAX_KEPT_VALUE
    texts = st.sampled_from(
        ["", "a", "b", "ab", "a\tb", "a/b", 'a"b', "x" * kept, "x" * (kept + 1), "y" * kept]
    )
    events = st.dictionaries(st.sampled_from(names), texts, min_size=1)
    # a re-initialisation: fewer names, or the same in another order
    inits = st.permutations(names).flatmap(lambda p: st.integers(1, len(p)).map(lambda k: p[:k]))
    steps = st.lists(st.one_of(events, inits), min_size=1, max_size=12)

    @given(steps)
    @settings(max_examples=300, deadline=None, derandomize=True)
    def run(steps: list[Any]) -> None:
        current = list(names)
        for step in steps:
            if isinstance(step, list):
                current = step
                picker.__init__(current, "variable_ecallmgr_")
                continue
            # orjson escapes only the tab here; json's "/" as "\/" is the other spelling
            for raw in (orjson.dumps(step), orjson.dumps(step).replace(b"/", b"\\/")):
                assert picker.pick(raw) == {k: v for k, v in step.items() if k in current}
        picker.__init__(names, "variable_ecallmgr_")

    run()

    first = picker.pick(orjson.dumps({"Channel-State": "CS_EXECUTE", "Unique-ID": "u" * 65}))
    again = picker.pick(orjson.dumps({"Channel-State": "CS_EXECUTE", "Unique-ID": "u" * 65}))
    assert again["Channel-State"] is first["Channel-State"]
    assert again["Unique-ID"] == first["Unique-ID"] and again["Unique-ID"] is not first["Unique-ID"]
