"""Fetching one delivery, redelivering it, rotating the secret."""

from __future__ import annotations

import base64

import pytest
from django.utils import timezone

from deliveries.claims import claim_due
from deliveries.models import Delivery
from webhooks.models import Subscription

SUBS = "/v1/webhooks/subscriptions"


@pytest.fixture
def finished(alice, make_subscription, make_failed_delivery) -> Delivery:
    return make_failed_delivery(make_subscription(alice), code=500)


def url(delivery: Delivery, suffix: str = "") -> str:
    return f"{SUBS}/{delivery.subscription_id}/deliveries/{delivery.id}{suffix}"


def test_it_fetches_one_delivery_with_its_attempts(api, finished):
    body = api.get(url(finished)).json()
    assert body["id"] == finished.id and body["status"] == "failed"
    assert [a["number"] for a in body["attempts"]] == [1, 2]


def test_a_delivery_of_another_subscription_is_a_404(api, finished, alice, make_subscription):
    other = make_subscription(alice)
    assert api.get(f"{SUBS}/{other.id}/deliveries/{finished.id}").status_code == 404
    assert api.post(f"{SUBS}/{other.id}/deliveries/{finished.id}/redeliver").status_code == 404
    assert api.get(f"{SUBS}/{finished.subscription_id}/deliveries/dlv_nope").status_code == 404


def test_redeliver_starts_a_new_series_on_the_same_delivery(api, finished, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(url(finished, "/redeliver"))
    assert response.status_code == 202
    body = response.json()
    assert body["id"] == finished.id and body["status"] == "pending" and body["attempt_count"] == 2
    finished.refresh_from_db()
    assert finished.series_start == 2 and finished.next_attempt_at <= timezone.now()
    assert len(callbacks) == 1


def test_redeliver_refuses_while_in_flight_or_disabled(api, finished, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        api.post(url(finished, "/redeliver"))
    claim_due(limit=1, only_ids=[finished.id])  # a worker is sending it right now
    again = api.post(url(finished, "/redeliver"))
    assert again.status_code == 409 and "in flight" in again.json()["detail"]
    Delivery.objects.filter(pk=finished.pk).update(status="failed")
    Subscription.objects.filter(pk=finished.subscription_id).update(active=False)
    disabled = api.post(url(finished, "/redeliver"))
    assert disabled.status_code == 409 and "disabled" in disabled.json()["detail"]


def test_rotate_secret_returns_the_new_secret_once(api, alice, make_subscription):
    subscription = make_subscription(alice)
    old = subscription.secret
    response = api.post(f"{SUBS}/{subscription.id}/rotate-secret")
    assert response.status_code == 200
    new = response.json()["secret"]
    assert new != old and new.startswith("whsec_") and len(base64.b64decode(new[6:])) == 32
    subscription.refresh_from_db()
    assert subscription.secret == new and subscription.previous_secret == old
    assert "secret" not in api.get(f"{SUBS}/{subscription.id}").json()
