"""Rows in bulk for tests that need many deliveries of one subscription."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from deliveries.models import Delivery, Event
from webhooks.models import Subscription


def add_deliveries(
    subscription: Subscription,
    count: int,
    *,
    status: str = "succeeded",
    hours_ago: float = 1,
    due: bool = False,
    **fields,
) -> None:
    """`count` deliveries of one event, created `hours_ago`; `due` ones waited five minutes already."""
    now = timezone.now()
    event = Event.objects.create(tenant=subscription.tenant, type="invoice.paid", data={})
    Delivery.objects.bulk_create(
        Delivery(
            tenant=subscription.tenant,
            event=event,
            subscription=subscription,
            event_type=event.type,
            status=status,
            created_at=now - timedelta(hours=hours_ago),
            next_attempt_at=(now - timedelta(minutes=5)) if due else None,
            **fields,
        )
        for _ in range(count)
    )


def make_due(delivery_ids=None) -> None:
    """Let time pass: whatever is scheduled is due now."""
    rows = Delivery.objects.in_flight().filter(next_attempt_at__isnull=False)  # not those waiting on a key's head
    if delivery_ids is not None:
        rows = rows.filter(pk__in=delivery_ids)
    rows.update(next_attempt_at=timezone.now() - timedelta(milliseconds=1))
