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


def test_several_rows_are_written_as_djangos_compiler_would(alice, make_subscription):
    """Several rows take the UNNEST text: columns the same in every row go in once, the others as arrays,
    NULLs and JSON among both; every column lands as a bulk_create's would."""
    first, second = make_subscription(alice), make_subscription(alice, url="https://hooks.example.com/two")
    now = timezone.now()

    def rows():
        events = [Event(tenant=alice, type="invoice.paid", data={"n": n}, created_at=now) for n in range(3)]
        deliveries = [
            Delivery(tenant=alice, event=events[0], subscription=first, event_type="invoice.paid"),
            Delivery(tenant=alice, event=events[1], subscription=second, event_type="invoice.paid", ordering_key="k"),
            Delivery(tenant=alice, event=events[2], subscription=first, event_type="invoice.paid", position=3),
        ]
        for delivery in deliveries:
            delivery.created_at = delivery.next_attempt_at = now
        return events, deliveries

    ours_events, ours = rows()
    insert_together(ours_events, ours)
    theirs_events, theirs = rows()
    Event.objects.bulk_create(theirs_events)
    Delivery.objects.bulk_create(theirs)
    ignored = {"id", "event_id"}
    for mine, twin in zip(ours, theirs, strict=True):
        mine_row, twin_row = (Delivery.objects.values().get(pk=d.pk) for d in (mine, twin))
        assert {k: v for k, v in mine_row.items() if k not in ignored} == {
            k: v for k, v in twin_row.items() if k not in ignored
        }
    assert [Event.objects.get(pk=e.pk).data for e in ours_events] == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_a_json_value_shared_by_every_row_goes_in_once_and_intact(alice):
    now = timezone.now()
    data = {"nested": {"list": [1, 2.5, None, "x"]}, "unicode": "é✓"}
    events = [Event(tenant=alice, type="invoice.paid", data=data, created_at=now) for _ in range(3)]
    insert_together(events)
    assert [Event.objects.get(pk=e.pk).data for e in events] == [data] * 3
