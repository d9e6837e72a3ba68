"""Delivery workflows shared by the API, the admin, management commands and Celery tasks."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from core.bulk import insert_together, inserts_are_one_statement
from core.clock import database_now
from core.rows import unsaved_copy
from deliveries import wakeups
from deliveries.metrics import count_dispatcher_run
from deliveries.models import (
    TEST_EVENT_TYPE,
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    EventSkip,
    Pulse,
    Recovery,
    SkipReason,
    deliveries_keys_in_flight,
    deliveries_wait_behind,
    new_delivery_id,
    next_positions,
)
from deliveries.recovery import RECOVER, recoveries_to_wake
from tenants.models import Tenant
from webhooks.catalog import events_check_and_subscriptions
from webhooks.models import EventType, Subscription

logger = logging.getLogger(__name__)

MAX_WAKEUPS_PER_DISPATCH = 8
TEST_MESSAGE = "This is a test event from ASIRI Webhooks."
PURGE_BATCH = 1000


class DeliveryConflict(Exception):
    """The delivery cannot be redelivered in its current state."""


@dataclass(frozen=True)
class NewEvent:
    """One event to publish: what `POST /v1/events` takes."""

    type: str
    data: dict[str, Any]
    idempotency_key: str | None = None
    ordering_key: str | None = None


class IdempotencyConflict(Exception):
    """The idempotency key already names an event with a different type or data (within its 24 hours)."""

    def __init__(self, event: Event, fields: list[str]) -> None:
        super().__init__(
            f"This idempotency_key was used for {event.id} within the last {settings.ASIRI_IDEMPOTENCY_HOURS} hours "
            f"with a different {' and '.join(fields)}: use a new key for a different event."
        )
        self.fields = fields


def event_publish(
    *,
    tenant: Tenant,
    event_type: str,
    data: dict[str, Any],
    idempotency_key: str | None = None,
    about_subscription_id: str | None = None,
    ordering_key: str | None = None,
) -> Event:
    """Store an event and one delivery per live, active subscription that wants it (see event_publish_many)."""
    new = NewEvent(event_type, data, idempotency_key, ordering_key)
    return event_publish_many(tenant=tenant, events=[new], about_subscription_id=about_subscription_id)[0]


def event_publish_many(
    *, tenant: Tenant, events: Sequence[NewEvent], about_subscription_id: str | None = None
) -> list[Event]:
    """Publish events all or nothing: the events, their skips and their deliveries in one statement (on
    PostgreSQL; a bulk insert each in one transaction elsewhere), subscriptions matched once per distinct type,
    and one wake-up. Returns the events in the order given.

    Everything is written in the caller's transaction and handed to workers only after it
    commits: an event published in a transaction that rolls back is never sent. An idempotency key
    used within ASIRI_IDEMPOTENCY_HOURS (before, or earlier in the same call) answers with the first
    event and creates nothing. Every live subscription that wants an event but gets no delivery
    (paused, disabled, or the subscription an operational event is about) is recorded as skipped.
    Deliveries with an `ordering_key` take positions in the order given, so they are sent in it.
    A reused key whose type or data differ raises IdempotencyConflict; the catalog may refuse an event
    first (EventRejected, with `index` the event's place in `events`).
    """
    now, live = events_check_and_subscriptions([(e.type, e.data) for e in events], tenant)
    if not any(e.idempotency_key for e in events):
        # Its only writes are insert_together's: where that is one statement, it needs no BEGIN and
        # COMMIT of its own (two round trips of six; in the caller's transaction, if there is one).
        with nullcontext() if inserts_are_one_statement() else transaction.atomic():
            return _publish(tenant, events, now, live, about_subscription_id)
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint, only where a concurrent request may take one of the keys
                return _publish(tenant, events, now, live, about_subscription_id)
        except IntegrityError:
            # Another request published with one of these keys in the meantime: answer with its events.
            return _publish(tenant, events, now, live, about_subscription_id)


def _publish(
    tenant: Tenant,
    events: Sequence[NewEvent],
    now: datetime,
    live: list[Subscription],
    about_subscription_id: str | None,
) -> list[Event]:
    published = _events_for_keys(tenant, {e.idempotency_key for e in events if e.idempotency_key}, now)
    results, fresh = [], []
    for new in events:
        event = published.get(new.idempotency_key) if new.idempotency_key else None
        if event is not None:
            _same_event(event, new.type, new.data)
        else:
            event = Event(
                tenant=tenant,
                type=new.type,
                data=new.data,
                created_at=now,
                idempotency_key=new.idempotency_key,
                ordering_key=new.ordering_key,
            )
            fresh.append(event)
            if new.idempotency_key:
                published[new.idempotency_key] = event
        results.append(event)
    if not fresh:
        return results
    wanting = {t: [s for s in live if s.wants(t)] for t in {e.type for e in fresh}}
    deliveries, skips = [], []
    for event in fresh:
        event.delivery_count = 0
        envelope = {"type": event.type, "data": event.data}
        # Each delivery a copy of one per event: a fan-out makes hundreds (core.rows).
        template = Delivery(
            tenant_id=tenant.pk,
            event_id=event.pk,
            event_type=event.type,
            created_at=now,
            next_attempt_at=now,
            ordering_key=event.ordering_key,
        )
        for subscription in wanting[event.type]:
            reason = _skip_reason(subscription, about_subscription_id, envelope)
            if reason is not None:
                skips.append(EventSkip(event=event, subscription=subscription, reason=reason))
                continue
            event.delivery_count += 1
            deliveries.append(unsaved_copy(template, {"id": new_delivery_id(), "subscription_id": subscription.pk}))
    ordered = [d for d in deliveries if d.ordering_key is not None]
    for delivery, position in zip(ordered, next_positions(len(ordered)), strict=True):
        delivery.position = position
    # Behind an unfinished delivery of its key (in the table, or earlier in this call), a delivery waits.
    busy = deliveries_keys_in_flight({(d.subscription_id, d.ordering_key) for d in ordered})
    for delivery in ordered:
        key = (delivery.subscription_id, delivery.ordering_key)
        if key in busy:
            delivery.next_attempt_at = None
        busy.add(key)
    insert_together(fresh, skips, deliveries)
    if deliveries:
        wakeups.wake_after_commit(math.ceil(len(deliveries) / settings.ASIRI_SEND_CONCURRENCY))
    return results


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


def _skip_reason(subscription: Subscription, about_subscription_id: str | None, envelope: dict) -> SkipReason | None:
    if subscription.id == about_subscription_id:
        return SkipReason.SUBJECT
    if not subscription.active:
        return SkipReason.DISABLED if subscription.disabled_reason else SkipReason.PAUSED
    if not subscription.accepts(envelope):
        return SkipReason.FILTERED
    return None


def _events_for_keys(tenant: Tenant, keys: set[str], now: datetime) -> dict[str, Event]:
    """The events already published with these idempotency keys within the window, by key, each with its
    delivery count; a key older than the window is freed for the new event (the old one keeps its history)."""
    if not keys:
        return {}
    window_start = now - timedelta(hours=settings.ASIRI_IDEMPOTENCY_HOURS)
    found = {}
    for event in Event.objects.filter(tenant=tenant, idempotency_key__in=keys).annotate(
        delivery_count=Count("deliveries")
    ):
        if event.created_at < window_start:
            Event.objects.filter(pk=event.pk).update(idempotency_key=None)
        else:
            found[event.idempotency_key] = event
    return found


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
    """Send a delivery again now: a finished one starts a new attempt series (same webhook-id,
    attempts appended); a pending or retrying one has its scheduled attempt made at once instead.

    Refused (DeliveryConflict) for a disabled subscription, or while an attempt is in flight. A finished
    ordered delivery re-enters at the end of its ordering key: after everything published with the key
    before the redelivery, never ahead of it.
    """
    now = database_now()
    current = Delivery.objects.filter(pk=delivery.pk).first() or delivery
    current.subscription = delivery.subscription
    refusal = redelivery_refusal(current, in_flight=current.pk in deliveries_in_flight([current], now))
    if refusal:
        raise DeliveryConflict(refusal)
    with transaction.atomic():
        if current.is_final:
            restarted = Delivery.objects.filter(
                pk=delivery.pk, status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]
            ).update(
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                series_start=F("attempt_count"),
                # A result still in flight from before carries the old claim time: it will not match.
                last_attempt_at=now,
                failure_reason="",
                **({"position": next_positions(1)[0]} if current.ordering_key is not None else {}),
            )
            if current.ordering_key is not None:
                deliveries_wait_behind([delivery.pk])
        else:
            restarted = _delivery_attempt_now(current, now)
        if not restarted:
            raise DeliveryConflict(IN_FLIGHT_REFUSAL)
        if wake:
            wakeups.wake_after_commit(only_ids=[delivery.id])
    delivery.refresh_from_db()
    return delivery


IN_FLIGHT_REFUSAL = "An attempt is in flight right now; wait for its outcome, then redeliver."
DISABLED_REFUSAL = "The subscription is paused or disabled; re-enable it before redelivering."
DELETED_REFUSAL = "The subscription was deleted: nothing is sent to it again, test events included."


def redelivery_refusal(delivery: Delivery, *, in_flight: bool) -> str | None:
    """Why a redelivery would be refused, or None if it would start."""
    if delivery.subscription.is_deleted:  # the worker would end it unsent (claims.triage): say so now
        return DELETED_REFUSAL
    if not delivery.is_test and not delivery.subscription.active:
        return DISABLED_REFUSAL
    if in_flight:
        return IN_FLIGHT_REFUSAL
    return None


def deliveries_in_flight(deliveries: list[Delivery], now) -> set[str]:
    """The ids among `deliveries` that a worker holds right now, in one query.

    A claim leases a row (next_attempt_at moves past `now`) and writes its attempt with no outcome;
    a retry scheduled later has a recorded outcome on its latest attempt, so it is not in flight.
    """
    leased = {
        d.pk: d.attempt_count
        for d in deliveries
        if not d.is_final and d.next_attempt_at is not None and d.next_attempt_at > now
    }
    if not leased:
        return set()
    open_attempts = Attempt.objects.without_outcome().filter(delivery_id__in=list(leased))
    return {d for d, number in open_attempts.values_list("delivery_id", "number") if leased[d] == number}


def _delivery_attempt_now(delivery: Delivery, now) -> int:
    """Move a pending or retrying delivery's next attempt to now, in the same series.

    Conditional on the state that was checked: a worker that claimed it in between changed
    next_attempt_at (its lease), so this touches no row and the worker's attempt stands alone.
    """
    return Delivery.objects.filter(
        pk=delivery.pk, status=delivery.status, next_attempt_at=delivery.next_attempt_at
    ).update(
        next_attempt_at=now,
        # A late result of an expired claim carries the old claim time: it will not match.
        last_attempt_at=now,
    )


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
        Delivery.objects.stop_pending([subscription.id], f"Stopped: {subscription.stop_reason}")
    for recovery_id in recoveries_to_wake(now):
        # Its wake-up was lost (or its worker died): a second one finds it claimed if not.
        wakeups.send(RECOVER, [recovery_id])
    capacity = settings.ASIRI_SEND_CONCURRENCY
    due = Delivery.objects.due(now).values("pk")[: capacity * MAX_WAKEUPS_PER_DISPATCH].count()
    for _ in range(math.ceil(due / capacity)):
        if not wakeups.send(wakeups.DELIVER):
            break
    count_dispatcher_run()
    return due


def deliveries_purge_expired(*, days: int | None = None, batch: int = PURGE_BATCH) -> int:
    """Delete events, deliveries and attempts older than the retention period, a batch at a time
    so no statement holds long locks; recoveries and soft-deleted subscriptions past it go too."""
    cutoff = timezone.now() - timedelta(days=settings.ASIRI_RETENTION_DAYS if days is None else days)
    removed = 0
    while True:
        # Locked first, as a claim locks what it takes: a claim cannot add an attempt to a delivery between
        # the deletes of its attempts and of itself (the database does not check Attempt.delivery), and a
        # delivery a claim holds is left for the next purge.
        with transaction.atomic():
            ids = list(
                Delivery.objects.filter(created_at__lt=cutoff)
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:batch]
            )
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
    # A recovery past retention describes deliveries that are gone; there are few, so no batches.
    Recovery.objects.filter(created_at__lt=cutoff).delete()
    Subscription.objects.filter(deleted_at__lt=cutoff, deliveries__isnull=True).delete()
    return removed
