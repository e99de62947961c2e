"""strictjson: a key twice in one object is found at any depth, and nothing else is refused."""

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channelsd.strictjson import DuplicateKey, check_unique_keys, loads

KEYS = st.sampled_from(["a", "b", "\u0061", 'q"', "x:y", "{", "\\", "é", "\u2028"])
LEAF = st.none() | st.booleans() | st.integers() | st.text(max_size=6)


def pairs_text(value: Any) -> str:
    """JSON text of a value whose objects are lists of (key, value) pairs (keys may repeat),
    with random escaping of keys."""
    if isinstance(value, tuple):  # an object: its pairs
        inner = ",".join(
            json.dumps(k, ensure_ascii=len(k) % 2 == 0) + ":" + pairs_text(v) for k, v in value[0]
        )
        return "{" + inner + "}"
    if isinstance(value, list):
        return "[" + ",".join(pairs_text(v) for v in value) + "]"
    return json.dumps(value)


DOC = st.recursive(
    LEAF,
    lambda kids: (
        st.lists(kids, max_size=3) | st.tuples(st.lists(st.tuples(KEYS, kids), max_size=4))
    ),
    max_leaves=12,
)


def reference_has_duplicate(text: str) -> bool:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise DuplicateKey("dup")
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=hook)
    except DuplicateKey:
        return True
    return False


@settings(max_examples=400, deadline=None)
@given(DOC)
def test_the_walk_agrees_with_the_standard_librarys_hook(doc: Any) -> None:
    text = pairs_text(doc)
    orjson.loads(text)  # valid JSON, whatever the keys
    expected = reference_has_duplicate(text)
    if expected:
        with pytest.raises(DuplicateKey):
            check_unique_keys(text)
    else:
        check_unique_keys(text)


def test_deeper_than_python_recursion_is_walked() -> None:
    """orjson takes 1,024 levels; json's hooks stop near 1,000 (the metaflow depth test's
    500-level chain is 1,000 objects deep): the walk has no such limit."""
    deep = '{"a":' * 1000 + '{"b":1,"b":2}' + "}" * 1000
    with pytest.raises(DuplicateKey):
        loads(deep)
    assert loads('{"a":' * 1000 + "1" + "}" * 1000)
