"""What makes a webhook URL acceptable when a subscription is created or changed."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from webhooks.addresses import UNDELIVERABLE, BlockedAddress, ResolutionFailed, check_addresses, connect_hosts, resolve

MAX_URL_LENGTH = 2048

# The grammar the OpenAPI document states, and so the one enforced: every URL it matches gets
# through the checks below save the address ones, which no pattern can state. Hosts are ASCII
# DNS labels (an IDN in its xn-- form) or a bracketed IPv6 address, as Python's ipaddress reads it.
_H16 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = rf"({_H16}:{_H16}|{_OCTET}(\.{_OCTET}){{3}})"
_IPV6 = "|".join(  # RFC 3986, section 3.2.2
    (
        rf"({_H16}:){{6}}{_LS32}",
        rf"::({_H16}:){{5}}{_LS32}",
        rf"({_H16})?::({_H16}:){{4}}{_LS32}",
        rf"(({_H16}:){{0,1}}{_H16})?::({_H16}:){{3}}{_LS32}",
        rf"(({_H16}:){{0,2}}{_H16})?::({_H16}:){{2}}{_LS32}",
        rf"(({_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(({_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(({_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(({_H16}:){{0,6}}{_H16})?::",
    )
)
_LABEL = "[A-Za-z0-9_-]{1,63}"
_HOST = rf"({_LABEL}(\.{_LABEL})*\.?|\[({_IPV6})\])"
_PORT = "(:(0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?)?"
# Path, query and fragment: anything but what str.isspace() calls whitespace and control characters.
_REST = r"([/?#][^\u0000-\u0020\u007f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*)?"


def webhook_url_pattern() -> str:
    """The acceptable URLs as an ECMA-262 (and Python) regex; http:// only where it is allowed."""
    scheme = "[Hh][Tt][Tt][Pp][Ss]" if settings.ASIRI_REQUIRE_HTTPS else "[Hh][Tt][Tt][Pp][Ss]?"
    return f"^{scheme}://{_HOST}{_PORT}{_REST}$"


def validate_webhook_url(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"Must be at most {MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValidationError("Must not contain whitespace or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"Is not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValidationError("Must be an absolute http:// or https:// URL.")
    if not parts.hostname:
        raise ValidationError("Must include a host.")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValidationError("Must not contain credentials (user:password@).")
    if scheme != "https" and settings.ASIRI_REQUIRE_HTTPS:
        raise ValidationError("Must use https://.")
    host = parts.hostname
    try:
        host.encode("idna")
    except UnicodeError:
        raise ValidationError("Has a host name that is not valid.") from None
    if not re.fullmatch(webhook_url_pattern(), url):
        raise ValidationError(
            "Must be an http(s) URL whose host is a DNS name of letters, digits, - and _ (an IDN in its "
            "xn-- form) or an IP address."
        )
    if settings.ASIRI_ALLOW_PRIVATE_URLS:
        return
    for candidate in connect_hosts(url):
        try:
            check_addresses(candidate, resolve(candidate, port or (443 if scheme == "https" else 80)))
        except (ResolutionFailed, BlockedAddress):
            # One answer for both: a 201 for names that do not resolve would tell the tenant which
            # of its guesses exist inside the network. Every send checks again all the same.
            raise ValidationError(UNDELIVERABLE) from None
