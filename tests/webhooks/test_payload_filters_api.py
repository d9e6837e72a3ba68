"""Payload filters through the API: saved on subscriptions, refused by JSON Pointer, tried with filter-test,
and applied when an event fans out."""

from __future__ import annotations

import pytest

from deliveries.models import Delivery
from webhooks.filters import MAX_FILTER_BYTES
from webhooks.models import Subscription

SUBSCRIPTIONS = "/v1/webhooks/subscriptions"
OVER_1000 = {"type": "invoice.paid", "data": {"amount": {"$gt": 1000}, "currency": {"$in": ["EUR", "USD"]}}}


def create(api, **body):
    return api.post(SUBSCRIPTIONS, {"url": "https://hooks.example.com/a", **body}, format="json")


def test_a_subscription_keeps_its_filter_and_null_removes_it(api):
    response = create(api, filter=OVER_1000)
    assert response.status_code == 201 and response.json()["filter"] == OVER_1000
    subscription_id = response.json()["id"]
    assert Subscription.objects.get(pk=subscription_id).filter == OVER_1000
    assert api.get(f"{SUBSCRIPTIONS}/{subscription_id}").json()["filter"] == OVER_1000
    cleared = api.patch(f"{SUBSCRIPTIONS}/{subscription_id}", {"filter": None}, format="json")
    assert cleared.status_code == 200 and cleared.json()["filter"] is None
    assert Subscription.objects.get(pk=subscription_id).filter is None


def test_without_a_filter_it_is_null(api):
    assert create(api).json()["filter"] is None


@pytest.mark.parametrize(
    ("filter_", "pointer"),
    [
        ({"data": {"amount": {"$gtt": 1000}}}, "/data/amount/$gtt"),
        ({"data": {"amount": {"$gt": [1000]}}}, "/data/amount/$gt"),
        ({"$or": [{"type": "a"}, {"data": {"x": {"$in": "a"}}}]}, "/$or/1/data/x/$in"),
        ("invoice.paid", ""),
        ({"data": {"x": "y" * MAX_FILTER_BYTES}}, ""),
    ],
)
def test_a_bad_filter_is_a_400_naming_its_pointer_and_changes_nothing(api, alice, make_subscription, filter_, pointer):
    response = create(api, filter=filter_)
    assert response.status_code == 400
    assert response.json()["filter"][0]["pointer"] == pointer
    subscription = make_subscription(alice)
    patched = api.patch(f"{SUBSCRIPTIONS}/{subscription.id}", {"filter": filter_}, format="json")
    assert patched.status_code == 400 and patched.json()["filter"][0]["pointer"] == pointer
    subscription.refresh_from_db()
    assert subscription.filter is None
    assert Subscription.objects.count() == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [({"amount": 1500, "currency": "EUR"}, True), ({"amount": 500, "currency": "EUR"}, False), ({}, False)],
)
def test_filter_test_answers_as_publishing_would(api, data, expected):
    body = {"filter": OVER_1000, "payload": {"type": "invoice.paid", "data": data}}
    response = api.post("/v1/webhooks/filter-test", body, format="json")
    assert response.status_code == 200 and response.json() == {"matches": expected}


def test_filter_test_refuses_a_bad_filter_with_its_pointer(api):
    body = {"filter": {"type": {"$regex": "x"}}, "payload": {"type": "a"}}
    response = api.post("/v1/webhooks/filter-test", body, format="json")
    assert response.status_code == 400
    assert response.json()["filter"][0]["pointer"] == "/type/$regex"


def test_filter_test_needs_only_the_read_scope(alice, client_for):
    body = {"filter": None, "payload": {"type": "a"}}
    assert client_for(alice, ["webhooks:read"]).post("/v1/webhooks/filter-test", body, format="json").json() == {
        "matches": True
    }


def test_publishing_delivers_only_to_subscriptions_whose_filter_matches(
    alice, client_for, make_subscription, django_capture_on_commit_callbacks
):
    big = make_subscription(alice, events=["invoice.*"], filter=OVER_1000)
    everything = make_subscription(alice, events=["invoice.*"])
    eur_only = make_subscription(alice, events=["*"], filter={"data": {"currency": "EUR"}})
    publisher = client_for(alice, ["events:write"])
    with django_capture_on_commit_callbacks(execute=False):
        small = publisher.post(
            "/v1/events", {"type": "invoice.paid", "data": {"amount": 5, "currency": "USD"}}, format="json"
        )
        large = publisher.post(
            "/v1/events", {"type": "invoice.paid", "data": {"amount": 5000, "currency": "EUR"}}, format="json"
        )
    assert small.json()["deliveries"] == 1 and large.json()["deliveries"] == 3

    def receivers(response) -> set[str]:
        return set(Delivery.objects.filter(event_id=response.json()["id"]).values_list("subscription_id", flat=True))

    assert receivers(small) == {everything.id}
    assert receivers(large) == {big.id, everything.id, eur_only.id}


def test_a_filtered_out_subscription_gets_no_delivery(
    alice, client_for, make_subscription, django_capture_on_commit_callbacks
):
    big = make_subscription(alice, events=["invoice.*"], filter=OVER_1000)
    everything = make_subscription(alice, events=["invoice.*"])
    publisher = client_for(alice, ["events:write"])
    with django_capture_on_commit_callbacks(execute=False):
        response = publisher.post(
            "/v1/events", {"type": "invoice.paid", "data": {"amount": 5, "currency": "EUR"}}, format="json"
        )
    assert response.json()["deliveries"] == 1
    assert list(Delivery.objects.values_list("subscription_id", flat=True)) == [everything.id]
    assert not Delivery.objects.filter(subscription=big).exists()
