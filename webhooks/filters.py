"""Payload filters: which events a subscription wants, by their content (Hookdeck Outpost's operator syntax).

A filter is a JSON object matched against the envelope `{"type": …, "data": {…}}`. Every entry of an object
must hold: a key that does not start with `$` walks into the value under that key; a `$` key is an operator on
the value where the walk stands. A plain (non-object) value means equality. Pure: no Django, no database, so the
API's filter-test and the publish fan-out run exactly this code.
"""

from __future__ import annotations

import json
from typing import Any

MAX_FILTER_BYTES = 4096
MAX_FILTER_DEPTH = 10

COMPARISONS = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = (
    "$eq",
    "$neq",
    *COMPARISONS,
    "$in",
    "$nin",
    "$exist",
    "$startsWith",
    "$endsWith",
    "$and",
    "$or",
    "$not",
)


class _Missing:
    """Where the walk reaches a key the payload does not have: nothing equals it, only `$exist` sees it."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FilterError(ValueError):
    """A filter that cannot be used; `errors` lists each problem as {"pointer", "message"}."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['pointer']}: {e['message']}" for e in errors))
        self.errors = errors


def _pointer(path: tuple[str, ...]) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)


def _depth(value: Any) -> int:
    """Levels of objects and arrays ({} is one), with an explicit stack."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_FILTER_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


def validate_filter(value: Any) -> dict:
    """The filter itself if it can be used, else FilterError naming each problem by its JSON Pointer."""
    if not isinstance(value, dict):
        raise FilterError([{"pointer": "", "message": "Must be a JSON object (or null for no filter)."}])
    if _depth(value) > MAX_FILTER_DEPTH:
        raise FilterError([{"pointer": "", "message": f"Must not be nested more than {MAX_FILTER_DEPTH} levels."}])
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_FILTER_BYTES:
        raise FilterError([{"pointer": "", "message": f"Must be at most {MAX_FILTER_BYTES} bytes as JSON."}])
    errors: list[dict[str, str]] = []
    _check_node(value, (), errors)
    if errors:
        raise FilterError(errors)
    return value


def _check_node(node: dict, path: tuple[str, ...], errors: list[dict[str, str]]) -> None:
    for key, operand in node.items():
        here = (*path, key)
        if not key.startswith("$"):
            if isinstance(operand, dict):
                _check_node(operand, here, errors)
            continue
        problem = _operand_problem(key, operand)
        if problem:
            errors.append({"pointer": _pointer(here), "message": problem})
        elif key in ("$and", "$or"):
            for index, item in enumerate(operand):
                _check_node(item, (*here, str(index)), errors)
        elif key == "$not":
            _check_node(operand, here, errors)


def _operand_problem(operator: str, operand: Any) -> str | None:
    if operator not in OPERATORS:
        return f"Unknown operator {operator}; use one of {', '.join(OPERATORS)}."
    if operator in COMPARISONS and not _is_number_or_string(operand):
        return f"{operator} takes a number or a string."
    if operator in ("$in", "$nin") and not (
        isinstance(operand, list) and not any(isinstance(item, dict | list) for item in operand)
    ):
        return f"{operator} takes an array of strings, numbers, booleans or nulls."
    if operator == "$exist" and not isinstance(operand, bool):
        return "$exist takes true or false."
    if operator in ("$startsWith", "$endsWith") and not isinstance(operand, str):
        return f"{operator} takes a string."
    if operator in ("$and", "$or") and not (isinstance(operand, list) and all(isinstance(i, dict) for i in operand)):
        return f"{operator} takes an array of filter objects."
    if operator == "$not" and not isinstance(operand, dict):
        return "$not takes a filter object."
    return None


def _is_number_or_string(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, objects compare by members, arrays in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    if _is_number_or_string(a) and _is_number_or_string(b) and isinstance(a, str) != isinstance(b, str):
        return False
    return a == b


def matches(filter_: dict | None, envelope: dict) -> bool:
    """Whether the envelope passes the filter (a validated one); no filter passes everything."""
    return filter_ is None or _matches_node(filter_, envelope)


def _matches_node(node: dict, value: Any) -> bool:
    for key, operand in node.items():
        if key.startswith("$"):
            if not _apply(key, operand, value):
                return False
            continue
        child = value.get(key, MISSING) if isinstance(value, dict) else MISSING
        if isinstance(operand, dict):
            if not _matches_node(operand, child) and not _some_element(operand, child):
                return False
        elif child is MISSING or not (
            _equal(child, operand)
            or (isinstance(child, list) and not isinstance(operand, list) and any(_equal(i, operand) for i in child))
        ):
            return False
    return True


def _some_element(operand: dict, value: Any) -> bool:
    """An array matches a plain value it contains, and a nested filter one of its objects matches
    (`{"items": {"sku": "A"}}` for `"items": [{"sku": "A"}, …]`), as Hookdeck's and Convoy's do. An
    operator applies to the array as a whole (`$neq`, `$nin` and `$not` mean what they say of it)."""
    if not isinstance(value, list) or any(key.startswith("$") for key in operand):
        return False
    return any(isinstance(item, dict) and _matches_node(operand, item) for item in value)


def _apply(operator: str, operand: Any, value: Any) -> bool:
    if operator == "$eq":
        return value is not MISSING and _equal(value, operand)
    if operator == "$neq":
        return value is MISSING or not _equal(value, operand)
    if operator in COMPARISONS:
        if not _is_number_or_string(value) or isinstance(value, str) != isinstance(operand, str):
            return False
        if operator == "$gt":
            return value > operand
        if operator == "$gte":
            return value >= operand
        if operator == "$lt":
            return value < operand
        return value <= operand
    if operator == "$in":
        return value is not MISSING and any(_equal(value, item) for item in operand)
    if operator == "$nin":
        return value is MISSING or not any(_equal(value, item) for item in operand)
    if operator == "$exist":
        return (value is not MISSING) is operand
    if operator == "$startsWith":
        return isinstance(value, str) and value.startswith(operand)
    if operator == "$endsWith":
        return isinstance(value, str) and value.endswith(operand)
    if operator == "$and":
        return all(_matches_node(item, value) for item in operand)
    if operator == "$or":
        return any(_matches_node(item, value) for item in operand)
    if operator == "$not":
        return not _matches_node(operand, value)
    raise ValueError(f"Unknown operator {operator}")  # validate_filter refuses it first
