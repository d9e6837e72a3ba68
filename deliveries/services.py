"""Delivery workflows shared by the API, the admin, management commands and Celery tasks."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from core.clock import database_now
from deliveries import wakeups
from deliveries.metrics import count_dispatcher_run
from deliveries.models import TEST_EVENT_TYPE, Attempt, Delivery, DeliveryStatus, Event, Pulse
from deliveries.outcomes import stop_pending
from tenants.models import Tenant
from webhooks.catalog import event_check
from webhooks.models import EventType, Subscription

logger = logging.getLogger(__name__)

MAX_WAKEUPS_PER_DISPATCH = 8
TEST_MESSAGE = "This is a test event from ASIRI Webhooks."
PURGE_BATCH = 1000


class DeliveryConflict(Exception):
    """The delivery cannot be redelivered in its current state."""


class IdempotencyConflict(Exception):
    """The idempotency key already names an event with a different type or data (within its 24 hours)."""

    def __init__(self, event: Event, fields: list[str]) -> None:
        super().__init__(
            f"This idempotency_key was used for {event.id} within the last {settings.ASIRI_IDEMPOTENCY_HOURS} hours "
            f"with a different {' and '.join(fields)}: use a new key for a different event."
        )
        self.fields = fields


def event_publish(
    *, tenant: Tenant, event_type: str, data: dict[str, Any], idempotency_key: str | None = None
) -> Event:
    """Store an event and one delivery per live, active subscription that wants it.

    Everything is written in the caller's transaction and handed to workers only after it
    commits: an event published in a transaction that rolls back is never sent. Publishing
    again with the same idempotency key within ASIRI_IDEMPOTENCY_HOURS returns the first event, or raises
    IdempotencyConflict if its type or data differ. The catalog may refuse it first (EventRejected).
    """
    event_check(event_type=event_type, data=data)
    now = database_now()
    with transaction.atomic():
        if idempotency_key is not None:
            existing = _event_for_key(tenant, idempotency_key, now)
            if existing is not None:
                return _same_event(existing, event_type, data)
        event = Event(tenant=tenant, type=event_type, data=data, created_at=now, idempotency_key=idempotency_key)
        if idempotency_key is None:
            event.save(force_insert=True)
        else:
            try:
                with transaction.atomic():  # a savepoint, only where a key can collide
                    event.save(force_insert=True)
            except IntegrityError:
                # Another request with the same key won the race: answer with its event.
                return _same_event(_event_for_key(tenant, idempotency_key, now), event_type, data)
        envelope = {"type": event_type, "data": data}
        subscriptions = [s for s in Subscription.objects.receiving().for_tenant(tenant) if s.wants(event_type)]
        # A filter that says no means no delivery (the skip accounting records these with the reason "filtered").
        subscriptions = [s for s in subscriptions if s.accepts(envelope)]
        Delivery.objects.bulk_create(
            [
                Delivery(
                    tenant=tenant,
                    event=event,
                    subscription=s,
                    event_type=event_type,
                    created_at=now,
                    next_attempt_at=now,
                )
                for s in subscriptions
            ]
        )
        if subscriptions:
            wakeups.wake_after_commit(math.ceil(len(subscriptions) / settings.ASIRI_SEND_CONCURRENCY))
    event.delivery_count = len(subscriptions)
    return event


def _numbers_exact(value: Any) -> Any:
    """The value with every number as a Decimal: PostgreSQL keeps 2.5e+154 as the digits it stands for, which
    come back as an int that no float equals, so a true repeat must be compared on the numbers' values."""
    if isinstance(value, dict):
        return {key: _numbers_exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_exact(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(repr(value))
    return value


def _same_event(event: Event, event_type: str, data: dict[str, Any]) -> Event:
    differs = []
    if event.type != event_type:
        differs.append("type")
    if _numbers_exact(event.data) != _numbers_exact(data):
        differs.append("data")
    if differs:
        raise IdempotencyConflict(event, differs)
    return event


def _event_for_key(tenant: Tenant, key: str, now) -> Event | None:
    window_start = now - timedelta(hours=settings.ASIRI_IDEMPOTENCY_HOURS)
    event = Event.objects.filter(tenant=tenant, idempotency_key=key).first()
    if event is None:
        return None
    if event.created_at < window_start:
        # Expired: free the key for the new event (the old one keeps its history).
        Event.objects.filter(pk=event.pk).update(idempotency_key=None)
        return None
    event.delivery_count = event.deliveries.count()
    return event


def delivery_send_test(*, subscription: Subscription, event_type: EventType | None = None) -> Delivery:
    """Create a test event for one subscription (active or not) and send it: `webhook.test`, or a catalog
    type with its example as data (the caller checks it has one)."""
    now = database_now()
    if event_type is None:
        type_, data = TEST_EVENT_TYPE, {"subscription_id": subscription.id, "message": TEST_MESSAGE}
    else:
        type_, data = event_type.name, event_type.example
    with transaction.atomic():
        event = Event.objects.create(tenant_id=subscription.tenant_id, type=type_, created_at=now, data=data)
        delivery = Delivery.objects.create(
            tenant_id=subscription.tenant_id,
            event=event,
            subscription=subscription,
            event_type=event.type,
            is_test=True,
            created_at=now,
            next_attempt_at=now,
        )
        wakeups.wake_after_commit(only_ids=[delivery.id])
    return delivery


def delivery_redeliver_many(deliveries) -> tuple[list[Delivery], list[tuple[Delivery, str]]]:
    """Redeliver several (the admin's bulk action) with one wake-up for all: (started, refused)."""
    started, refused = [], []
    with transaction.atomic():
        for delivery in deliveries:
            try:
                started.append(delivery_redeliver(delivery=delivery, wake=False))
            except DeliveryConflict as exc:
                refused.append((delivery, str(exc)))
        if started:
            wakeups.wake_after_commit(only_ids=[d.id for d in started])
    return started, refused


def delivery_redeliver(*, delivery: Delivery, wake: bool = True) -> Delivery:
    """Start a new attempt series for a finished delivery: same webhook-id, attempts appended."""
    subscription = delivery.subscription
    if not delivery.is_test and not subscription.active:
        raise DeliveryConflict("The subscription is disabled; re-enable it before redelivering.")
    now = database_now()
    with transaction.atomic():
        restarted = Delivery.objects.filter(
            pk=delivery.pk, status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]
        ).update(
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            series_start=F("attempt_count"),
            # A result still in flight from before carries the old claim time: it will not match.
            last_attempt_at=now,
            failure_reason="",
        )
        if not restarted:
            raise DeliveryConflict("The delivery is still being attempted; wait for it to finish.")
        if wake:
            wakeups.wake_after_commit(only_ids=[delivery.id])
    delivery.refresh_from_db()
    return delivery


def deliveries_dispatch() -> int:
    """Beat's reconciler: stop what should stop and wake workers for what is due.

    This is what makes every delivery end succeeded or failed whatever the broker lost: a
    wake-up that never arrived, a worker killed mid-send, a broker restarted empty. Each run
    leaves its pulse in the database, where /metrics and the dashboard see a dead beat.
    """
    now = database_now()
    Pulse.beat(Pulse.DISPATCHER)
    recently_stopped = Subscription.objects.filter(
        Q(active=False) | Q(deleted_at__isnull=False), updated_at__gte=now - timedelta(hours=1)
    )
    for subscription in recently_stopped.only("id", "active", "deleted_at", "disabled_reason"):
        stop_pending([subscription.id], f"Stopped: {subscription.stop_reason}")
    capacity = settings.ASIRI_SEND_CONCURRENCY
    due = Delivery.objects.due(now).values("pk")[: capacity * MAX_WAKEUPS_PER_DISPATCH].count()
    for _ in range(math.ceil(due / capacity)):
        if not wakeups.send(wakeups.DELIVER):
            break
    count_dispatcher_run()
    return due


def deliveries_purge_expired(*, days: int | None = None, batch: int = PURGE_BATCH) -> int:
    """Delete events, deliveries and attempts older than the retention period, a batch at a time
    so no statement holds long locks; soft-deleted subscriptions past it go too."""
    cutoff = timezone.now() - timedelta(days=settings.ASIRI_RETENTION_DAYS if days is None else days)
    removed = 0
    while True:
        ids = list(Delivery.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            break
        Attempt.objects.filter(delivery_id__in=ids).delete()
        removed += Delivery.objects.filter(pk__in=ids).delete()[0]
    while True:
        ids = list(
            Event.objects.filter(created_at__lt=cutoff, deliveries__isnull=True).values_list("pk", flat=True)[:batch]
        )
        if not ids:
            break
        Event.objects.filter(pk__in=ids).delete()
    Subscription.objects.filter(deleted_at__lt=cutoff, deliveries__isnull=True).delete()
    return removed
