"""`show channels as json` read one row at a time (channelsd.showchannels).

Issue #17: a listing parsed whole held every row's objects at once (~14x the answer's size),
and the arenas they took stayed with the daemon after the reconcile. These tests hold the
reader to the switch's real answers, to a reference parser on generated listings, to an error
(never a wrong set, never another exception) on broken ones, to a peak near the answer's own
size, and to visiting the hub between rows.
"""

from __future__ import annotations

import json
import tracemalloc
import uuid as uuidlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd import turns
from channelsd.showchannels import ListingError, listed_uuids

from conftest import count_pauses

CAPTURES = Path(__file__).parent / "fixtures" / "captures" / "json"


def _reference(body: bytes) -> set[str]:
    rows = orjson.loads(body.decode("utf-8", "replace")).get("rows", [])
    return {r["uuid"] for r in rows if isinstance(r, dict) and isinstance(r.get("uuid"), str)}


def _captured_listings() -> list[bytes]:
    found = []
    for path in sorted(CAPTURES.glob("*.steps.jsonl")):
        for line in path.read_text().splitlines():
            step = json.loads(line)
            if step.get("kind") == "api" and step.get("what") == "show channels as json":
                found.append(step["result"].encode())
    return found


def test_the_switchs_own_listings_read_as_the_whole_parse_reads_them() -> None:
    listings = _captured_listings()
    assert len(listings) >= 5
    nonempty = 0
    for body in listings:
        assert listed_uuids(body) == _reference(body)
        nonempty += bool(_reference(body))
    assert nonempty >= 3


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_value = st.one_of(_text, st.integers(), st.none(), st.booleans(), st.lists(_text, max_size=2))
_row = st.one_of(
    st.fixed_dictionaries(
        {"uuid": st.one_of(st.uuids().map(str), _text, st.integers())},
        optional={"name": _text, "state": _text},
    ).flatmap(lambda r: st.dictionaries(_text, _value, max_size=3).map(lambda x: {**x, **r})),
    _value,
)


@st.composite
def _listing(draw: st.DrawFn) -> bytes:
    members = draw(st.dictionaries(_text.filter(lambda k: k != "rows"), _value, max_size=3))
    if draw(st.booleans()):
        members["rows"] = draw(st.lists(_row, max_size=8))
    order = draw(st.permutations(list(members)))
    pretty = draw(st.booleans())
    return json.dumps({k: members[k] for k in order}, indent=1 if pretty else None).encode()


@settings(max_examples=300, deadline=None)
@given(_listing())
def test_any_listing_reads_as_the_reference_parser_reads_it(body: bytes) -> None:
    assert listed_uuids(body) == _reference(body)


@settings(max_examples=300, deadline=None)
@given(_listing(), st.data())
def test_a_cut_or_spoiled_listing_is_an_error_never_a_smaller_set(body: bytes, data) -> None:
    cut = data.draw(st.integers(1, len(body) - 1))
    spoiled = body[:cut]
    if data.draw(st.booleans()):
        spoiled += data.draw(st.sampled_from([b",", b"]", b"}", b"x", b"{", b'"']))
    try:
        expected: set[str] | None = _reference(spoiled)
    except (orjson.JSONDecodeError, AttributeError):
        expected = None
    if expected is None:
        with pytest.raises(ListingError):
            listed_uuids(spoiled)
    else:  # a cut that is itself a listing (a whole object with trailing bytes removed)
        assert listed_uuids(spoiled) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"-ERR no reply\n",
        b"",
        b"[]",
        b'{"rows": {}}',
        b'{"rows": [], "rows": []}',
        b'{"rows": []} {"rows": []}',
        b'{"rows": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}",
    ],
)
def test_what_is_not_a_listing_is_an_error(body: bytes) -> None:
    with pytest.raises(ListingError):
        listed_uuids(body)


def _big_listing(rows: int) -> tuple[bytes, set[str]]:
    uuids = [str(uuidlib.uuid4()) for _ in range(rows)]
    cols = ["direction", "created", "name", "state", "cid_name", "cid_num", "dest", "context"]
    body = orjson.dumps(
        {
            "row_count": rows,
            "rows": [{"uuid": u, **{c: f"{c}-{i}" for c in cols * 4}} for i, u in enumerate(uuids)],
        }
    )
    return body, set(uuids)


def test_the_peak_is_near_the_answers_size_not_every_row_at_once() -> None:
    body, uuids = _big_listing(2_000)
    tracemalloc.start()
    try:
        assert listed_uuids(body) == uuids
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert _reference(body) == uuids
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The text (one copy of the answer) and the uuids; the whole parse holds every row.
    assert read_peak < 2 * len(body) < whole_peak


def test_the_hub_is_visited_between_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    body, uuids = _big_listing(300)
    monkeypatch.setattr(turns, "TURN", 0.0)
    visits = count_pauses(monkeypatch, turns, "pause")
    assert listed_uuids(body) == uuids
    assert len(visits) >= 300
