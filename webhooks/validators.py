"""What makes a webhook URL acceptable when a subscription is created or changed."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from webhooks.addresses import BlockedAddress, ResolutionFailed, check_addresses, connect_hosts, resolve

MAX_URL_LENGTH = 2048


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
    if settings.ASIRI_ALLOW_PRIVATE_URLS:
        return
    for candidate in connect_hosts(url):
        try:
            addresses = resolve(candidate, port or (443 if scheme == "https" else 80))
        except ResolutionFailed:
            continue  # a name that does not resolve yet is allowed: every send checks again
        try:
            check_addresses(candidate, addresses)
        except BlockedAddress as exc:
            raise ValidationError(f"Must not point to a private address: {exc}") from None
