"""An API that catches mistakes: unknown and read-only members are a 400 naming them, on every body;
enum errors list the allowed values; a missing key and a wrong key get the same 401."""

from __future__ import annotations

import pytest

from deliveries.models import Delivery, Event
from webhooks.models import Subscription

SUBSCRIPTIONS = "/v1/webhooks/subscriptions"


def operations(subscription_id: str, delivery_id: str) -> dict[str, tuple[str, str, dict]]:
    return {
        "create": ("post", SUBSCRIPTIONS, {"url": "https://hooks.example.com/x"}),
        "patch": ("patch", f"{SUBSCRIPTIONS}/{subscription_id}", {"description": "d"}),
        "publish": ("post", "/v1/events", {"type": "invoice.paid", "data": {}}),
        "test": ("post", f"{SUBSCRIPTIONS}/{subscription_id}/test", {}),
        "rotate": ("post", f"{SUBSCRIPTIONS}/{subscription_id}/rotate-secret", {}),
        "redeliver": ("post", f"{SUBSCRIPTIONS}/{subscription_id}/deliveries/{delivery_id}/redeliver", {}),
        "filter test": ("post", "/v1/webhooks/filter-test", {"filter": None, "payload": {}}),
    }


@pytest.fixture
def target(alice, make_subscription, make_failed_delivery) -> tuple[str, str]:
    subscription = make_subscription(alice)
    return subscription.id, make_failed_delivery(subscription).id


def state() -> tuple:
    return list(Subscription.objects.order_by("id").values()), Event.objects.count(), list(Delivery.objects.values())


@pytest.mark.parametrize("operation", ["create", "patch", "publish", "test", "rotate", "redeliver", "filter test"])
def test_an_unknown_field_is_a_400_naming_it_and_changes_nothing(operation, api, target, make_key, alice):
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(alice, ['webhooks:read', 'webhooks:write', 'events:write'])}")
    method, path, body = operations(*target)[operation]
    before = state()
    response = getattr(api, method)(path, {**body, "evnets": ["invoice.*"]}, format="json")
    assert response.status_code == 400
    assert response.json() == {"evnets": ["Unknown field."]}
    assert state() == before


@pytest.mark.parametrize("field", ["id", "secret", "created_at", "updated_at", "disabled_reason", "deprecated_events"])
@pytest.mark.parametrize("operation", ["create", "patch"])
def test_a_read_only_field_in_a_write_is_a_400(operation, field, api, target):
    method, path, body = operations(*target)[operation]
    before = state()
    response = getattr(api, method)(path, {**body, field: "sub_mine"}, format="json")
    assert response.status_code == 400
    assert response.json() == {field: ["This field is read-only."]}
    assert state() == before


def test_the_published_events_own_fields_are_read_only(alice, client_for):
    publisher = client_for(alice, ["events:write"])
    response = publisher.post("/v1/events", {"type": "a.b", "data": {}, "id": "evt_x"}, format="json")
    assert response.status_code == 400 and response.json() == {"id": ["This field is read-only."]}


def test_a_bad_status_filter_lists_the_allowed_values(api, target):
    response = api.get(f"{SUBSCRIPTIONS}/{target[0]}/deliveries?status=bogus")
    assert response.status_code == 400
    assert response.json() == {"status": ["Must be one of pending, retrying, succeeded, failed."]}


@pytest.mark.parametrize(
    "header", [None, "Bearer asiri_AAAAAAAAAAAA_" + "B" * 40, "Bearer nonsense", "Token abc", "Basic abc"]
)
def test_every_401_has_the_same_body(client, header, db):
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get(SUBSCRIPTIONS, **headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "Missing or invalid API key."}
