"""Standard Webhooks signatures, checked with the `standardwebhooks` package rather than with our own code."""

from __future__ import annotations

import base64
import os
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from deliveries.signing import signature_header


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def headers(secrets: list[str], body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "webhook-id": "dlv_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, "dlv_1", timestamp, body),
    }


def test_a_receiver_verifies_what_we_sign():
    secret, body = new_secret(), b'{"id":"evt_1","data":{"amount":42}}'
    assert Webhook(secret).verify(body, headers([secret], body)) == {"id": "evt_1", "data": {"amount": 42}}


def test_during_a_rotation_either_secret_verifies():
    old, new, body = new_secret(), new_secret(), b"{}"
    signed = headers([new, old], body)
    assert signed["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        Webhook(secret).verify(body, signed)


def test_a_changed_body_or_another_secret_does_not_verify():
    secret, body = new_secret(), b'{"a":1}'
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":2}', headers([secret], body))
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers([secret], body))
