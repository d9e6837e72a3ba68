"""Subscription workflows, shared by the API, the admin and management commands."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tenants.models import Tenant
from webhooks.events import normalise_patterns
from webhooks.headers import is_secret
from webhooks.models import Subscription

UPDATABLE_FIELDS = ("url", "events", "description", "active", "metadata", "headers", "rate_limit", "filter")


class SubscriptionLimitReached(Exception):
    """The tenant already has as many live subscriptions as it may."""


class HeaderValueMissing(ValueError):
    """A write-only header was given as null ("keep it") but has no value to keep."""


def merged_headers(stored: dict[str, str], given: dict[str, str | None]) -> dict[str, str]:
    """The headers to store when `given` replaces `stored`: a write-only header given as null keeps
    its stored value (names compared regardless of case), since no read ever showed that value."""
    kept = {name.lower(): value for name, value in stored.items() if is_secret(name)}
    merged = {}
    for name, value in given.items():
        if value is None:
            if name.lower() not in kept:
                raise HeaderValueMissing(f"Header {name!r} has no stored value to keep: give its value.")
            value = kept[name.lower()]
        merged[name] = value
    return merged


def subscription_create(
    *,
    tenant: Tenant,
    url: str,
    events: list[str] | None = None,
    description: str = "",
    active: bool = True,
    metadata: dict[str, str] | None = None,
    headers: dict[str, str | None] | None = None,
    rate_limit: int | None = None,
    filter: dict | None = None,
) -> Subscription:
    """A new subscription, unless the tenant is at its limit (Tenant.subscription_limit).

    Counted while holding the tenant's row, so two creates cannot both take the last place.
    """
    headers = merged_headers({}, headers or {})
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        limit = tenant.subscription_limit
        if Subscription.objects.for_tenant(tenant).live().count() >= limit:
            raise SubscriptionLimitReached(
                f"This tenant may have at most {limit} subscriptions: delete one to create another."
            )
        return Subscription.objects.create(
            tenant=tenant,
            url=url,
            events=normalise_patterns(events or ["*"]),
            description=description,
            active=active,
            metadata=metadata or {},
            headers=headers,
            rate_limit=rate_limit,
            filter=filter,
        )


def subscription_update(*, subscription: Subscription, changes: dict[str, Any]) -> Subscription:
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise ValueError(f"Not updatable: {', '.join(sorted(unknown))}")
    if "events" in changes:
        changes["events"] = normalise_patterns(changes["events"])
    if "headers" in changes:
        changes["headers"] = merged_headers(subscription.headers, changes["headers"])
    if changes.get("active") is True:
        # Re-enabling is the tenant saying "I fixed it": the system's reason no longer applies.
        changes["disabled_reason"] = None
        changes["failing_since"] = None
    for field, value in changes.items():
        setattr(subscription, field, value)
    subscription.save(update_fields=[*changes, "updated_at"])
    return subscription


def subscription_rotate_secret(*, subscription: Subscription) -> str:
    """A new signing secret; the old one keeps signing beside it for the overlap period."""
    return subscription.rotate_secret(overlap=timedelta(hours=settings.ASIRI_SECRET_ROTATION_OVERLAP_HOURS))


def subscription_delete(*, subscription: Subscription) -> None:
    """Soft delete: the tenant sees a 404 from now on, support staff still see the history."""
    with transaction.atomic():
        subscription.soft_delete()


@dataclasses.dataclass
class HealthChanges:
    """What one batch of outcomes did to subscriptions, for the operational events that tell the tenant."""

    # the system's reason: the ids it disabled
    disabled: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # the first delivery of their streak ran out of retries
    failing: list[str] = dataclasses.field(default_factory=list)
    # the first success after a failing notice
    recovered: list[str] = dataclasses.field(default_factory=list)


def subscriptions_record_health(
    now: datetime, *, healthy: set[str], failing: set[str], gone: set[str], exhausted: set[str] = frozenset()
) -> HealthChanges:
    """The lifecycle policy: a success ends a failing streak; 410 Gone, or ASIRI_DISABLE_AFTER_HOURS of
    nothing but failures, disables.

    `exhausted` are the failing subscriptions one of whose deliveries just ran out of retries. Each
    notice is claimed with a conditional update of `failing_notified_at` that must touch exactly the
    one row, so two workers recording outcomes at once cannot both tell the tenant.
    """
    changes = HealthChanges()
    if healthy:
        notified = Subscription.objects.filter(pk__in=healthy, failing_notified_at__isnull=False)
        for subscription_id in notified.values_list("pk", flat=True):
            if Subscription.objects.filter(pk=subscription_id, failing_notified_at__isnull=False).update(
                failing_notified_at=None
            ):
                changes.recovered.append(subscription_id)
        Subscription.objects.filter(pk__in=healthy, failing_since__isnull=False).update(failing_since=None)
    if failing:
        Subscription.objects.filter(pk__in=failing, failing_since__isnull=True).update(failing_since=now)
        # 410 disables at once: the disabled notice says all there is to say.
        for subscription_id in sorted((exhausted & failing) - gone):
            if Subscription.objects.filter(
                pk=subscription_id, failing_since__isnull=False, failing_notified_at__isnull=True
            ).update(failing_notified_at=now):
                changes.failing.append(subscription_id)
        cutoff = now - timedelta(hours=settings.ASIRI_DISABLE_AFTER_HOURS)
        worn_out = Subscription.objects.filter(pk__in=failing - gone, active=True, failing_since__lte=cutoff)
        hours = f"{settings.ASIRI_DISABLE_AFTER_HOURS:g}"
        reason = f"Disabled automatically: no successful delivery for {hours} hours."
        changes.disabled[reason] = subscriptions_disable(list(worn_out.values_list("pk", flat=True)), reason)
    if gone:
        reason = f"Disabled automatically: the endpoint answered 410 Gone at {now.isoformat(timespec='seconds')}."
        changes.disabled[reason] = subscriptions_disable(list(gone), reason)
    changes.disabled = {reason: ids for reason, ids in changes.disabled.items() if ids}
    return changes


def subscriptions_disable(subscription_ids: list[str], reason: str) -> list[str]:
    """Disable those still active, saying why; returns their ids."""
    if not subscription_ids:
        return []
    active = list(Subscription.objects.filter(pk__in=subscription_ids, active=True).values_list("pk", flat=True))
    Subscription.objects.filter(pk__in=active).update(active=False, disabled_reason=reason, updated_at=timezone.now())
    return active
