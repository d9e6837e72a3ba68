"""Delivery workflows: creating deliveries, attempting them, handing them to workers.

The API, the admin, management commands and Celery tasks all call these functions.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from deliveries import http
from deliveries.models import TEST_EVENT_TYPE, Attempt, Delivery, DeliveryStatus, Event
from deliveries.signing import signature_header
from webhooks.models import Subscription

logger = logging.getLogger(__name__)

DISPATCH_BATCH = 500


def _enqueue_after_commit(delivery_ids: list[str]) -> None:
    from deliveries.tasks import deliver  # tasks import this module

    def send() -> None:
        for delivery_id in delivery_ids:
            try:
                deliver.delay(delivery_id)
            except Exception:
                # The row is the source of truth: the dispatcher picks it up once its lease ends.
                logger.exception("Could not enqueue delivery %s; the dispatcher will retry it", delivery_id)

    transaction.on_commit(send)


def delivery_send_test(*, subscription: Subscription) -> Delivery:
    """Create a `webhook.test` event for one subscription (active or not) and send it."""
    now = timezone.now()
    with transaction.atomic():
        event = Event.objects.create(
            tenant_id=subscription.tenant_id,
            type=TEST_EVENT_TYPE,
            created_at=now,
            data={
                "subscription_id": subscription.id,
                "message": "This is a test event from ASIRI Webhooks.",
            },
        )
        delivery = Delivery.objects.create(
            tenant_id=subscription.tenant_id,
            event=event,
            subscription=subscription,
            event_type=event.type,
            is_test=True,
            created_at=now,
            next_attempt_at=now,
            # Held for the task enqueued below; if that enqueue is lost the lease runs out
            # and the dispatcher sends it instead.
            locked_until=now + timedelta(seconds=settings.ASIRI_DELIVERY_LEASE),
        )
        _enqueue_after_commit([delivery.id])
    return delivery


def _claim(delivery: Delivery) -> bool:
    """Take the delivery for its next attempt; False when another worker won it or it is done.

    The attempt counter is the claim token: of two copies of the same task, exactly one
    moves it from N to N + 1.
    """
    now = timezone.now()
    won = (
        Delivery.objects.filter(pk=delivery.pk, attempt_count=delivery.attempt_count, next_attempt_at__lte=now)
        .in_flight()
        .update(
            attempt_count=delivery.attempt_count + 1,
            last_attempt_at=now,
            locked_until=now + timedelta(seconds=settings.ASIRI_DELIVERY_LEASE),
        )
    )
    if won:
        delivery.attempt_count += 1
        delivery.last_attempt_at = now
    return won == 1


def delivery_attempt(delivery_id: str) -> str:
    """Make one attempt of a delivery and record it; returns a short status for the task log.

    1. Claim the row with a conditional update (exactly one worker wins).
    2. Write the attempt row before the request, so a crash mid-request still shows up.
    3. Send outside any transaction, then update only the attempt's and delivery's own columns.
    """
    delivery = Delivery.objects.select_related("event", "subscription").filter(pk=delivery_id).first()
    if delivery is None or delivery.is_final or not _claim(delivery):
        return f"{delivery_id}: skipped"
    subscription = delivery.subscription
    now = delivery.last_attempt_at
    number = delivery.attempt_count
    attempt = Attempt.objects.create(delivery=delivery, number=number, started_at=now)

    if subscription.is_deleted and not delivery.is_test:
        result = http.HttpResult(None, 0, error="Subscription was deleted.")
    else:
        body = json.dumps(delivery.event.payload(), separators=(",", ":"), ensure_ascii=False).encode()
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": settings.ASIRI_USER_AGENT,
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(subscription.signing_secrets(now), delivery.id, timestamp, body),
        }
        result = http.post_webhook(subscription.url, body, headers)

    error = result.error
    if result.status_code is not None and not result.ok:
        error = f"HTTP {result.status_code}"
        if 300 <= result.status_code < 400:
            error += f": redirect not followed (Location: {result.location or 'none'})"
    Attempt.objects.filter(pk=attempt.pk).update(
        duration_ms=result.duration_ms,
        response_status_code=result.status_code,
        response_body=result.body,
        error=error,
    )
    status = DeliveryStatus.SUCCEEDED if result.ok else DeliveryStatus.FAILED
    Delivery.objects.filter(pk=delivery.pk).update(
        status=status,
        response_status_code=result.status_code,
        next_attempt_at=None,
        locked_until=None,
        failure_reason="" if result.ok else error,
    )
    return f"{delivery.id} attempt {number}: {status}"


def deliveries_dispatch_due(*, limit: int = DISPATCH_BATCH) -> int:
    """Hand due deliveries nobody holds to the workers: the path that makes sends survive a
    lost task, a dead worker or a broker that was down at commit."""
    from deliveries.tasks import deliver

    now = timezone.now()
    lease = timedelta(seconds=settings.ASIRI_DELIVERY_LEASE)
    with transaction.atomic():
        ids = list(
            Delivery.objects.claimable(now)
            .order_by("next_attempt_at")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:limit]
        )
        Delivery.objects.filter(pk__in=ids).update(locked_until=now + lease)
    for delivery_id in ids:
        deliver.delay(delivery_id)
    return len(ids)
