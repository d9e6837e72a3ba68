"""Payload filters (webhooks/filters.py): the grammar, its errors by JSON Pointer, and the evaluator checked
against a small reference evaluator written here from the README's description, on random pairs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhooks.filters import MAX_FILTER_BYTES, FilterError, matches, validate_filter

# --- a reference evaluator, independent of the one under test -------------------------------------------
_ABSENT = object()


def _canon(value):
    """JSON's notion of sameness as a string: 1 and 1.0 alike, true and 1 not, member order irrelevant."""

    def fix(v):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v

    return json.dumps(fix(value), sort_keys=True)


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def reference(node: dict, value) -> bool:
    results = []
    for key, operand in node.items():
        if not key.startswith("$"):
            child = value[key] if isinstance(value, dict) and key in value else _ABSENT
            # An array also matches a plain value it holds, and an operator-free nested filter that
            # one of its objects matches.
            items = child if isinstance(child, list) else []
            if isinstance(operand, dict):
                elements = not any(k.startswith("$") for k in operand) and any(
                    isinstance(item, dict) and reference(operand, item) for item in items
                )
                results.append(reference(operand, child) or elements)
            else:
                held = not isinstance(operand, list) and _canon(operand) in {_canon(item) for item in items}
                results.append(child is not _ABSENT and (_canon(child) == _canon(operand) or held))
            continue
        results.append(_reference_operator(key, operand, value))
    return all(results)


def _reference_operator(key: str, operand, value) -> bool:
    present = value is not _ABSENT
    if key in ("$eq", "$neq"):
        same = present and _canon(value) == _canon(operand)
        return same if key == "$eq" else not same
    if key in ("$in", "$nin"):
        inside = present and _canon(value) in {_canon(x) for x in operand}
        return inside if key == "$in" else not inside
    if key in ("$gt", "$gte", "$lt", "$lte"):
        if not (present and _kind(value) == _kind(operand) and _kind(value) in ("number", "str")):
            return False
        return {"$gt": value > operand, "$gte": value >= operand, "$lt": value < operand, "$lte": value <= operand}[key]
    if key == "$exist":
        return present == operand
    if key == "$startsWith":
        return isinstance(value, str) and value[: len(operand)] == operand
    if key == "$endsWith":
        return isinstance(value, str) and (operand == "" or value[-len(operand) :] == operand)
    if key == "$and":
        return all(reference(item, value) for item in operand)
    if key == "$or":
        return any(reference(item, value) for item in operand)
    assert key == "$not"
    return not reference(operand, value)


# --- random payloads and filters over a small vocabulary, so they often meet -----------------------------
KEYS = st.sampled_from(["a", "b"])
STRINGS = st.sampled_from(["", "x", "xy"])
NUMBERS = st.sampled_from([1, 1.0, 2.5])
SCALARS = st.sampled_from([None, True, False, 0, 1, 1.0, 2.5, "x", "xy"])
PAYLOADS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=5,
)


def _filters(depth: int) -> st.SearchStrategy:
    operand = st.one_of(
        st.tuples(st.sampled_from(["$eq", "$neq"]), PAYLOADS),
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), st.one_of(NUMBERS, STRINGS)),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(SCALARS, max_size=3)),
        st.tuples(st.just("$exist"), st.booleans()),
        st.tuples(st.sampled_from(["$startsWith", "$endsWith"]), STRINGS),
    )
    entries = [st.tuples(KEYS, operand.map(lambda pair: dict([pair]))), st.tuples(KEYS, SCALARS), operand]
    if depth > 0:
        sub = _filters(depth - 1)
        entries += [
            st.tuples(KEYS, sub),
            st.tuples(st.sampled_from(["$and", "$or"]), st.lists(sub, max_size=2)),
            st.tuples(st.just("$not"), sub),
        ]
    return st.lists(st.one_of(*entries), max_size=3).map(dict)


# Flat ones too: one condition on one key of a payload of scalars meets the interesting cases (1 against
# true, "xy" against "x", 1 against 1.0 at the bound) far more often than deep random ones do.
FLAT_OPERAND = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$neq", "$in", "$nin"]), SCALARS).map(
        lambda pair: {pair[0]: [pair[1]] if pair[0] in ("$in", "$nin") else pair[1]}
    ),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), st.one_of(NUMBERS, STRINGS)).map(lambda p: dict([p])),
    st.tuples(st.sampled_from(["$startsWith", "$endsWith"]), STRINGS).map(lambda p: dict([p])),
    st.booleans().map(lambda b: {"$exist": b}),
    SCALARS,
)
FILTERS = st.one_of(_filters(2), st.dictionaries(KEYS, FLAT_OPERAND, min_size=1, max_size=2))
DATA = st.one_of(st.dictionaries(KEYS, SCALARS, max_size=2), st.dictionaries(KEYS, PAYLOADS, max_size=2))


@settings(max_examples=2500, deadline=None)
@given(FILTERS, DATA)
def test_it_agrees_with_the_reference_evaluator(filter_, data):
    validate_filter(filter_)
    envelope = {"type": "invoice.paid", "data": data}
    wrapped = {"data": filter_}  # the filter sees the envelope, so walk into data first
    assert matches(wrapped, envelope) is reference(wrapped, envelope)
    assert matches(filter_, data) is reference(filter_, data)


def test_the_random_pairs_reach_both_answers():
    outcomes = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(FILTERS, DATA)
    def collect(filter_, data):
        outcomes.add(matches(filter_, data))

    collect()
    assert outcomes == {True, False}


ENVELOPE = {
    "type": "invoice.paid",
    "data": {
        "amount": 1500,
        "currency": "EUR",
        "customer": {"id": "cus_1"},
        "one": 1,
        "flag": False,
        "tags": ["gift", "vip"],
        "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}],
    },
}


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"type": "invoice.paid"}, True),
        ({"type": "invoice.voided"}, False),
        ({"data": {"amount": {"$gte": 1000}}}, True),
        ({"data": {"amount": {"$gt": 1500}}}, False),
        ({"data": {"amount": {"$gt": "1000"}}}, False),  # a string never orders against a number
        ({"data": {"currency": {"$in": ["EUR", "USD"]}}}, True),
        ({"data": {"currency": {"$nin": ["EUR"]}}}, False),
        ({"data": {"customer": {"id": {"$startsWith": "cus_"}}}}, True),
        ({"data": {"customer": {"id": {"$endsWith": "_2"}}}}, False),
        ({"data": {"refund": {"$exist": False}}}, True),
        ({"data": {"refund": {"$exist": True}}}, False),
        ({"data": {"refund": {"$neq": 1}}}, True),
        ({"data": {"refund": 1}}, False),
        ({"$or": [{"type": "x.y"}, {"data": {"amount": 1500}}]}, True),
        ({"$and": [{"type": "invoice.paid"}, {"data": {"amount": 1}}]}, False),
        ({"$not": {"type": "invoice.paid"}}, False),
        ({"data": {"one": True}}, False),  # true is not 1
        ({"data": {"flag": 0}}, False),  # nor false 0
        ({"data": {"flag": {"$in": [0, False]}}}, True),
        ({"data": {"amount": 1500.0}}, True),  # 1500.0 is 1500
        ({"data": {"customer": {"id": "cus_1"}}}, True),
        ({"data": {"customer": {"$eq": {"id": "cus_1"}}}}, True),
        ({"data": {"tags": "gift"}}, True),  # an array matches a value it holds
        ({"data": {"tags": "gifts"}}, False),
        ({"data": {"tags": ["gift", "vip"]}}, True),  # and itself
        ({"data": {"tags": ["gift"]}}, False),
        ({"data": {"items": {"sku": "B"}}}, True),  # a nested filter, one of its objects
        ({"data": {"items": {"sku": "B", "qty": 2}}}, False),  # one object must match all of it
        ({"data": {"items": {"qty": {"$gte": 2}}}}, True),
        ({"data": {"tags": {"$neq": "gift"}}}, True),  # an operator takes the array as a whole
        ({"data": {"tags": {"$in": ["gift"]}}}, False),
        ({"data": {"tags": {"$exist": True}}}, True),
        (None, True),
        ({}, True),
    ],
)
def test_it_follows_the_documented_semantics(filter_, expected):
    assert matches(filter_ if filter_ is None else validate_filter(filter_), ENVELOPE) is expected


@pytest.mark.parametrize(
    ("filter_", "pointer", "text"),
    [
        ({"data": {"amount": {"$gtx": 1}}}, "/data/amount/$gtx", "Unknown operator $gtx"),
        ({"data": {"amount": {"$gt": True}}}, "/data/amount/$gt", "number or a string"),
        ({"data": {"amount": {"$gt": [1]}}}, "/data/amount/$gt", "number or a string"),
        ({"data": {"x": {"$in": "EUR"}}}, "/data/x/$in", "array"),
        ({"data": {"x": {"$nin": [{"a": 1}]}}}, "/data/x/$nin", "array of strings, numbers"),
        ({"data": {"x": {"$exist": 1}}}, "/data/x/$exist", "true or false"),
        ({"data": {"x": {"$startsWith": 1}}}, "/data/x/$startsWith", "string"),
        ({"$or": [{"type": "a"}, {"$bad": 1}]}, "/$or/1/$bad", "Unknown operator"),
        ({"$and": {"type": "a"}}, "/$and", "array of filter objects"),
        ({"$not": []}, "/$not", "filter object"),
        ({"data": {"a/b~c": {"$nope": 1}}}, "/data/a~1b~0c/$nope", "Unknown operator"),
        ([], "", "JSON object"),
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}}, "", "10 levels"),
        ({"data": {"x": "y" * MAX_FILTER_BYTES}}, "", "4096 bytes"),
    ],
)
def test_it_names_each_problem_by_its_json_pointer(filter_, pointer, text):
    with pytest.raises(FilterError) as caught:
        validate_filter(filter_)
    assert caught.value.errors[0]["pointer"] == pointer
    assert text in caught.value.errors[0]["message"]


def test_ten_levels_are_allowed():
    deep = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}}
    assert validate_filter(deep) is deep
