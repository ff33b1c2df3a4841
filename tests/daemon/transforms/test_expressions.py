"""Compiled expressions give exactly what jmespath.search gives, on generated expressions and documents."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.transforms.expressions import compile_expression
from tests.daemon.transforms.tweets import tweet

FIELDS = st.sampled_from(["a", "b", "data", "lang", "n"])
SCALARS = st.none() | st.booleans() | st.integers(-2, 2) | st.floats(-2, 2, allow_nan=False) | st.sampled_from(["", "en", "ja"])
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(FIELDS, inner, max_size=4),
    max_leaves=12,
)
LITERALS = st.sampled_from(["`0`", "`1`", "`true`", "`false`", "`null`", "'en'", "''", "`[]`", "`{}`", "`1.5`"])
PATHS = st.lists(FIELDS, min_size=1, max_size=3).map(".".join)
OPERATORS = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
ATOMS = PATHS | LITERALS | st.sampled_from(["@", "length(a)", "a[0]", "a[*].b", "a[?b == `1`]", "to_string(n)"])


def _expressions() -> st.SearchStrategy[str]:
    comparison = st.builds(lambda a, op, b: f"{a} {op} {b}", ATOMS, OPERATORS, ATOMS)
    return st.recursive(
        ATOMS | comparison,
        lambda inner: (
            st.builds(lambda a, b: f"({a}) && ({b})", inner, inner)
            | st.builds(lambda a, b: f"({a}) || ({b})", inner, inner)
            | st.builds(lambda a: f"!({a})", inner)
            | st.builds(lambda a, b: f"({a}) | ({b})", inner, PATHS)
        ),
        max_leaves=6,
    )


def _outcome(run: Any) -> tuple[str, Any]:
    try:
        return "value", run()
    except Exception as exc:  # noqa: BLE001 - the comparison is of outcomes, errors included
        return "error", type(exc).__name__


@given(_expressions(), DOCS)
def test_compiled_expressions_agree_with_jmespath(expression: str, document: Any) -> None:
    """For any generated expression and document: the same value, or the same kind of error, as jmespath.search."""
    try:
        compiled = compile_expression(expression)
    except jmespath.exceptions.ParseError:
        return
    expected = _outcome(lambda: jmespath.search(expression, document))
    got = _outcome(lambda: compiled(document))
    assert got == expected
    if got[0] == "value":
        assert type(got[1]) is type(expected[1])


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("data.lang == 'ja'", True),
        ("data.public_metrics.like_count > `10`", True),
        ("data.public_metrics.quote_count == `false`", False),  # 0 is not false in JMESPath
        ("!(data.public_metrics.quote_count)", False),  # and !0 is false
        ("data.lang < `[1]`", None),  # ordering anything but numbers and strings: null
        ("data.missing.deeper", None),
        ("contains(matching_rules[].tag, 'releases') && data.lang", "ja"),
    ],
)
def test_filters_on_a_tweet(expression: str, expected: Any) -> None:
    """The usual filter shapes on an X v2 tweet, with JMESPath's own edge rules."""
    assert compile_expression(expression)(tweet()) == expected
    assert jmespath.search(expression, tweet()) == expected
