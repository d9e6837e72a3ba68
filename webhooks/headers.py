"""A subscription's own request headers: which names it may set, and which values are never shown again.

Every attempt carries them (deliveries.engine.request_for), under the service's own headers. A name
the service sets, or that would change how the request is framed or routed, is refused; a value
under a name that usually carries a credential is write-only: every read shows it as null.
"""

from __future__ import annotations

import re

MAX_HEADERS = 20
MAX_NAME = 64
MAX_VALUE = 1000

# RFC 9110, section 5.6.2: a token.
TCHAR = "!#$%&'*+\\-.^_`|~0-9A-Za-z"
RESERVED_NAMES = (
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "user-agent",
)
RESERVED_PREFIXES = ("webhook-", "proxy-")
SECRET_NAMES = ("authorization", "proxy-authorization", "cookie")
SECRET_PARTS = ("key", "token", "secret", "password", "auth")


def _any_case(word: str) -> str:
    # The reserved words are letters and "-", which needs no escape (and "\-" is an error in ECMA-262's u mode).
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word)


# The rules below as one ECMA-262 (and Python) pattern, for the OpenAPI document: a token that is
# neither a reserved name nor starts with a reserved prefix, in any case.
NAME_PATTERN = (
    "^(?!(?:"
    + "|".join(_any_case(prefix) for prefix in RESERVED_PREFIXES)
    + "|(?:"
    + "|".join(_any_case(name) for name in RESERVED_NAMES)
    + ")$))"
    + f"[{TCHAR}]{{1,{MAX_NAME}}}$"
)
VALUE_PATTERN = "^[ -~]*$"  # printable ASCII: no control characters, nothing a header cannot carry

_TOKEN = re.compile(f"[{TCHAR}]+")
_VALUE = re.compile("[ -~]*")


def is_secret(name: str) -> bool:
    """Whether the value under this name is write-only: it may well be a credential."""
    lowered = name.lower()
    return lowered in SECRET_NAMES or any(part in lowered for part in SECRET_PARTS)


def name_problem(name: str) -> str | None:
    """Why a header name cannot be set, or None."""
    shown = repr(name[: MAX_NAME + 10])
    if not _TOKEN.fullmatch(name):
        return f"Header name {shown} is not a valid token (letters, digits and !#$%&'*+-.^_`|~)."
    if len(name) > MAX_NAME:
        return f"Header name {shown} is longer than {MAX_NAME} characters."
    lowered = name.lower()
    if lowered in RESERVED_NAMES or lowered.startswith(RESERVED_PREFIXES):
        return f"Header {name!r} cannot be set: the service sets it, or it would break the request."
    return None


def value_problem(name: str, value: str) -> str | None:
    """Why a header value cannot be sent, or None."""
    if len(value) > MAX_VALUE:
        return f"The value of header {name!r} is longer than {MAX_VALUE} characters."
    if not _VALUE.fullmatch(value):
        return f"The value of header {name!r} must be printable ASCII characters only."
    return None


def shown(headers: dict[str, str]) -> dict[str, str | None]:
    """Headers as every read shows them: secret-bearing values as null."""
    return {name: None if is_secret(name) else value for name, value in headers.items()}
