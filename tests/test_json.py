"""The compact JSON encoders equal json.dumps, on the C path (CPython's private encoder) and the
Python path; if CPython changes its private encoder, these fail."""

from __future__ import annotations

import json
import math
import platform

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataformer_nb import _json

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(value=values)
def test_both_encoders_equal_json_dumps(value: object) -> None:
    for sort_keys in (True, False):
        expected = json.dumps(value, sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False)
        for use_c in (True, False):
            assert _json.encoder(sort_keys, use_c)(value) == expected


@pytest.mark.parametrize("use_c", [True, False])
@pytest.mark.parametrize("bad", [math.nan, math.inf, {"a": [1, -math.inf]}, {"x": object()}, {1j}])
def test_nan_infinity_and_unknown_types_are_refused(use_c: bool, bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        _json.encoder(True, use_c)(bad)


def test_cpython_has_the_c_encoder_the_fast_path_uses() -> None:
    if platform.python_implementation() == "CPython":
        assert _json.c_make_encoder is not None
    assert _json.dumps({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'
    assert _json.dumps_sorted({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
