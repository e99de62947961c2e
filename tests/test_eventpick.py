"""The picker (channelsd_picker, C) and the table it feeds.

Three things must hold for the picked events to be safe to apply:
1. the picker returns either None or exactly orjson's parse filtered to the wanted headers,
   on every capture and on hostile bodies (a switch, a dialplan or a caller writes them);
2. the table reads no header it does not declare (a header read and not picked would be
   missed without a sound): every header apply() asks for is recorded and checked;
3. a table fed picked events equals one fed whole events, on every capture.
And the events connection really uses it, over a real socket.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from channelsd import eventpick
from channelsd.channel import Channel, Ending
from channelsd.config import DEFAULT_CCV_PREFIX
from channelsd.events import parse_json, parse_plain
from channelsd.standin.replay import load_frames
from channelsd.table import ChannelTable, Identity, table_event

from conftest import CAPTURES, wait_until

Picker = eventpick.Picker  # None where it was not built: the first test says so

SCENARIOS = sorted({p.name.split(".")[0] for p in (CAPTURES / "json").glob("*.events.raw.gz")})


def test_the_picker_is_built_here() -> None:
    # Optional at install time (setup.py); where the tests run it must be there, or every
    # test below would test the fallback alone.
    assert eventpick.built(), (
        "channelsd_picker was not built: install a C compiler and Python's headers, "
        "then `pip install -e .` again"
    )


def _bodies(fmt: str = "json") -> list[tuple[str, bytes]]:
    found = []
    for name in SCENARIOS:
        path = CAPTURES / fmt / f"{name}.events.raw.gz"
        if path.exists():
            found += [(name, f.raw.split(b"\n\n", 1)[1]) for f in load_frames(path)]
    return found


JSON_BODIES = _bodies()
TABLE = ChannelTable()
PICKER = eventpick.picker_for(TABLE)


def wanted(event: dict[str, Any], table: ChannelTable = TABLE) -> dict[str, Any]:
    prefix = table.identity.ccv_prefix
    return {k: v for k, v in event.items() if k in table.headers_read or k.startswith(prefix)}


def check_contract(picker: Any, body: bytes, table: ChannelTable = TABLE) -> Any:
    picked = picker.pick(body)
    if picked is not None:
        whole = orjson.loads(body)  # raises if the picker took what orjson refuses
        assert isinstance(whole, dict)
        assert picked == wanted(whole, table)
        assert all(type(k) is str and type(v) is str for k, v in picked.items())
    return picked


def test_every_capture_is_picked_as_orjson_reads_it() -> None:
    assert len(JSON_BODIES) > 3000
    taken = 0
    for _, body in JSON_BODIES:
        picked = check_contract(PICKER, body)
        if picked is not None:
            taken += 1
        else:  # left to orjson: only for what is not the plain case
            assert not body.isascii() or b"\\u" in body or b"[" in body
    assert taken >= 0.95 * len(JSON_BODIES)  # the fast path is the one taken


# -- hostile bodies ---------------------------------------------------------------------------

HEADERS = sorted(TABLE.headers_read) + [
    DEFAULT_CCV_PREFIX + "Account-ID",
    DEFAULT_CCV_PREFIX,
    DEFAULT_CCV_PREFIX[:-1],
    "Core-UUID",
    "variable_sip_from_user",
    "event-name",
    "Unique-ID ",
    "",
]
texts = st.text(max_size=40) | st.sampled_from(["", "\\", '"', "\\u0041", "\u00e9", "\ud800"])
keys = (
    st.sampled_from(HEADERS)
    | st.text(max_size=20)
    | st.text(max_size=8).map(lambda s: DEFAULT_CCV_PREFIX + s)  # custom variables, any name
)
values = texts | st.integers() | st.none() | st.booleans() | st.lists(texts, max_size=3)
objects = st.dictionaries(keys, values, max_size=12)


def _encodings(obj: Any) -> list[bytes]:
    out = []
    with contextlib.suppress(TypeError):  # a lone surrogate: orjson will not write it
        out.append(orjson.dumps(obj))
    for kw in ({"ensure_ascii": True}, {"ensure_ascii": False, "indent": 1}):
        text = json.dumps(obj, separators=(" , ", " : "), **kw)
        out.append(text.encode("utf-8", "surrogatepass"))
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects)
@example({"Event-Name": 'A"B\\C/\b\f\n\r\t', "Unique-ID": "x"})
@example({"Event-Name": ["CHANNEL_STATE", "x"]})
def test_any_object_is_picked_exactly_or_left_to_orjson(obj: dict[str, Any]) -> None:
    for body in _encodings(obj):
        check_contract(PICKER, body)


def _mutants(body: bytes, at: int, span: int, junk: bytes) -> list[bytes]:
    at %= len(body) + 1
    return [
        body[:at] + junk + body[at:],  # inserted
        body[:at] + body[at + span :],  # cut (a truncated body among them)
        body[:at] + junk + body[at + len(junk) :],  # overwritten
    ]


@settings(max_examples=800, deadline=None)
@given(
    st.integers(0, len(JSON_BODIES) - 1),
    st.integers(0, 10_000),
    st.integers(0, 40),
    st.binary(max_size=6)
    | st.sampled_from([b'"', b"\\", b"\\u", b"{", b"}", b",", b":", b"\x00", b"\xff", b" "]),
)
def test_damaged_capture_bodies_are_picked_exactly_or_left_to_orjson(
    which: int, at: int, span: int, junk: bytes
) -> None:
    body = JSON_BODIES[which][1]
    for mutant in _mutants(body, at, span, junk):
        try:
            check_contract(PICKER, mutant)
        except orjson.JSONDecodeError:
            pytest.fail(f"picked a body orjson refuses: {mutant[max(0, at - 20) : at + 20]!r}")


def test_edges_of_the_body() -> None:
    for body in (b"", b" ", b"{", b"}", b"{}", b" {} ", b"{} x", b"[]", b'"x"', b"{,}", b'{"a"}'):
        check_contract(PICKER, body)
    assert PICKER.pick(b" {}\n") == {}
    assert PICKER.pick(bytearray(b'{"Event-Name":"CHANNEL_STATE"}')) == {
        "Event-Name": "CHANNEL_STATE"
    }
    assert PICKER.pick(memoryview(b'{"Event-Name":"x"}')) == {"Event-Name": "x"}
    assert PICKER.pick("{}") is None  # orjson's to judge: a str is no event's body
    # a string running to the body's end, at every length around the 16-byte loads
    for n in range(40):
        check_contract(PICKER, b'{"Event-Name":"' + b"x" * n)
        check_contract(PICKER, b'{"Event-Name":"' + b"x" * n + b"\\")


def test_names_the_picker_cannot_match_by_their_bytes_mean_whole_parses() -> None:
    for bad in ('a"b', "a\\b", "caf\u00e9", "tab\there"):
        with pytest.raises(ValueError):
            Picker([bad], DEFAULT_CCV_PREFIX)
        with pytest.raises(ValueError):
            Picker(["Unique-ID"], bad)
        table = ChannelTable(Identity({"account_id": [bad]}))
        assert eventpick.picker_for(table) is None
        assert eventpick.parser_for(table)(b'{"Event-Name":"CHANNEL_STATE","x":"1"}') == {
            "Event-Name": "CHANNEL_STATE",
            "x": "1",
        }
    with pytest.raises(ValueError):
        Picker([1], "p")
    with pytest.raises(TypeError):
        Picker(["x"], b"p")


# -- the table reads only what it declares ----------------------------------------------------


class Recording(dict):
    """An event that notes every header asked of it."""

    asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        Recording.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        Recording.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        Recording.asked.add(str(key))
        return super().__contains__(key)


def _kazoo(event: dict[str, Any], n: int) -> dict[str, Any]:
    """The event as Kazoo's ecallmgr would have it: its identity in custom variables."""
    if "variable_uuid" not in event:
        return event
    account = f"{n % 7:032x}"
    return {
        **event,
        DEFAULT_CCV_PREFIX + "Account-ID": account,
        DEFAULT_CCV_PREFIX + "Owner-ID": f"{n % 5:032x}",
        DEFAULT_CCV_PREFIX + "Authorizing-ID": f"{n % 3:032x}",
        DEFAULT_CCV_PREFIX + "Authorizing-Type": "device",
        DEFAULT_CCV_PREFIX + "Realm": "a.example.com",
        DEFAULT_CCV_PREFIX + "Username": "u",
        DEFAULT_CCV_PREFIX + "Call-Interaction-ID": "63900000000-abc",
        DEFAULT_CCV_PREFIX + "Something-New": "x",
        "variable_account_id": account,
        "variable_presence_id": "u@a.example.com",
    }


def _all_events() -> list[tuple[str, dict[str, Any]]]:
    events = [(name, parse_json(body)) for name, body in JSON_BODIES]
    for name in SCENARIOS:
        path = CAPTURES / "plain" / f"{name}.events.raw.gz"
        if path.exists():
            events += [(name, parse_plain(f.raw.split(b"\n\n", 1)[1])) for f in load_frames(path)]
    kazoo = [(f"{name}+kazoo", _kazoo(e, i)) for i, (name, e) in enumerate(events)]
    api = [
        (
            "api",
            {
                "Event-Name": "API",
                "API-Command": "uuid_setvar_multi",
                "API-Command-Argument": f"{e.get('Unique-ID')} account_id=x;presence_id=y",
            },
        )
        for _, e in events[:50]
    ]
    return events + kazoo + api


ALL_EVENTS = _all_events()


def test_apply_reads_no_header_it_does_not_declare() -> None:
    Recording.asked = set()
    tables: dict[str, ChannelTable] = {}
    for scenario, event in ALL_EVENTS:
        # the Python loops: they define what the C ones read (tests/test_fields.py)
        table = tables.setdefault(scenario.split("+")[0], ChannelTable(compiled=False))
        table.apply("fs1", Recording(event), None)
    prefix = TABLE.identity.ccv_prefix
    undeclared = {h for h in Recording.asked if h not in TABLE.headers_read}
    assert not {h for h in undeclared if not h.startswith(prefix)}
    # Ending's headers were asked, so the hang-ups went through the recording
    assert "variable_billsec" in Recording.asked and "Hangup-Cause" in Recording.asked


def _state(table: ChannelTable) -> dict[Any, Any]:
    rows = {}
    for ch in table.all():
        row = {s: getattr(ch, s) for s in Channel.__slots__ if s not in ("cached", "last_seen")}
        if ch.ending is not None:
            row["ending"] = {s: getattr(ch.ending, s) for s in Ending.__slots__}
        rows[ch.key] = row
    return {"rows": rows, "refused": table.refused, "tombstones": table.tombstone_count()}


@pytest.mark.parametrize("identity", ["default", "custom"])
def test_a_table_fed_picked_events_equals_one_fed_whole_events(identity: str) -> None:
    def table() -> ChannelTable:
        chains = {"owner_id": ["variable_sip_from_user", "Caller-Caller-ID-Number"]}
        return ChannelTable(Identity(chains) if identity == "custom" else None, clock=lambda: 1.0)

    whole, picked = table(), table()
    parse = eventpick.parser_for(picked)
    cut_points = picks = 0
    for i, (scenario, event) in enumerate(ALL_EVENTS):
        body = orjson.dumps(event)
        whole.apply("fs1", event, body)
        fed = parse(body)
        if table_event(event.get("Event-Name")):
            assert fed == wanted(event, picked) or fed == event  # or left to orjson
            picks += fed != event
        else:
            assert fed == event  # anything else reads it whole
        picked.apply("fs1", fed, body)
        if i % 97 == 0 or event.get("Event-Name") == "CHANNEL_DESTROY":
            assert _state(picked) == _state(whole), (scenario, i)
            cut_points += 1
    assert _state(picked) == _state(whole)
    assert cut_points > 100
    assert picks > len(ALL_EVENTS) / 2


def _dumps() -> list[tuple[str, bytes]]:
    """uuid_dump json answers: the real switch's (s5), and every channel event of the captures
    (with its Kazoo twin) as the dump of its channel at that moment (the same headers, named
    CHANNEL_DATA, as FreeSWITCH names its dumps)."""
    outputs = sorted((CAPTURES / "json" / "outputs").glob("*uuid_dump*"))
    found = [(p.name, p.read_bytes()) for p in outputs]
    assert len(found) == 2
    found += [
        (scenario, orjson.dumps({**event, "Event-Name": "CHANNEL_DATA"}))
        for scenario, event in ALL_EVENTS
        if "Unique-ID" in event and "variable_uuid" in event
    ]
    return found


@pytest.mark.parametrize("identity", ["default", "custom"])
def test_a_table_hydrated_from_picked_dumps_equals_one_hydrated_from_whole_dumps(
    identity: str,
) -> None:
    """A reconcile's uuid_dump answers are picked as events are (channelsd/node.py): the
    table they hydrate is the one whole answers hydrate, dump after dump."""

    def table() -> ChannelTable:
        chains = {"owner_id": ["variable_sip_from_user", "Caller-Caller-ID-Number"]}
        return ChannelTable(Identity(chains) if identity == "custom" else None, clock=lambda: 1.0)

    whole, picked = table(), table()
    parse = eventpick.parser_for(picked)
    picks = 0
    dumps = _dumps()
    for i, (scenario, body) in enumerate(dumps):
        full = parse_json(body)
        fed = parse(body)
        assert fed == wanted(full, picked) or fed == full  # or left to orjson
        picks += fed != full
        assert (whole.hydrate("fs1", full) is None) == (picked.hydrate("fs1", fed) is None)
        if i % 53 == 0:
            assert _state(picked) == _state(whole), (scenario, i)
    assert _state(picked) == _state(whole)
    assert len(whole.all()) > 100
    assert picks > len(dumps) / 2


# -- over the event socket ---------------------------------------------------------------------


def counting_picks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make every picker the daemon builds note what it picked (None: left to orjson)."""
    found: list[Any] = []

    class Counting:
        def __init__(self, names: Any, prefix: str) -> None:
            self._picker = Picker(names, prefix)

        def pick(self, body: bytes) -> Any:
            picked = self._picker.pick(body)
            found.append(picked)
            return picked

        def cut(self, *args: Any) -> Any:  # the events connection's json events in a row
            cut = self._picker.cut(*args)
            found.extend(cut[0])
            return cut

    monkeypatch.setattr(eventpick, "Picker", Counting)
    return found


def test_the_events_connection_picks(
    monkeypatch: pytest.MonkeyPatch, switch: Any, make_daemon: Any
) -> None:
    found = counting_picks(monkeypatch)
    daemon = make_daemon([switch])
    account = {"ecallmgr_Account-ID": "acc1", "ecallmgr_Owner-ID": "u1"}
    # a caller name FreeSWITCH writes with a quote escaped, one with UTF-8: the first is
    # picked, the second left to orjson
    plain = switch.bridged_call(account, account, caller=('Al "the pal"', "1001"))
    utf8 = switch.bridged_call(account, account, caller=("Zo\u00eb \u2603", "1003"))
    wait_until(lambda: len(daemon.api.data("/v2/accounts/acc1/channels")) == 4, 5, "listed")
    names = {c["uuid"]: c for c in daemon.api.data("/v2/accounts/acc1/channels")}
    assert names[plain[0]]["caller_id_name"] == 'Al "the pal"'
    assert names[utf8[0]]["caller_id_name"] == "Zo\u00eb \u2603"
    assert names[plain[0]]["owner_id"] == "u1"
    picks = [f is not None for f in found]
    assert True in picks and False in picks


def test_a_reconcile_picks_the_dumps_it_hydrates_from(
    monkeypatch: pytest.MonkeyPatch, switch: Any, make_daemon: Any
) -> None:
    """Calls up before channelsd starts are learnt from `uuid_dump <uuid> json` over a real
    socket: those answers go through the picker, and the rows have their Kazoo identity."""
    found = counting_picks(monkeypatch)
    account = {"ecallmgr_Account-ID": "acc1", "ecallmgr_Owner-ID": "u1"}
    legs = [switch.bridged_call(account, account) for _ in range(3)]
    daemon = make_daemon([switch])
    wait_until(lambda: len(daemon.api.data("/v2/accounts/acc1/channels")) == 6, 5, "listed")
    rows = {c["uuid"]: c for c in daemon.api.data("/v2/accounts/acc1/channels")}
    assert set(rows) == {u for pair in legs for u in pair}
    assert {c["owner_id"] for c in rows.values()} == {"u1"}
    assert [f and f.get("Event-Name") for f in found].count("CHANNEL_DATA") >= 6


# -- where it was not built --------------------------------------------------------------------


def test_without_the_picker_events_are_parsed_whole_and_check_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from channelsd import cli

    monkeypatch.setattr(eventpick, "Picker", None)
    parse = eventpick.parser_for(ChannelTable())
    for _, body in JSON_BODIES[:300]:
        assert parse(body) == parse_json(body)
    path = tmp_path / "c.toml"
    path.write_text(
        '[[nodes]]\nname = "fs1"\nhost = "127.0.0.1"\npassword = "x"\n'
        f'[[tokens]]\nsha256 = "{"0" * 64}"\naccount_id = "a"\nrole = "admin"\n'
    )
    assert cli.main(["check", "-c", str(path)]) == 0
    err = capsys.readouterr().err
    assert "channelsd_picker (C) is not installed" in err and len(err.splitlines()) == 1
    monkeypatch.undo()
    assert cli.main(["check", "-c", str(path)]) == 0
    assert capsys.readouterr().err == ""
