from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
import redis
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from deliveries import wakeups
from deliveries.claims import claim_due
from deliveries.models import Delivery, Event
from deliveries.services import delivery_redeliver_many, delivery_send_test, event_publish
from tests.support import nesting

EVENTS = "/v1/events"


@pytest.fixture
def publisher(alice, client_for):
    return client_for(alice, ["events:write"])


@pytest.mark.parametrize(
    ("patterns", "event_type", "matches"),
    [
        (["invoice.paid"], "invoice.paid", True),
        (["invoice.paid"], "invoice.failed", False),
        (["invoice.*"], "invoice.paid", True),
        (["invoice.*"], "invoice.payment.failed", True),
        (["invoice.*"], "invoice", False),
        (["invoice.*"], "invoices.paid", False),
        (["*"], "anything.at.all", True),
        (["user.created", "invoice.*"], "invoice.paid", True),
    ],
)
def test_it_matches_patterns(
    alice, make_subscription, patterns, event_type, matches, django_capture_on_commit_callbacks
):
    subscription = make_subscription(alice, events=patterns)
    with django_capture_on_commit_callbacks(execute=False):
        event = event_publish(tenant=alice, event_type=event_type, data={})
    assert Delivery.objects.filter(event=event, subscription=subscription).exists() is matches


def test_it_fans_out_to_live_active_subscriptions_of_the_tenant_only(
    alice, charlie, make_subscription, django_capture_on_commit_callbacks
):
    wanted = [make_subscription(alice) for _ in range(3)]
    make_subscription(alice, active=False)
    make_subscription(alice).soft_delete()
    make_subscription(charlie)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        event = event_publish(tenant=alice, event_type="invoice.paid", data={"a": 1})
    assert event.delivery_count == 3
    assert set(Delivery.objects.filter(event=event).values_list("subscription_id", flat=True)) == {s.id for s in wanted}
    assert Delivery.objects.filter(event=event, status="pending", attempt_count=0).count() == 3
    assert len(callbacks) == 1


def test_a_rolled_back_publish_leaves_nothing_and_wakes_no_one(
    alice, make_subscription, django_capture_on_commit_callbacks
):
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            event_publish(tenant=alice, event_type="invoice.paid", data={})
            raise RuntimeError("the caller's transaction fails")
    assert callbacks == []
    assert Event.objects.count() == 0 and Delivery.objects.count() == 0


def test_the_api_publishes_and_counts_deliveries(
    publisher, alice, make_subscription, django_capture_on_commit_callbacks
):
    make_subscription(alice, events=["invoice.*"])
    make_subscription(alice, events=["user.*"])
    with django_capture_on_commit_callbacks(execute=False):
        response = publisher.post(EVENTS, {"type": "invoice.paid", "data": {"amount": 5}}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["id"].startswith("evt_") and body == {"id": body["id"], "type": "invoice.paid", "deliveries": 1}
    assert Event.objects.get(pk=body["id"]).data == {"amount": 5}


@pytest.mark.parametrize(
    ("body", "conflicting"),
    [
        ({"type": "c.d", "data": {}}, ["type"]),
        ({"type": "a.b", "data": {"x": 1}}, ["data"]),
        ({"type": "c.d", "data": {"x": 1}}, ["type", "data"]),
    ],
)
def test_an_idempotency_key_reused_for_a_different_event_is_a_422_naming_the_conflict(
    body, conflicting, publisher, alice, make_subscription, django_capture_on_commit_callbacks
):
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        first = publisher.post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": "k1"}, format="json").json()
        again = publisher.post(EVENTS, {**body, "idempotency_key": "k1"}, format="json")
    assert again.status_code == 422
    assert again.json()["conflicting_fields"] == conflicting
    assert first["id"] in again.json()["detail"]
    assert Event.objects.count() == 1 and Delivery.objects.count() == 1


def test_the_same_idempotency_key_within_a_day_answers_with_the_first_event(
    publisher, alice, make_subscription, django_capture_on_commit_callbacks
):
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        first = publisher.post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": "k1"}, format="json").json()
        again = publisher.post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": "k1"}, format="json")
    assert again.status_code == 202 and again.json() == first
    assert Event.objects.count() == 1 and Delivery.objects.count() == 1
    Event.objects.filter(pk=first["id"]).update(created_at=timezone.now() - timedelta(hours=25))
    with django_capture_on_commit_callbacks(execute=False):
        later = publisher.post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": "k1"}, format="json").json()
    assert later["id"] != first["id"] and Event.objects.count() == 2


def test_idempotency_keys_are_per_tenant(publisher, charlie, client_for, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        mine = publisher.post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": "k"}, format="json").json()
        theirs = (
            client_for(charlie, ["events:write"])
            .post(EVENTS, {"type": "a.b", "data": {}, "idempotency_key": "k"}, format="json")
            .json()
        )
    assert mine["id"] != theirs["id"]


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("type", {"data": {}}),
        ("type", {"type": "invoice.*", "data": {}}),
        ("type", {"type": "*", "data": {}}),
        ("type", {"type": "Invoice.Paid", "data": {}}),
        ("type", {"type": 5, "data": {}}),
        ("type", {"type": "a" * 201, "data": {}}),
        ("data", {"type": "a.b"}),
        ("data", {"type": "a.b", "data": [1]}),
        ("data", {"type": "a.b", "data": "text"}),
        ("data", {"type": "a.b", "data": None}),
        ("data", {"type": "a.b", "data": {"k": "nul\u0000"}}),
        ("data", {"type": "a.b", "data": {"nul\u0000": 1}}),
        ("idempotency_key", {"type": "a.b", "data": {}, "idempotency_key": 7}),
        ("idempotency_key", {"type": "a.b", "data": {}, "idempotency_key": "k" * 201}),
    ],
)
def test_the_api_rejects_bad_events_by_field(publisher, field, body):
    response = publisher.post(EVENTS, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert Event.objects.count() == 0


def test_an_event_over_256_kb_is_a_413(publisher):
    raw = json.dumps({"type": "a.b", "data": {"blob": "x" * (256 * 1024)}}).encode()
    response = publisher.generic("POST", EVENTS, raw, content_type="application/json")
    assert response.status_code == 413
    assert Event.objects.count() == 0


def test_publishing_needs_the_events_write_scope(alice, client_for):
    response = client_for(alice, ["webhooks:write"]).post(EVENTS, {"type": "a.b", "data": {}}, format="json")
    assert response.status_code == 403 and response.json()["required_scope"] == "events:write"


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_prints_the_event_id_last(alice, make_subscription, django_capture_on_commit_callbacks):
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        out, _ = run("publish_event", "alice", "invoice.paid", "--data", '{"a": 1}', "--idempotency-key", "x")
    event_id = out.strip().splitlines()[-1]
    assert Event.objects.get(pk=event_id).deliveries.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody", "a.b"], "Unknown"),
        (["alice", "a.*"], "type"),
        (["alice", "a.b", "--data", "{bad"], "not valid JSON"),
        (["alice", "a.b", "--data", "[1]"], "data"),
    ],
)
def test_the_command_explains_bad_input(alice, args, message):
    with pytest.raises(CommandError, match=message):
        run("publish_event", *args)


def test_test_sends_wake_the_priority_queue_and_do_not_swallow_a_publishs_wakeup(
    alice, make_subscription, empty_broker, settings, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(wakeups, "waker", wakeups.Waker())
    subscription = make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_send_test(subscription=subscription)
    with django_capture_on_commit_callbacks(execute=True):
        event_publish(tenant=alice, event_type="invoice.paid", data={})  # within the coalescing window
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    assert broker.llen(settings.ASIRI_PRIORITY_QUEUE) == 1
    assert broker.llen(settings.CELERY_TASK_DEFAULT_QUEUE) == 1


def test_a_bulk_redelivery_is_one_priority_wakeup_for_all_of_them(
    alice, make_subscription, make_failed_delivery, empty_broker, settings, django_capture_on_commit_callbacks
):
    subscription = make_subscription(alice)
    finished = [make_failed_delivery(subscription) for _ in range(3)]
    in_flight = make_failed_delivery(subscription)
    Delivery.objects.filter(pk=in_flight.pk).update(status="retrying", next_attempt_at=timezone.now())
    assert len(claim_due(limit=1, only_ids=[in_flight.pk])) == 1  # a worker is sending it
    in_flight.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        started, refused = delivery_redeliver_many([*finished, in_flight])
    assert [d.id for d in started] == [d.id for d in finished]
    assert [(d.id, "in flight" in reason) for d, reason in refused] == [(in_flight.id, True)]
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    (message,) = broker.lrange(settings.ASIRI_PRIORITY_QUEUE, 0, -1)
    assert all(d.id in message.decode() for d in finished) and in_flight.id not in message.decode()


@pytest.mark.parametrize("kind", ["dict", "list"])
@pytest.mark.parametrize("levels", nesting.DEPTHS)
def test_data_nested_deeper_than_the_limit_is_a_400_naming_the_limit_and_the_field(publisher, kind, levels, caplog):
    raw = '{"type": "invoice.paid", "data": {"a": ' + nesting.nested(kind, levels - 1) + "}}"
    response = publisher.generic("POST", EVENTS, raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json() == {"data": ["Must not be nested more than 64 levels deep."]}
    assert Event.objects.count() == 0
    nesting.assert_no_traceback_logged(caplog)


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_data_nested_to_the_limit_is_published(publisher, kind, django_capture_on_commit_callbacks):
    raw = '{"type": "invoice.paid", "data": {"a": ' + nesting.nested(kind, 63) + "}}"
    with django_capture_on_commit_callbacks(execute=False):
        response = publisher.generic("POST", EVENTS, raw, content_type="application/json")
    assert response.status_code == 202, response.content
    assert Event.objects.get().data == json.loads(raw)["data"]


def test_a_repeat_with_numbers_postgresql_rewrites_is_still_the_same_event(
    publisher, alice, make_subscription, django_capture_on_commit_callbacks
):
    # jsonb keeps 2.5e+154 as its digits, which come back as an int no float equals.
    body = {"type": "a.b", "data": {"big": 2.66684067670759e154, "one": 1.0}, "idempotency_key": "k9"}
    with django_capture_on_commit_callbacks(execute=False):
        first = publisher.post(EVENTS, body, format="json")
        again = publisher.post(EVENTS, body, format="json")
    assert again.status_code == 202 and again.json() == first.json()
    assert Event.objects.count() == 1
