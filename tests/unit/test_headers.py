"""The header name rules and the pattern the OpenAPI document states for them agree."""

from __future__ import annotations

import re

import pytest

from tests.support.headers import ALLOWED_NAMES, REFUSED_NAMES
from webhooks import headers


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_it_refuses_names_the_service_owns_or_that_break_a_request(name):
    assert headers.name_problem(name) is not None
    assert not re.search(headers.NAME_PATTERN, name)


@pytest.mark.parametrize("name", ALLOWED_NAMES)
def test_it_allows_any_other_token(name):
    assert headers.name_problem(name) is None
    assert re.search(headers.NAME_PATTERN, name)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("cookie", True),
        ("X-Api-Key", True),
        ("X-Access-Token", True),
        ("Client-Secret", True),
        ("x-password", True),
        ("X-Auth-User", True),
        ("X-Tenant", False),
        ("Accept-Language", False),
    ],
)
def test_values_under_credential_names_are_write_only(name, secret):
    assert headers.is_secret(name) is secret
    assert headers.shown({name: "v"}) == {name: None if secret else "v"}


@pytest.mark.parametrize(("value", "ok"), [("", True), (" ~", True), ("a" * 1000, True), ("a" * 1001, False)])
def test_values_are_printable_ascii_up_to_a_thousand_characters(value, ok):
    assert (headers.value_problem("x", value) is None) is ok


@pytest.mark.parametrize("value", ["a\nb", "tab\there", "caf\xe9", "\x7f"])
def test_values_with_anything_else_are_refused_and_the_pattern_says_so(value):
    assert headers.value_problem("x", value) is not None
    assert not re.fullmatch(headers.VALUE_PATTERN.strip("^$"), value)
