"""Logs are JSON lines with the ids that tie a request to a delivery, and never a secret."""

from __future__ import annotations

import json
import logging

import pytest

from asiri.logs import JsonFormatter
from deliveries.models import Delivery
from tenants.models import ApiKey
from tests.support.processes import celery_worker, wait_until
from tests.support.receiver import Receiver


def test_each_api_request_is_one_json_line_with_its_ids(api, alice, make_subscription, caplog):
    subscription = make_subscription(alice)
    with caplog.at_level(logging.INFO, logger="asiri.requests"):
        response = api.get(f"/v1/webhooks/subscriptions/{subscription.id}", HTTP_X_REQUEST_ID="req-123")
    assert response["X-Request-ID"] == "req-123"
    (record,) = [r for r in caplog.records if r.name == "asiri.requests"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-123" and line["status"] == 200 and line["tenant_id"] == alice.id
    assert line["subscription_id"] == subscription.id and line["method"] == "GET" and "duration_ms" in line


def test_an_unusable_request_id_is_replaced(api):
    response = api.get("/v1/webhooks/subscriptions", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline" and len(response["X-Request-ID"]) == 32


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_full_run_logs_no_secret(alice, client_for, make_key, settings, caplog, empty_broker):
    settings.ASIRI_ALLOW_PRIVATE_URLS = True
    settings.ASIRI_REQUIRE_HTTPS = False
    plain_keys = [make_key(alice), make_key(alice, ["events:write"])]
    api, publisher = client_for(alice), client_for(alice, ["events:write"])
    with caplog.at_level(logging.DEBUG), Receiver() as receiver:
        with celery_worker(ASIRI_ALLOW_PRIVATE_URLS="1", ASIRI_LOG_FORMAT="json") as worker:
            created = api.post("/v1/webhooks/subscriptions", {"url": receiver.url()}, format="json").json()
            rotated = api.post(f"/v1/webhooks/subscriptions/{created['id']}/rotate-secret").json()
            api.post(f"/v1/webhooks/subscriptions/{created['id']}/test")
            publisher.post("/v1/events", {"type": "invoice.paid", "data": {"n": 1}}, format="json")
            api.get("/v1/webhooks/subscriptions", HTTP_AUTHORIZATION="Bearer asiri_AAAAAAAAAAAA_" + "B" * 40)
            assert wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 2, timeout=20)
        worker_output = "".join(worker.lines)
    logged = worker_output + "\n".join(JsonFormatter().format(r) for r in caplog.records)
    secrets = [created["secret"], rotated["secret"], *plain_keys, "asiri_AAAAAAAAAAAA_" + "B" * 40]
    secrets += [k.digest for k in ApiKey.objects.all()]
    secrets += [s.split("_", 1)[1] for s in secrets if s.startswith("whsec_")]  # the base64 part alone
    assert [s for s in secrets if s in logged] == []
    assert "Authorization" not in logged and "Bearer" not in logged
    attempts = [json.loads(line) for line in worker_output.splitlines() if line.startswith("{") and '"attempt"' in line]
    assert len(attempts) == 2
    assert all(
        {"tenant_id", "subscription_id", "event_id", "delivery_id", "attempt", "outcome", "duration_ms"} <= set(line)
        for line in attempts
    )
