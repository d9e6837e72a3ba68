"""Your endpoint was down for an hour: recover it, end to end, with a real worker and a real receiver."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Recovery
from deliveries.services import deliveries_dispatch, event_publish
from tests.support.processes import celery_worker, wait_until
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SUBS = "/v1/webhooks/subscriptions"
WORKER_ENV = {"ASIRI_ALLOW_PRIVATE_URLS": "1", "ASIRI_REQUIRE_HTTPS": "0"}


def iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def finished(api, subscription_id: str, recovery_id: str) -> dict | None:
    body = api.get(f"{SUBS}/{subscription_id}/recoveries/{recovery_id}").json()
    return body if body["status"] == "done" else None


def test_an_hour_of_failures_and_missed_events_is_recovered_once(
    api, alice, make_subscription, make_failed_delivery, empty_broker
):
    with Receiver() as receiver, celery_worker(**WORKER_ENV):
        subscription = make_subscription(alice, url=receiver.url(), created_at=timezone.now() - timedelta(days=1))
        failed = {make_failed_delivery(subscription, attempts=8).id for _ in range(20)}
        delivered = make_failed_delivery(subscription)
        Delivery.objects.filter(pk=delivered.pk).update(status=DeliveryStatus.SUCCEEDED)
        # Paused during the outage: these events got no delivery.
        assert api.patch(f"{SUBS}/{subscription.id}", {"active": False}, format="json").status_code == 200
        missed = [event_publish(tenant=alice, event_type="invoice.paid", data={"n": n}).id for n in range(5)]
        assert api.patch(f"{SUBS}/{subscription.id}", {"active": True}, format="json").status_code == 200

        response = api.post(
            f"{SUBS}/{subscription.id}/recover", {"since": iso(timezone.now() - timedelta(hours=1))}, format="json"
        )
        assert response.status_code == 202
        recovery = wait_until(lambda: finished(api, subscription.id, response.json()["id"]), timeout=20)
        assert recovery is not None, "the recovery never finished"
        assert (recovery["redelivered"], recovery["recovered_missed"]) == (20, 5)

        requests = receiver.wait_for(25, timeout=20)
        assert len(requests) == 25
        ids = receiver.ids()
        assert failed <= set(ids), "the failed deliveries keep their webhook-id"
        assert delivered.id not in ids
        events = [json.loads(r.body)["id"] for r in requests if r.headers["webhook-id"] not in failed]
        assert sorted(events) == sorted(missed)

        again = api.post(
            f"{SUBS}/{subscription.id}/recover", {"since": iso(timezone.now() - timedelta(hours=1))}, format="json"
        ).json()
        second = wait_until(lambda: finished(api, subscription.id, again["id"]), timeout=20)
        assert (second["redelivered"], second["recovered_missed"]) == (0, 0)
        time.sleep(1.5)  # what a second send would need to arrive
        assert Counter(receiver.ids().values()) == Counter({1: 25}), "nothing arrives twice"


def test_a_recovery_whose_wake_up_was_lost_is_run_by_the_dispatcher(
    alice, make_subscription, make_failed_delivery, empty_broker
):
    with Receiver() as receiver, celery_worker(**WORKER_ENV):
        subscription = make_subscription(alice, url=receiver.url(), created_at=timezone.now() - timedelta(days=1))
        delivery = make_failed_delivery(subscription)
        # Queued, but its wake-up never reached the broker.
        recovery = Recovery.objects.create(
            tenant=alice,
            subscription=subscription,
            since=timezone.now() - timedelta(hours=1),
            until=timezone.now(),
            created_at=timezone.now() - timedelta(seconds=10),
        )

        def dispatched_and_done() -> bool:
            deliveries_dispatch()  # what beat runs every second
            time.sleep(0.2)
            return Recovery.objects.filter(pk=recovery.pk, status="done").exists()

        assert wait_until(dispatched_and_done, timeout=20)
        (request,) = receiver.wait_for(1, timeout=20)
        assert request.headers["webhook-id"] == delivery.id
        assert Recovery.objects.get(pk=recovery.pk).redelivered == 1
