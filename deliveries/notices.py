"""Operational webhooks: the events ASIRI publishes about a tenant's own subscriptions.

They go out like any event (signed, retried, logged), in the reserved `asiri.` namespace, to the
tenant's subscriptions that name it (`*` does not), never to the subscription they are about.
"""

from __future__ import annotations

from datetime import UTC, datetime

from deliveries.services import event_publish
from webhooks.models import Subscription
from webhooks.services import HealthChanges

FAILING = "asiri.subscription.failing"
DISABLED = "asiri.subscription.disabled"
RECOVERED = "asiri.subscription.recovered"


def _timestamp(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
