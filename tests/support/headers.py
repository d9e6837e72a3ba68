"""Header names a subscription may not set, and some it may: shared by the unit and API tests."""

from __future__ import annotations

REFUSED_NAMES = [
    "webhook-id",
    "Webhook-Signature",
    "WEBHOOK-anything",
    "host",
    "Content-Type",
    "content-length",
    "Content-Encoding",
    "transfer-encoding",
    "Connection",
    "keep-alive",
    "TE",
    "trailer",
    "Upgrade",
    "expect",
    "User-Agent",
    "proxy-authorization",
    "Proxy-Anything",
    "",
    "x y",
    "x:y",
    "x\ny",
    "é",
    "a" * 65,
]
ALLOWED_NAMES = [
    "Authorization",
    "X-Api-Key",
    "x-tenant",
    "te-x",
    "hosts",
    "webhook",
    "proxy",
    "a" * 64,
    "!#$%&'*+-.^_`|~",
]
