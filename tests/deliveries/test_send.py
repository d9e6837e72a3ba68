"""One attempt of a delivery: unit tests patch only the outbound HTTP function."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from standardwebhooks.webhooks import Webhook

from deliveries import http
from deliveries.models import Attempt, Delivery, DeliveryStatus
from deliveries.services import delivery_attempt, delivery_send_test


@pytest.fixture
def post_webhook():
    with mock.patch("deliveries.http.post_webhook", autospec=True) as patched:
        patched.return_value = http.HttpResult(200, 7, body="thanks")
        yield patched


@pytest.fixture
def test_delivery(alice, make_subscription, django_capture_on_commit_callbacks) -> Delivery:
    subscription = make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        delivery = delivery_send_test(subscription=subscription)
    assert len(callbacks) == 1  # handed to a worker only once the transaction commits
    return delivery


def test_it_signs_with_standard_webhooks_and_records_success(post_webhook, test_delivery):
    assert delivery_attempt(test_delivery.id).endswith("succeeded")
    (url, body, headers), _ = post_webhook.call_args
    subscription = test_delivery.subscription
    assert url == subscription.url
    payload = Webhook(subscription.secret).verify(body, headers)
    assert payload["id"] == test_delivery.event_id
    assert payload["type"] == "webhook.test"
    assert payload["data"]["subscription_id"] == subscription.id
    assert payload["timestamp"].endswith("Z")
    assert headers["webhook-id"] == test_delivery.id
    assert headers["content-type"] == "application/json"
    assert "ASIRI" in headers["user-agent"]
    assert body == json.dumps(payload, separators=(",", ":")).encode()
    test_delivery.refresh_from_db()
    assert (test_delivery.status, test_delivery.attempt_count, test_delivery.response_status_code) == (
        "succeeded",
        1,
        200,
    )
    assert test_delivery.next_attempt_at is None and test_delivery.locked_until is None
    attempt = Attempt.objects.get(delivery=test_delivery)
    assert (attempt.number, attempt.response_status_code, attempt.duration_ms, attempt.error) == (1, 200, 7, "")
    assert attempt.response_body == "thanks"


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (http.HttpResult(500, 3, body="boom"), "HTTP 500"),
        (
            http.HttpResult(302, 3, location="http://169.254.169.254/"),
            "HTTP 302: redirect not followed (Location: http://169.254.169.254/)",
        ),
        (http.HttpResult(None, 15000, error="Timed out after 15 s."), "Timed out after 15 s."),
        (
            http.HttpResult(None, 0, error="Refused: 127.0.0.1 is a private, loopback or reserved address."),
            "Refused: 127.0.0.1 is a private, loopback or reserved address.",
        ),
    ],
)
def test_it_records_a_failed_attempt_with_its_reason(post_webhook, test_delivery, result, error):
    post_webhook.return_value = result
    assert delivery_attempt(test_delivery.id).endswith("failed")
    test_delivery.refresh_from_db()
    assert test_delivery.status == DeliveryStatus.FAILED
    assert test_delivery.response_status_code == result.status_code
    assert test_delivery.failure_reason == error
    assert Attempt.objects.get(delivery=test_delivery).error == error


def test_a_second_copy_of_the_task_sends_nothing(post_webhook, test_delivery):
    delivery_attempt(test_delivery.id)
    assert delivery_attempt(test_delivery.id).endswith("skipped")
    assert post_webhook.call_count == 1
    assert Attempt.objects.filter(delivery=test_delivery).count() == 1


def test_an_unknown_delivery_is_skipped(post_webhook, db):
    assert delivery_attempt("dlv_gone").endswith("skipped")
    post_webhook.assert_not_called()


def test_it_still_tests_an_inactive_subscription(
    post_webhook, alice, make_subscription, django_capture_on_commit_callbacks
):
    subscription = make_subscription(alice, active=False)
    with django_capture_on_commit_callbacks(execute=False):
        delivery = delivery_send_test(subscription=subscription)
    delivery_attempt(delivery.id)
    assert post_webhook.call_count == 1
