"""Opaque, prefixed identifiers (`sub_…`, `dlv_…`): random, never sequential, safe in a URL."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
# Bytes below 248 (4 × 62) map onto the alphabet evenly; the rest are dropped, so every character stays
# uniform. One bytes.translate instead of a secrets.choice per character: ids are made on every publish.
_EVEN = 4 * len(_ALPHABET)
_TO_ALPHABET = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) if b < _EVEN else 0 for b in range(256))
_UNEVEN = bytes(range(_EVEN, 256))


def random_token(length: int) -> str:
    token = b""
    while len(token) < length:
        # 8 extra bytes: fewer than `length` of them are kept about once in 10**7 draws.
        token += secrets.token_bytes(length - len(token) + 8).translate(_TO_ALPHABET, _UNEVEN)
    return token[:length].decode()


def new_id(prefix: str) -> str:
    # 22 base62 characters carry about 131 bits: unguessable, and no collision in practice.
    return f"{prefix}_{random_token(22)}"
