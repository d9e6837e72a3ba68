"""core.bulk.insert_together: rows of several models, parents and children, in one statement."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.bulk import insert_together
from deliveries.models import Delivery, Event, EventSkip, SkipReason


def new_rows(tenant, subscription, *, event_type: str | None = "invoice.paid"):
    now = timezone.now()
    event = Event(tenant=tenant, type="invoice.paid", data={"n": 1}, created_at=now)
    skip = EventSkip(event=event, subscription=subscription, reason=SkipReason.PAUSED)
    delivery = Delivery(tenant=tenant, event=event, subscription=subscription, event_type=event_type)
    delivery.created_at = delivery.next_attempt_at = now
    return event, skip, delivery


def test_parents_and_children_go_in_one_statement(alice, make_subscription):
    subscription = make_subscription(alice)
    event, skip, delivery = new_rows(alice, subscription)
    with CaptureQueriesContext(connection) as captured:
        assert insert_together([event], [skip], [delivery]) is True
    assert len(captured) == 1
    assert Delivery.objects.get(pk=delivery.pk).event_id == event.pk
    assert EventSkip.objects.get(event=event).reason == SkipReason.PAUSED  # numbered by the database
    assert Event.objects.get(pk=event.pk).data == {"n": 1}
    assert not event._state.adding and not delivery._state.adding


@pytest.mark.django_db(transaction=True)
def test_one_bad_row_leaves_nothing_without_a_transaction_around_it(alice, make_subscription):
    subscription = make_subscription(alice)
    event, skip, delivery = new_rows(alice, subscription, event_type=None)  # NOT NULL
    assert connection.get_autocommit()
    with pytest.raises(IntegrityError):
        insert_together([event], [skip], [delivery])
    assert not Event.objects.filter(pk=event.pk).exists() and not EventSkip.objects.exists()


def test_empty_groups_are_left_out(alice, make_subscription):
    event, _, delivery = new_rows(alice, make_subscription(alice))
    assert insert_together([event], [], [delivery]) is True
    assert insert_together([], []) is True
    assert Delivery.objects.filter(event=event).count() == 1


def test_a_single_row_is_written_as_djangos_compiler_would(alice, make_subscription):
    """One row per group takes the cached text; every column, defaults included, lands as a bulk_create's."""
    subscription = make_subscription(alice)
    event, _, delivery = new_rows(alice, subscription)
    delivery.ordering_key, delivery.position = "k", 7
    insert_together([event], [delivery])
    twin_event, _, twin = new_rows(alice, subscription)
    twin.ordering_key, twin.position = "k", 7
    Event.objects.bulk_create([twin_event])
    Delivery.objects.bulk_create([twin])
    ignored = {"id", "event_id", "created_at", "next_attempt_at"}
    ours, theirs = (Delivery.objects.values().get(pk=pk) for pk in (delivery.pk, twin.pk))
    assert {k: v for k, v in ours.items() if k not in ignored} == {k: v for k, v in theirs.items() if k not in ignored}
    assert Event.objects.get(pk=event.pk).data == Event.objects.get(pk=twin_event.pk).data == {"n": 1}


def test_an_expression_value_is_compiled_by_django(alice, make_subscription):
    from django.db.models.functions import Now

    event, _, delivery = new_rows(alice, make_subscription(alice))
    delivery.next_attempt_at = Now()
    insert_together([event], [delivery])
    assert Delivery.objects.get(pk=delivery.pk).next_attempt_at is not None
