from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from deliveries.models import Attempt, Delivery, Event, Recovery
from deliveries.services import deliveries_purge_expired
from webhooks.models import Subscription


def add(subscription, *, age_days: float) -> Delivery:
    created = timezone.now() - timedelta(days=age_days)
    event = Event.objects.create(tenant=subscription.tenant, type="a.b", data={}, created_at=created)
    delivery = Delivery.objects.create(
        tenant=subscription.tenant,
        event=event,
        subscription=subscription,
        event_type="a.b",
        created_at=created,
        status="succeeded",
    )
    Attempt.objects.create(delivery=delivery, number=1, started_at=created, duration_ms=1, response_status_code=200)
    return delivery


def test_it_removes_history_past_retention_in_batches(alice, make_subscription, settings):
    settings.ASIRI_RETENTION_DAYS = 30
    subscription = make_subscription(alice)
    old = [add(subscription, age_days=31) for _ in range(7)]
    recent = add(subscription, age_days=29)
    assert deliveries_purge_expired(batch=3) == 7
    assert list(Delivery.objects.values_list("id", flat=True)) == [recent.id]
    assert not Attempt.objects.filter(delivery_id__in=[d.id for d in old]).exists()
    assert list(Event.objects.values_list("id", flat=True)) == [recent.event_id]


def test_deleted_subscriptions_go_once_their_history_has(alice, make_subscription):
    gone = make_subscription(alice)
    add(gone, age_days=40)
    Subscription.objects.filter(pk=gone.pk).update(deleted_at=timezone.now() - timedelta(days=35))
    recently_deleted = make_subscription(alice)
    Subscription.objects.filter(pk=recently_deleted.pk).update(deleted_at=timezone.now() - timedelta(days=2))
    deliveries_purge_expired()
    assert list(Subscription.objects.values_list("id", flat=True)) == [recently_deleted.id]


def test_recoveries_go_with_the_history_they_describe(alice, make_subscription, settings):
    settings.ASIRI_RETENTION_DAYS = 30
    subscription = make_subscription(alice)
    now = timezone.now()
    _old, recent = (
        Recovery.objects.create(
            tenant=alice, subscription=subscription, since=now, until=now, created_at=now - timedelta(days=days)
        )
        for days in (31, 29)
    )
    deliveries_purge_expired()
    assert list(Recovery.objects.values_list("id", flat=True)) == [recent.id]


@pytest.mark.django_db(transaction=True)
def test_the_purge_leaves_a_delivery_a_claim_holds_to_the_next_purge(alice, make_subscription, settings):
    """The database does not check Attempt.delivery: a claim holding an old delivery could otherwise add its
    attempt between the purge's delete of the delivery's attempts and of the delivery, and leave it behind."""
    settings.ASIRI_RETENTION_DAYS = 30
    subscription = make_subscription(alice)
    held, _ = add(subscription, age_days=31), add(subscription, age_days=31)
    locked, release = threading.Event(), threading.Event()

    def claim_holds_it() -> None:
        with transaction.atomic():
            list(Delivery.objects.select_for_update().filter(pk=held.pk))
            locked.set()
            release.wait(10)
        connection.close()

    claim = threading.Thread(target=claim_holds_it)
    claim.start()
    assert locked.wait(10)
    try:
        assert deliveries_purge_expired() == 1  # without waiting for the claim
    finally:
        release.set()
        claim.join()
    assert list(Delivery.objects.values_list("id", flat=True)) == [held.id]
    assert list(Attempt.objects.values_list("delivery_id", flat=True)) == [held.id]
    assert deliveries_purge_expired() == 1 and not Attempt.objects.exists()


def test_deleting_a_tenant_takes_its_events_deliveries_and_attempts(alice, charlie, make_subscription):
    """The database does not check these rows' references to their tenant, event or delivery
    (deliveries/models.py): Django's cascade is what must take them with their tenant."""
    add(make_subscription(alice), age_days=1)
    kept = add(make_subscription(charlie), age_days=1)
    alice.delete()
    assert list(Event.objects.values_list("tenant_id", flat=True)) == [charlie.id]
    assert list(Delivery.objects.values_list("tenant_id", flat=True)) == [charlie.id]
    assert list(Attempt.objects.values_list("delivery_id", flat=True)) == [kept.id]


def test_the_database_checks_only_a_deliverys_subscription_among_the_engines_references(db):
    """PostgreSQL checks a foreign key with a query per row written: the engine's busiest rows keep only the
    reference that can race a deletion (a publish reads live subscriptions before it inserts)."""
    tables = [model._meta.db_table for model in (Event, Delivery, Attempt)]
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT conrelid::regclass::text, a.attname FROM pg_constraint c
            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
            WHERE c.contype = 'f' AND conrelid::regclass::text = ANY(%s)""",
            [tables],
        )
        assert cursor.fetchall() == [(Delivery._meta.db_table, "subscription_id")]
