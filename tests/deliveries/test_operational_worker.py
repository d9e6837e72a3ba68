"""Operational webhooks end to end: a real Celery worker and beat, receivers on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from deliveries.models import Delivery
from deliveries.services import event_publish
from tests.support import receiver as rx
from tests.support.processes import celery_beat, celery_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FAST = {
    "ASIRI_ALLOW_PRIVATE_URLS": "1",
    "ASIRI_REQUIRE_HTTPS": "0",
    "ASIRI_RETRY_SCHEDULE": "0.2,0.2",
    "ASIRI_DELIVERY_TIMEOUT": "1",
    "ASIRI_DISPATCH_INTERVAL": "0.2",
    "ASIRI_PUMP_SECONDS": "5",
}


def types_at(receiver: rx.Receiver, path: str) -> list[str]:
    return [json.loads(r.body)["type"] for r in list(receiver.requests) if r.path == path]


def all_final() -> bool:
    return not Delivery.objects.in_flight().exists()


def test_each_notice_once_per_streak_signed_and_never_to_its_subject(alice, make_subscription, empty_broker, tmp_path):
    answer = {"status": 500}

    def subject_endpoint(handler, index) -> None:
        rx.respond(answer["status"])(handler, index)

    with rx.Receiver() as receiver, celery_beat(tmp_path, **FAST), celery_worker(**FAST):
        subject = make_subscription(
            alice, url=receiver.on("/subject", subject_endpoint), events=["invoice.*", "asiri.*"]
        )
        watcher = make_subscription(alice, url=receiver.url("/watcher"), events=["asiri.*"])
        make_subscription(alice, url=receiver.url("/star"), events=["*"])

        for _ in range(2):
            event_publish(tenant=alice, event_type="invoice.paid", data={})
        assert wait_until(lambda: "asiri.subscription.failing" in types_at(receiver, "/watcher"), timeout=30)
        assert wait_until(all_final, timeout=20)
        event_publish(tenant=alice, event_type="invoice.paid", data={})  # same streak: told once
        assert wait_until(lambda: types_at(receiver, "/subject").count("invoice.paid") == 9, timeout=30)
        assert wait_until(all_final, timeout=20)

        answer["status"] = 204
        event_publish(tenant=alice, event_type="invoice.paid", data={})
        assert wait_until(lambda: "asiri.subscription.recovered" in types_at(receiver, "/watcher"), timeout=30)
        event_publish(tenant=alice, event_type="invoice.paid", data={})  # a second success is no news
        assert wait_until(lambda: types_at(receiver, "/subject").count("invoice.paid") == 11, timeout=30)
        assert wait_until(all_final, timeout=20)

    assert types_at(receiver, "/watcher") == ["asiri.subscription.failing", "asiri.subscription.recovered"]
    assert all(not t.startswith("asiri.") for t in types_at(receiver, "/subject") + types_at(receiver, "/star"))
    failing, recovered = [
        Webhook(watcher.secret).verify(r.body, r.headers) for r in receiver.requests if r.path == "/watcher"
    ]
    assert failing["data"]["subscription_id"] == subject.id and failing["data"]["url"] == subject.url
    assert failing["data"]["last_status_code"] == 500 and failing["data"]["last_error"] == "HTTP 500"
    assert failing["data"]["failing_since"]
    assert recovered["data"] == {"subscription_id": subject.id, "url": subject.url}
    logged = Delivery.objects.filter(subscription=watcher).values_list("status", "attempt_count")
    assert sorted(logged) == [("succeeded", 1), ("succeeded", 1)]
