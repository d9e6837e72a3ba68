"""Redeliver now: a retrying delivery's scheduled retry is replaced by an attempt at once, never both."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from deliveries import services
from deliveries.claims import claim_due
from deliveries.models import Delivery, DeliveryStatus
from deliveries.services import DeliveryConflict, delivery_redeliver
from webhooks.models import Subscription

SUBS = "/v1/webhooks/subscriptions"


@pytest.fixture
def retrying(alice, make_subscription, make_failed_delivery) -> Delivery:
    """One failed attempt, the next scheduled two hours from now: what a tenant who fixed the endpoint waits for."""
    delivery = make_failed_delivery(make_subscription(alice), attempts=1, code=500)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.RETRYING, next_attempt_at=timezone.now() + timedelta(hours=2)
    )
    return Delivery.objects.select_related("subscription").get(pk=delivery.pk)


def redeliver_url(delivery: Delivery) -> str:
    return f"{SUBS}/{delivery.subscription_id}/deliveries/{delivery.id}/redeliver"


def test_it_moves_a_retrying_deliverys_next_attempt_to_now_in_the_same_series(
    api, retrying, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(redeliver_url(retrying))
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "retrying" and response.json()["attempt_count"] == 1
    assert len(callbacks) == 1  # the priority worker is woken for it
    retrying.refresh_from_db()
    assert retrying.next_attempt_at <= timezone.now() and retrying.series_start == 0  # the schedule goes on
    claimed = claim_due(limit=10)
    assert [c.delivery.id for c in claimed] == [retrying.id] and claimed[0].attempt.number == 2
    # The retry that was scheduled two hours ahead is gone: the row now holds only the claim's lease.
    retrying.refresh_from_db()
    assert retrying.next_attempt_at - timezone.now() < timedelta(minutes=5)
    assert claim_due(limit=10) == []


def test_it_answers_409_only_while_an_attempt_is_in_flight(api, retrying, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        assert api.post(redeliver_url(retrying)).status_code == 202
    claim_due(limit=1)  # a worker takes it and is sending it right now
    refused = api.post(redeliver_url(retrying))
    assert refused.status_code == 409 and "in flight" in refused.json()["detail"]


def test_a_worker_claiming_between_the_check_and_the_update_wins(retrying, django_capture_on_commit_callbacks):
    real_check = services.deliveries_in_flight

    def check_then_a_worker_claims(deliveries, now):
        answer = real_check(deliveries, now)
        Delivery.objects.filter(pk=retrying.pk).update(next_attempt_at=timezone.now())  # its retry falls due
        assert len(claim_due(limit=1)) == 1
        return answer

    with (
        mock.patch.object(services, "deliveries_in_flight", autospec=True, side_effect=check_then_a_worker_claims),
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        pytest.raises(DeliveryConflict, match="in flight"),
    ):
        delivery_redeliver(delivery=retrying)
    assert callbacks == []  # nothing woken: the worker's attempt is the only one
    retrying.refresh_from_db()
    assert retrying.attempt_count == 2 and retrying.next_attempt_at > timezone.now() + timedelta(seconds=60)


def test_a_retrying_delivery_of_a_disabled_subscription_is_refused(api, retrying):
    Subscription.objects.filter(pk=retrying.subscription_id).update(active=False, disabled_reason="HTTP 410")
    response = api.post(redeliver_url(retrying))
    assert response.status_code == 409 and "disabled" in response.json()["detail"]
    retrying.refresh_from_db()
    assert retrying.next_attempt_at > timezone.now() + timedelta(hours=1)
