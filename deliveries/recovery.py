"""Recovering a time range of one subscription: send its failures again and the events it missed.

The API, the admin and the Celery task all come through here. A run is set-based and bounded: one
UPDATE or one INSERT of at most RECOVERY_BATCH rows per statement, each its own short transaction,
so ten thousand rows take a few dozen statements and no lock is held for long.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.clock import database_now
from deliveries import wakeups
from deliveries.models import (
    TEST_EVENT_TYPE,
    Delivery,
    DeliveryStatus,
    Event,
    Recovery,
    RecoveryStatus,
    deliveries_set_each,
    deliveries_wait_behind,
    next_positions,
)
from webhooks.events import OPERATIONAL_PREFIX, RESERVED_PREFIXES
from webhooks.models import Subscription

RECOVER = "deliveries.tasks.recover"
RECOVERY_BATCH = 1000
MAX_RECOVERY_DAYS = 14
# A queued recovery older than this has lost its wake-up (or waits behind a busy worker): the
# dispatcher sends another; a running one not finished after RECOVERY_LEASE is taken over.
RECOVERY_PICKUP_SECONDS = 5
RECOVERY_LEASE = timedelta(minutes=10)


class RecoveryConflict(Exception):
    """The subscription cannot be recovered in its current state."""


class RecoveryRangeError(ValueError):
    """A bad time range; `field` names the field to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def subscription_recover(*, subscription: Subscription, since: datetime, until: datetime | None = None) -> Recovery:
    """Queue a recovery of [since, until) (until defaults to now) and wake a worker after commit."""
    now = database_now()
    until = recovery_check(subscription=subscription, since=since, until=until, now=now)
    with transaction.atomic():
        recovery = Recovery.objects.create(
            tenant_id=subscription.tenant_id, subscription=subscription, since=since, until=until, created_at=now
        )
        transaction.on_commit(lambda: wakeups.send(RECOVER, [recovery.id]))
    return recovery


def recovery_check(*, subscription: Subscription, since: datetime, until: datetime | None, now: datetime) -> datetime:
    """The range's end if the subscription may recover [since, until); raises the reason it may not."""
    if subscription.is_deleted or not subscription.active:
        raise RecoveryConflict("The subscription is paused or disabled: re-enable it first.")
    # Nothing published after now can be recovered yet (what is, is delivered as usual): a later end is now.
    until = now if until is None else min(until, now)
    if since < now - timedelta(days=MAX_RECOVERY_DAYS):
        raise RecoveryRangeError("since", f"Must be at most {MAX_RECOVERY_DAYS} days ago.")
    if since >= now:
        raise RecoveryRangeError("since", "Must be in the past.")
    if since >= until:
        raise RecoveryRangeError("until", "Must be later than since.")
    return until


def recovery_preview(*, subscription: Subscription, since: datetime, until: datetime) -> dict[str, int]:
    """What a recovery of [since, until) would touch now: failed deliveries and missed events."""
    return {
        "failed": _failed(subscription, since, until, timezone.now()).count(),
        "missed": _missed(subscription, since, until).count()
        if subscription.filter is None
        else sum(
            subscription.accepts({"type": t, "data": d})
            for t, d in _missed(subscription, since, until).values_list("type", "data").iterator(chunk_size=2000)
        ),
    }


def recovery_run(*, recovery_id: str) -> Recovery | None:
    """Run a queued recovery (or take over one whose worker died); None if another run has it.

    1. claim it with a conditional update that must touch exactly one row;
    2. restart its failed deliveries, a batch per UPDATE, exactly as delivery_redeliver does;
    3. create the missed deliveries, a batch per INSERT;
    4. record the counts after every batch, end `done`, and wake the workers once.
    Pending, retrying and succeeded deliveries are never touched, so a second run sends nothing twice.
    """
    now = database_now()
    takeable = Q(status=RecoveryStatus.QUEUED) | Q(status=RecoveryStatus.RUNNING, started_at__lt=now - RECOVERY_LEASE)
    claimed = Recovery.objects.filter(takeable, pk=recovery_id).update(
        status=RecoveryStatus.RUNNING,
        started_at=now,
        redelivered=Coalesce("redelivered", 0),
        recovered_missed=Coalesce("recovered_missed", 0),
    )
    if claimed != 1:
        return None
    recovery = Recovery.objects.select_related("subscription").get(pk=recovery_id)
    counts = {"redelivered": recovery.redelivered, "recovered_missed": recovery.recovered_missed}
    subscription = recovery.subscription
    if subscription.active and not subscription.is_deleted:
        counts["redelivered"] += _redeliver_failed(recovery, now)
        counts["recovered_missed"] += _create_missed(recovery, now)
    Recovery.objects.filter(pk=recovery_id).update(status=RecoveryStatus.DONE, finished_at=database_now(), **counts)
    sent = counts["redelivered"] + counts["recovered_missed"]
    if sent:
        wakeups.waker.pumps(min(math.ceil(sent / settings.ASIRI_SEND_CONCURRENCY), 8))
    recovery.refresh_from_db()
    return recovery


def recoveries_to_wake(now: datetime) -> list[str]:
    """Queued recoveries whose wake-up seems lost, and running ones whose worker seems gone."""
    return list(
        Recovery.objects.filter(
            Q(status=RecoveryStatus.QUEUED, created_at__lte=now - timedelta(seconds=RECOVERY_PICKUP_SECONDS))
            | Q(status=RecoveryStatus.RUNNING, started_at__lt=now - RECOVERY_LEASE)
        ).values_list("pk", flat=True)[:100]
    )


def _failed(subscription: Subscription, since: datetime, until: datetime, started: datetime) -> QuerySet:
    # A row restarted by this run has last_attempt_at >= started: if it fails again (410 Gone
    # fails at once) it is not restarted again, so the run always ends.
    return Delivery.objects.filter(
        Q(last_attempt_at__lt=started) | Q(last_attempt_at__isnull=True),
        subscription=subscription,
        status=DeliveryStatus.FAILED,
        created_at__gte=since,
        created_at__lt=until,
    )


def _redeliver_failed(recovery: Recovery, now: datetime) -> int:
    total = 0
    while True:
        ids = list(
            _failed(recovery.subscription, recovery.since, recovery.until, now).values_list("pk", flat=True)[
                :RECOVERY_BATCH
            ]
        )
        if not ids:
            return total
        with transaction.atomic():
            # Ordered ones re-enter at the end of their key, in the order they had (as a redelivery does).
            ordered = list(
                Delivery.objects.filter(pk__in=ids, status=DeliveryStatus.FAILED, ordering_key__isnull=False)
                .select_for_update()
                .order_by("position")
                .values_list("pk", flat=True)
            )
            # Guarded on status again: a row redelivered by hand meanwhile is left alone.
            restarted = Delivery.objects.filter(pk__in=ids, status=DeliveryStatus.FAILED).update(
                status=DeliveryStatus.PENDING,
                next_attempt_at=now,
                series_start=F("attempt_count"),
                last_attempt_at=now,
                failure_reason="",
            )
            positions = list(zip(ordered, next_positions(len(ordered)), strict=True))
            deliveries_set_each("position", "bigint", positions, in_flight_only=False)
            deliveries_wait_behind(ordered)
            Recovery.objects.filter(pk=recovery.pk).update(redelivered=F("redelivered") + restarted)
        total += restarted


def _type_filter(patterns: list[str]) -> Q:
    """The SQL form of Subscription.wants, less what counts as missed: reserved types need a pattern naming them."""
    wanted = Q(pk__in=[])
    for pattern in patterns:
        if pattern == "*":
            reserved = Q(pk__in=[])
            for prefix in RESERVED_PREFIXES:
                reserved |= Q(type__startswith=prefix)
            wanted |= ~reserved
        elif pattern.endswith(".*"):
            wanted |= Q(type__startswith=pattern[:-1])
        else:
            wanted |= Q(type=pattern)
    return wanted & ~Q(type=TEST_EVENT_TYPE)


def _missed(subscription: Subscription, since: datetime, until: datetime) -> QuerySet:
    """Events of the range the subscription's types want and it has no delivery of; its payload filter
    is applied by the caller. An event published before the subscription existed was never meant for
    it, and a notice about the subscription itself never goes to it (as when it was published)."""
    has_delivery = Delivery.objects.filter(event=OuterRef("pk"), subscription=subscription)
    # has_key first: without it a notice lacking the key compares as NULL, and NOT NULL excludes it too.
    about_it = Q(type__startswith=OPERATIONAL_PREFIX, data__has_key="subscription_id") & Q(
        data__subscription_id=subscription.id
    )
    return (
        Event.objects.filter(
            _type_filter(subscription.events),
            tenant_id=subscription.tenant_id,
            created_at__gte=max(since, subscription.created_at),
            created_at__lt=until,
        )
        .exclude(about_it)
        .annotate(delivered=Exists(has_delivery))
        .filter(delivered=False)
    )


def _create_missed(recovery: Recovery, now: datetime) -> int:
    """Deliveries for the missed events the subscription's filter accepts, in batches, oldest first.

    Walked by (created_at, id), so an event the filter refuses is passed once and not found again.
    Ordered events take positions at the end of their key, in publish order.
    """
    subscription = recovery.subscription
    total = 0
    after: tuple[datetime, str] | None = None
    while True:
        missed = _missed(subscription, recovery.since, recovery.until)
        if after is not None:
            missed = missed.filter(Q(created_at__gt=after[0]) | Q(created_at=after[0], pk__gt=after[1]))
        batch = list(
            missed.order_by("created_at", "pk").values_list("pk", "type", "created_at", "ordering_key", "data")[
                :RECOVERY_BATCH
            ]
        )
        if batch:
            after = (batch[-1][2], batch[-1][0])
        wanted = [row for row in batch if subscription.accepts({"type": row[1], "data": row[4]})]
        with transaction.atomic():
            positions = iter(next_positions(sum(1 for row in wanted if row[3] is not None)))
            # Created at the event's time, so recovering the same range later finds them if they fail.
            created = Delivery.objects.bulk_create(
                Delivery(
                    tenant_id=subscription.tenant_id,
                    event_id=event_id,
                    subscription=subscription,
                    event_type=event_type,
                    created_at=created_at,
                    next_attempt_at=now,
                    ordering_key=ordering_key,
                    position=next(positions) if ordering_key is not None else None,
                )
                for event_id, event_type, created_at, ordering_key, _ in wanted
            )
            deliveries_wait_behind([d.pk for d in created if d.ordering_key is not None])
            Recovery.objects.filter(pk=recovery.pk).update(recovered_missed=F("recovered_missed") + len(wanted))
        total += len(wanted)
        if len(batch) < RECOVERY_BATCH:
            return total
