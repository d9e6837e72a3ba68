"""Publishing in bulk: POST /v1/events/batch and event_publish_many, one transaction for up to 100 events."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from deliveries.models import Delivery, Event
from deliveries.services import NewEvent, event_publish, event_publish_many

BATCH = "/v1/events/batch"


@pytest.fixture
def publisher(alice, client_for):
    return client_for(alice, ["events:write"])


def events(count: int, **extra) -> list[dict]:
    return [{"type": "invoice.paid", "data": {"n": n}, **extra} for n in range(count)]


def test_it_publishes_every_event_in_order_with_one_wake_up(
    publisher, alice, make_subscription, django_capture_on_commit_callbacks
):
    make_subscription(alice, events=["invoice.*"])
    make_subscription(alice, url="https://hooks.example.com/two", events=["*"])
    make_subscription(alice, url="https://hooks.example.com/none", events=["customer.*"])
    with django_capture_on_commit_callbacks(execute=False) as wake_ups:
        response = publisher.post(BATCH, {"events": events(5)}, format="json")
    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [Event.objects.get(pk=r["id"]).data["n"] for r in results] == [0, 1, 2, 3, 4]
    assert all(r["type"] == "invoice.paid" and r["deliveries"] == 2 for r in results)
    assert Delivery.objects.count() == 10
    assert len(wake_ups) == 1


def test_the_statements_do_not_grow_with_the_batch(alice, make_subscription, django_capture_on_commit_callbacks):
    for n in range(5):
        make_subscription(alice, url=f"https://hooks.example.com/{n}")

    def statements(count: int) -> int:
        batch = [NewEvent("invoice.paid", {"n": n}) for n in range(count)]
        with CaptureQueriesContext(connection) as captured, django_capture_on_commit_callbacks(execute=False):
            event_publish_many(tenant=alice, events=batch)
        return len(captured)

    assert statements(2) == statements(100)


@pytest.mark.parametrize(
    ("batch", "errors"),
    [
        ([], {"events": ["This list may not be empty."]}),
        (events(101), {"events": ["Ensure this field has no more than 100 elements."]}),
        (
            [*events(2), {"data": {}}, {"type": "invoice.*", "data": {}}],
            {"events": {"2": {"type": ["This field is required."]}, "3": {"type": None}}},
        ),
        ([{"type": "invoice.paid", "data": {"blob": "x" * 300_000}}], {"events": {"0": {"data": None}}}),
    ],
    ids=["empty", "too many", "bad events by index", "data over 256 KB"],
)
def test_a_bad_batch_is_refused_whole_naming_each_bad_event(publisher, alice, make_subscription, batch, errors):
    make_subscription(alice)
    response = publisher.post(BATCH, {"events": batch}, format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    if isinstance(errors["events"], dict):
        assert set(body["events"]) == set(errors["events"])
        for index, fields in errors["events"].items():
            for field, expected in fields.items():
                assert field in body["events"][index] and (expected is None or body["events"][index][field] == expected)
    else:
        assert body == errors
    assert Event.objects.count() == 0 and Delivery.objects.count() == 0


def test_idempotency_keys_hold_inside_a_batch_and_across_calls(
    publisher, alice, make_subscription, django_capture_on_commit_callbacks
):
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        twice = [{"type": "invoice.paid", "data": {}, "idempotency_key": "once"}] * 2
        first = publisher.post(BATCH, {"events": twice}, format="json").json()["results"]
        again = publisher.post(
            BATCH, {"events": [{"type": "invoice.paid", "data": {}, "idempotency_key": "once"}]}, format="json"
        ).json()["results"]
        single = event_publish(tenant=alice, event_type="invoice.paid", data={}, idempotency_key="once")
    assert first[0] == first[1] == again[0]
    assert single.id == first[0]["id"] and first[0]["deliveries"] == 1
    assert Event.objects.count() == 1 and Delivery.objects.count() == 1
    other_data = [{"type": "invoice.paid", "data": {"n": 2}, "idempotency_key": "once"}]
    conflict = publisher.post(BATCH, {"events": other_data}, format="json")
    assert conflict.status_code == 422 and conflict.json()["conflicting_fields"] == ["data"]


def test_events_with_one_ordering_key_are_positioned_in_the_order_given(
    alice, make_subscription, django_capture_on_commit_callbacks
):
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        published = event_publish_many(
            tenant=alice, events=[NewEvent("invoice.paid", {"n": n}, ordering_key="k") for n in range(5)]
        )
    positions = [Delivery.objects.get(event=e).position for e in published]
    assert positions == sorted(positions) and len(set(positions)) == 5


def test_it_needs_the_events_write_scope(alice, client_for):
    response = client_for(alice, ["webhooks:write"]).post(BATCH, {"events": events(1)}, format="json")
    assert response.status_code == 403 and response.json()["required_scope"] == "events:write"


def test_a_single_publish_takes_two_statements(alice, make_subscription, django_capture_on_commit_callbacks):
    """The catalog, the clock and the tenant's subscriptions (one query), then the event and its deliveries (one
    statement, so no transaction of its own): nothing for keys, skips or order it has not."""
    make_subscription(alice)
    make_subscription(alice, url="https://hooks.example.com/two")
    with CaptureQueriesContext(connection) as captured, django_capture_on_commit_callbacks(execute=False):
        event_publish(tenant=alice, event_type="invoice.paid", data={"n": 1})
    statements = [q["sql"] for q in captured if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(statements) == 2, statements
