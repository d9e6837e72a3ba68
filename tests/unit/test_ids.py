"""tenants.ids: opaque ids, every character drawn evenly from base62."""

from __future__ import annotations

import string
from collections import Counter

from tenants.ids import new_id, random_token

ALPHABET = set(string.ascii_letters + string.digits)


def test_an_id_is_its_prefix_and_22_base62_characters():
    token = new_id("dlv")
    assert token.startswith("dlv_") and len(token) == 26 and set(token[4:]) <= ALPHABET


def test_tokens_of_any_length_are_that_long():
    assert [len(random_token(n)) for n in (0, 1, 22, 64, 300)] == [0, 1, 22, 64, 300]


def test_every_character_comes_up_evenly():
    """124,000 characters: each of the 62 expected 2,000 times (σ ≈ 44). A map that favoured some characters,
    as `byte % 62` over all 256 byte values would (the first 8 at 5/4 the rate), lands far outside."""
    counts = Counter("".join(random_token(62) for _ in range(2000)))
    assert set(counts) == ALPHABET
    assert 1700 < min(counts.values()) and max(counts.values()) < 2300


def test_tokens_do_not_repeat():
    assert len({random_token(22) for _ in range(10000)}) == 10000
