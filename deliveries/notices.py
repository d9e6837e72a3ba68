"""Operational webhooks: the events ASIRI publishes about a tenant's own subscriptions.

They go out like any event (signed, retried, logged), in the reserved `asiri.` namespace, to the
tenant's subscriptions that name it (`*` does not), never to the subscription they are about.
"""

from __future__ import annotations

from datetime import UTC, datetime

from deliveries.models import Delivery
from deliveries.services import event_publish
from webhooks.models import Subscription
from webhooks.services import HealthChanges, subscriptions_record_health

FAILING = "asiri.subscription.failing"
DISABLED = "asiri.subscription.disabled"
RECOVERED = "asiri.subscription.recovered"


def _timestamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def health_record(
    now: datetime,
    *,
    healthy: set[str],
    failing: set[str],
    gone: set[str],
    last_failures: dict[str, tuple[int | None, str]],
) -> HealthChanges:
    """Record what endpoints did to their subscriptions' health, stop the deliveries of those it
    disables, and publish the notices that follow; `last_failures` are the subscriptions one of whose
    deliveries just ended failed, with its last status code and error. In the caller's transaction."""
    changes = subscriptions_record_health(
        now, healthy=healthy - failing, failing=failing - healthy, gone=gone, exhausted=set(last_failures)
    )
    for reason, subscription_ids in changes.disabled.items():
        Delivery.objects.stop_pending(subscription_ids, f"Stopped: {reason}")
    publish_health_notices(changes, last_failures)
    return changes


def publish_health_notices(changes: HealthChanges, last_failures: dict[str, tuple[int | None, str]]) -> int:
    """Publish one event per change, in the caller's transaction; returns how many.

    `last_failures` holds, per subscription, the status code and error of the delivery that ran out
    of retries.
    """
    disabled = {subscription_id: reason for reason, ids in changes.disabled.items() for subscription_id in ids}
    wanted = {*changes.failing, *changes.recovered, *disabled}
    if not wanted:
        return 0
    subscriptions = Subscription.objects.select_related("tenant").in_bulk(wanted)
    notices = []
    for subscription_id in changes.failing:
        subscription = subscriptions[subscription_id]
        status_code, error = last_failures.get(subscription_id, (None, ""))
        notices.append(
            (
                subscription,
                FAILING,
                {
                    "failing_since": _timestamp(subscription.failing_since),
                    "last_status_code": status_code,
                    "last_error": error,
                },
            )
        )
    for subscription_id, reason in disabled.items():
        notices.append((subscriptions[subscription_id], DISABLED, {"reason": reason}))
    for subscription_id in changes.recovered:
        notices.append((subscriptions[subscription_id], RECOVERED, {}))
    for subscription, event_type, details in notices:
        event_publish(
            tenant=subscription.tenant,
            event_type=event_type,
            data={"subscription_id": subscription.id, "url": subscription.url, **details},
            about_subscription_id=subscription.id,
        )
    return len(notices)
