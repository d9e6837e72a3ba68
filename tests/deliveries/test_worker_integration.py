"""The test operation end to end: API → PostgreSQL → Redis → a real Celery worker → a receiver."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook

from deliveries.models import Attempt, Delivery
from tests.support.processes import celery_worker, wait_until
from tests.support.receiver import Receiver, respond
from webhooks.models import EventType

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_the_test_operation_is_delivered_signed_by_a_real_worker(api, empty_broker, settings):
    settings.ASIRI_ALLOW_PRIVATE_URLS = True
    settings.ASIRI_REQUIRE_HTTPS = False
    with Receiver() as receiver, celery_worker(ASIRI_ALLOW_PRIVATE_URLS="1", ASIRI_REQUIRE_HTTPS="0"):
        created = api.post("/v1/webhooks/subscriptions", {"url": receiver.url()}, format="json").json()
        response = api.post(f"/v1/webhooks/subscriptions/{created['id']}/test")
        assert response.status_code == 202
        queued = response.json()
        assert queued["status"] == "pending" and queued["event_type"] == "webhook.test"

        (request,) = receiver.wait_for(1, timeout=20)
        payload = Webhook(created["secret"]).verify(request.body, request.headers)
        assert request.headers["webhook-id"] == queued["id"]
        assert payload == {
            "id": queued["event_id"],
            "type": "webhook.test",
            "timestamp": payload["timestamp"],
            "data": payload["data"],
        }
        assert payload["data"]["subscription_id"] == created["id"]

        delivery = wait_until(lambda: Delivery.objects.filter(pk=queued["id"], status="succeeded").first(), timeout=10)
        assert delivery is not None
    log = api.get(f"/v1/webhooks/subscriptions/{created['id']}/deliveries").json()["results"]
    assert log[0]["status"] == "succeeded"
    assert log[0]["attempts"][0]["response_status_code"] == 200
    assert log[0]["response_status_code"] == 200
    assert len(receiver.requests) == 1


def test_a_typed_test_send_delivers_the_catalog_example_signed_by_a_real_worker(api, empty_broker, settings):
    settings.ASIRI_ALLOW_PRIVATE_URLS = True
    settings.ASIRI_REQUIRE_HTTPS = False
    example = {"invoice": "in_123", "amount": 4200, "lines": [{"sku": "pro", "quantity": 2}]}
    EventType.objects.create(name="invoice.paid", schema={"type": "object"}, example=example)
    with Receiver() as receiver, celery_worker(ASIRI_ALLOW_PRIVATE_URLS="1", ASIRI_REQUIRE_HTTPS="0"):
        created = api.post("/v1/webhooks/subscriptions", {"url": receiver.url()}, format="json").json()
        response = api.post(
            f"/v1/webhooks/subscriptions/{created['id']}/test", {"event_type": "invoice.paid"}, format="json"
        )
        assert response.status_code == 202
        queued = response.json()
        assert queued["event_type"] == "invoice.paid"

        (request,) = receiver.wait_for(1, timeout=20)
        payload = Webhook(created["secret"]).verify(request.body, request.headers)
        assert request.headers["webhook-id"] == queued["id"]
        assert payload == {
            "id": queued["event_id"],
            "type": "invoice.paid",
            "timestamp": payload["timestamp"],
            "data": example,
        }
        assert wait_until(lambda: Delivery.objects.filter(pk=queued["id"], status="succeeded").first(), timeout=10)


def test_a_private_target_is_refused_at_send_time_by_the_worker(api, alice, make_subscription, empty_broker):
    # Created while private targets were allowed (or DNS answered differently), sent when they are not.
    with Receiver() as canary, celery_worker(ASIRI_ALLOW_PRIVATE_URLS="0"):
        subscription = make_subscription(alice, url=canary.url())
        queued = api.post(f"/v1/webhooks/subscriptions/{subscription.id}/test").json()
        attempt = wait_until(
            lambda: Attempt.objects.filter(delivery_id=queued["id"], error__startswith="Refused:").first(), timeout=20
        )
        assert attempt is not None, "the worker never recorded the refused attempt"
        assert Delivery.objects.get(pk=queued["id"]).status == "retrying"
    assert canary.connections == 0


def test_a_delivery_shows_what_a_real_endpoint_answered_each_attempt(api, empty_broker, settings):
    settings.ASIRI_ALLOW_PRIVATE_URLS = True
    settings.ASIRI_REQUIRE_HTTPS = False
    busy = {"Retry-After": "1", "Content-Type": "text/plain", "X-Request-ID": "req-42", "Set-Cookie": "s=1"}
    with Receiver() as receiver, celery_worker(ASIRI_ALLOW_PRIVATE_URLS="1", ASIRI_REQUIRE_HTTPS="0"):
        url = receiver.on("/busy", respond(503, busy, body="down for maintenance \xe9".encode("latin-1")))
        created = api.post("/v1/webhooks/subscriptions", {"url": url}, format="json").json()
        queued = api.post(f"/v1/webhooks/subscriptions/{created['id']}/test").json()
        answered = Attempt.objects.filter(delivery_id=queued["id"], duration_ms__isnull=False)
        assert wait_until(answered.exists, timeout=20)
    detail = api.get(f"/v1/webhooks/subscriptions/{created['id']}/deliveries/{queued['id']}").json()
    first = detail["attempts"][0]
    assert first["response_status_code"] == 503
    assert first["response_body"] == "down for maintenance \ufffd"
    assert first["response_headers"] == {
        "retry-after": "1",
        "content-type": "text/plain",
        "content-length": "22",
        "x-request-id": "req-42",
    }
    (listed,) = api.get(f"/v1/webhooks/subscriptions/{created['id']}/deliveries").json()["results"]
    assert set(listed["attempts"][0]) == {"number", "started_at", "response_status_code", "duration_ms", "error"}


def test_a_subscriptions_own_headers_reach_a_real_receiver_on_every_send(
    api, client_for, alice, empty_broker, settings
):
    settings.ASIRI_ALLOW_PRIVATE_URLS = True
    settings.ASIRI_REQUIRE_HTTPS = False
    custom = {"Authorization": "Bearer sk_receiver_only", "X-Tenant": "acme"}
    with Receiver() as receiver, celery_worker(ASIRI_ALLOW_PRIVATE_URLS="1", ASIRI_REQUIRE_HTTPS="0"):
        created = api.post(
            "/v1/webhooks/subscriptions", {"url": receiver.url(), "headers": custom}, format="json"
        ).json()
        api.post(f"/v1/webhooks/subscriptions/{created['id']}/test")
        client_for(alice, ["events:write"]).post("/v1/events", {"type": "invoice.paid", "data": {}}, format="json")
        requests = receiver.wait_for(2, timeout=20)
    assert len(requests) == 2
    for request in requests:
        assert request.headers["authorization"] == "Bearer sk_receiver_only"
        assert request.headers["x-tenant"] == "acme"
        Webhook(created["secret"]).verify(request.body, request.headers)  # still signed as ever
    assert sorted(Webhook(created["secret"]).verify(r.body, r.headers)["type"] for r in requests) == [
        "invoice.paid",
        "webhook.test",
    ]
