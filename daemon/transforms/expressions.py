"""JMESPath expressions compiled to Python closures for the node kinds filters use most, so a typical filter
costs well under a microsecond instead of jmespath's tree walk (about 4 µs a record, 40 % of the record path).

jmespath parses the expression (its grammar, its errors); only evaluation is done here, for fields,
sub-expressions, pipes, literals, comparisons, `&&`, `||`, `!` and `@`, following jmespath's own interpreter
(jmespath/visitor.py `TreeInterpreter`) rule by rule: a field of a non-object is null; `==` never equates a
boolean with 0 or 1; ordering compares numbers and strings only, anything else is null; `&&`/`||` use JMESPath's
truth. Every other node (functions, projections, filters, slices, multi-selects) is handed to jmespath's own
interpreter for that subtree, so the result is always what `jmespath.search` gives (tests/daemon/transforms/
test_expressions.py checks it on generated expressions and documents).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from numbers import Number
from typing import Any

import jmespath
from jmespath.visitor import TreeInterpreter

Evaluate = Callable[[Any], Any]

_ORDERING: dict[str, Callable[[Any, Any], Any]] = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}


def compile_expression(text: str) -> Evaluate:
    """`text` (a valid JMESPath expression; raises jmespath's ParseError otherwise) as a function of a document."""
    return _compile(jmespath.compile(text).parsed, TreeInterpreter())


def _number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is float:  # what JSON gives: no trip through the Number ABC's isinstance (slow)
        return True
    return kind is not bool and isinstance(value, Number)


def _false(value: Any) -> bool:
    """JMESPath's falsehood (TreeInterpreter._is_false)."""
    return value is None or value is False or value == "" or value == [] or value == {}


def _equals(x: Any, y: Any) -> bool:
    # As jmespath's _equals: Python says True == 1 and False == 0; JMESPath keeps booleans and numbers apart.
    if _number(x) and x in (0, 1):
        return not isinstance(y, bool) and x == y
    if _number(y) and y in (0, 1):
        return not isinstance(x, bool) and x == y
    return bool(x == y)


def _comparable(value: Any) -> bool:
    return type(value) is str or _number(value) or isinstance(value, str)


def _compile(node: dict[str, Any], interpreter: TreeInterpreter) -> Evaluate:
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        name = node["value"]

        def field(value: Any) -> Any:
            return value.get(name) if isinstance(value, dict) else None

        return field
    if kind in ("subexpression", "pipe"):
        return _chain([_compile(child, interpreter) for child in children])
    if kind == "literal":
        constant = node["value"]
        return lambda value: constant
    if kind in ("current", "identity"):
        return lambda value: value
    if kind == "comparator":
        return _comparator(node["value"], _compile(children[0], interpreter), _compile(children[1], interpreter))
    if kind == "and_expression":
        left, right = _compile(children[0], interpreter), _compile(children[1], interpreter)

        def both(value: Any) -> Any:
            matched = left(value)
            return matched if _false(matched) else right(value)

        return both
    if kind == "or_expression":
        left, right = _compile(children[0], interpreter), _compile(children[1], interpreter)

        def either(value: Any) -> Any:
            matched = left(value)
            return right(value) if _false(matched) else matched

        return either
    if kind == "not_expression":
        inner = _compile(children[0], interpreter)

        def negated(value: Any) -> Any:
            result = inner(value)
            if _number(result) and result == 0:
                return False  # JMESPath: 0 is true, so !0 is false
            return not result

        return negated
    visit = interpreter.visit
    return lambda value: visit(node, value)


def _chain(steps: list[Evaluate]) -> Evaluate:
    if len(steps) == 2:  # `a.b`, the usual shape: no loop
        first, second = steps

        def pair(value: Any) -> Any:
            return second(first(value))

        return pair

    def chained(value: Any) -> Any:
        for step in steps:
            value = step(value)
        return value

    return chained


def _comparator(op: str, left: Evaluate, right: Evaluate) -> Evaluate:
    if op == "eq":
        return lambda value: _equals(left(value), right(value))
    if op == "ne":
        return lambda value: not _equals(left(value), right(value))
    compare = _ORDERING[op]

    def ordered(value: Any) -> Any:
        a, b = left(value), right(value)
        if not (_comparable(a) and _comparable(b)):
            return None
        return compare(a, b)

    return ordered
