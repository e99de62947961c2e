"""A list's forms: JSON the same as the items' own serialisation and kept no longer than
true; CSV that keeps numbers and guards formulas."""

import csv
import io
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from test_table import CREATED_US, A, B, ev, with_vars

from channelsd.listing import ListCache, json_array, list_json, to_csv
from channelsd.table import ChannelTable

NOW = CREATED_US // 1_000_000 + 30.25  # a quarter into the 30th whole second


def table_of_two() -> ChannelTable:
    t = ChannelTable()
    t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=A, account_id="acc1", ecallmgr_Tag="x"))
    t.apply("fs1", with_vars("CHANNEL_CREATE", uuid=B, account_id="acc1"))
    return t


def test_spliced_list_is_the_items_as_json() -> None:
    t = table_of_two()
    t.mark_stale("fs1")
    spliced = orjson.loads(list_json(t, t.by_account("acc1"), NOW))
    built = [ch.to_item(NOW, t.is_stale(ch)) for ch in t.by_account("acc1")]
    assert spliced == built and len(built) == 2
    assert all(item["stale"] is True and item["elapsed_s"] == 30 for item in spliced)
    assert spliced[0]["custom_channel_vars"] == {"Tag": "x"}


def test_cache_serves_a_second_only_while_nothing_changed() -> None:
    t = table_of_two()
    cache = ListCache()
    scope = t.account_scope("acc1")

    def items(now: float) -> list[dict[str, Any]]:
        return orjson.loads(cache.json(t, scope, now))

    first = cache.json(t, scope, NOW)
    assert cache.json(t, scope, NOW + 0.5) is first  # same second, same list: kept

    t.apply("fs1", ev("CHANNEL_ANSWER", A))
    assert items(NOW + 0.5)[0]["answered"] is True  # a change is seen at once

    assert items(NOW + 1)[0]["elapsed_s"] == 31  # a new second is computed anew

    t.apply("fs1", ev("CHANNEL_DESTROY", B))
    assert [i["uuid"] for i in items(NOW + 1)] == [A]

    filtered = [t.get(A)]  # a plain list (a user's, a filtered one) is built each time
    assert cache.json(t, filtered, NOW + 1) is not cache.json(t, filtered, NOW + 1)


def test_list_json_is_kept_for_the_most_recently_listed_channels_only() -> None:
    t = table_of_two()
    t.json_cache_max = 1
    a, b = t.get(A), t.get(B)
    first = list_json(t, [a, b], NOW)
    assert (a.cached is None) != (b.cached is None)  # one of the two kept, not both
    assert list_json(t, [a, b], NOW) == first  # rebuilt where dropped: the same answer
    t.apply("fs1", ev("CHANNEL_ANSWER", A))
    assert orjson.loads(list_json(t, [a, b], NOW))[0]["answered"] is True


# -- CSV: numbers read back as they were, formulas guarded ------------------------------------


def read_back(items: list[dict[str, Any]]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(to_csv(items))))


numbers = st.one_of(
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
    st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),  # E.164
    st.from_regex(r"-?[0-9]{1,6}\.[0-9]{1,4}", fullmatch=True),
    st.integers(min_value=-(10**6), max_value=10**6),  # JSON numbers too
)


@given(value=numbers)
@settings(max_examples=300, derandomize=True)
def test_numbers_are_never_changed(value: Any) -> None:
    row = read_back([{"caller_id_number": value}])[0]
    assert row["caller_id_number"] == str(value)


@given(
    start=st.sampled_from(["=", "+", "-", "@", "\t", "\r"]),
    rest=st.text(min_size=1, max_size=30).filter(
        lambda t: not t.replace(".", "", 1).isdigit() and "\x00" not in t
    ),
)
@settings(max_examples=300, derandomize=True)
def test_cells_a_spreadsheet_would_run_are_guarded(start: str, rest: str) -> None:
    text = start + rest
    row = read_back([{"caller_id_name": text, "nested": {"list": [text]}}])[0]
    assert row["caller_id_name"] == "'" + text
    assert row["nested.list"] == "'" + text


def test_known_formulas_and_numbers_side_by_side() -> None:
    items = [
        {"n": "+15552084410", "f": '=HYPERLINK("http://x","y")'},
        {"n": "-3", "f": "+1+1"},
        {"n": "12.5", "f": "-2+3"},
        {"n": 42, "f": "@SUM(A1)"},
    ]
    rows = read_back(items)
    assert [r["n"] for r in rows] == ["+15552084410", "-3", "12.5", "42"]
    assert all(r["f"].startswith("'") for r in rows)


# -- JSON built in paced slices: byte for byte what one orjson call gives ---------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    items=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=40),
    slice_size=st.integers(1, 7),
)
@settings(max_examples=200, derandomize=True)
def test_sliced_json_is_the_whole_json(items: list[dict[str, Any]], slice_size: int) -> None:
    from channelsd import envelope, listing

    saved = listing.DUMP_SLICE
    listing.DUMP_SLICE = slice_size  # many slices, so that every seam is crossed
    try:
        for pretty in (False, True):
            option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if pretty else 0)
            assert json_array(items, pretty) == orjson.dumps(items, option=option)
        # the pretty envelope around a nested array reads as success(..., pretty=True)
        whole = orjson.dumps(
            {"data": items, **envelope._success_rest("rid", "tok")},
            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2,
        )
        parts = envelope.pretty_parts(json_array(items, True, nested=True), "rid", "tok")
        assert b"".join(parts) == whole
    finally:
        listing.DUMP_SLICE = saved


def test_filters_are_bounded_and_split_once() -> None:
    import pytest

    from channelsd.envelope import ApiError
    from channelsd.listing import MAX_FILTERS, Filters

    item = {"a": {"b": "1"}, "c": "x"}
    f = Filters(
        [("filter_a.b", "1"), ("filter_not_c", "y"), ("has_key", "a.b"), ("key_missing", "z")]
    )
    assert f.keep(item) and not Filters([("filter_not_a.b", "1")]).keep(item)
    Filters([("has_key", "c")] * MAX_FILTERS + [("unrelated", "1")] * 1000)  # not filters
    with pytest.raises(ApiError) as refused:
        Filters([("has_key", "c")] * (MAX_FILTERS + 1))
    assert refused.value.status == 400
    assert refused.value.data["filters"]["maxItems"]["target"] == MAX_FILTERS
