"""Opaque, prefixed identifiers (`sub_…`, `dlv_…`): random, never sequential, safe in a URL."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str) -> str:
    # 22 base62 characters carry about 131 bits: unguessable, and no collision in practice.
    return f"{prefix}_{random_token(22)}"
