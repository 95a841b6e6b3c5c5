"""The nesting bound on raw JSON bytes (gateway/jsondepth.py) against the depth a parser sees."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.jsondepth import too_deep

# Strings full of what the byte-level check must see through: brackets, quotes, backslashes and escapes.
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\/nu0 ab\n\té'), max_size=12)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), tricky_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(tricky_text, inner, max_size=3)),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@settings(max_examples=400)
@given(value=values, limit=st.integers(min_value=0, max_value=6), spelling=st.integers(min_value=0, max_value=2))
def test_too_deep_is_exactly_deeper_than_the_limit(value: Any, limit: int, spelling: int) -> None:
    text = [
        msgspec.json.encode(value),
        json.dumps(value, ensure_ascii=True, indent=1).encode(),
        json.dumps(value, ensure_ascii=False).encode(),
    ][spelling]
    assert msgspec.json.decode(text) == value
    assert too_deep(text, limit) == (depth(value) > limit), text
    assert too_deep(text.decode(), limit) == (depth(value) > limit)


def test_unbalanced_or_unterminated_brackets_count_as_deep() -> None:
    assert too_deep(b"[" * 5, 4)
    assert too_deep(b"]]]][[[[[", 4)
    assert too_deep(b'[[[[["unterminated [', 4)
    assert not too_deep(b'[[[["]]]]]]]"]]]]', 4)
