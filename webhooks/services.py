"""Subscription workflows, shared by the API, the admin and management commands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from tenants.models import Tenant
from webhooks.events import normalise_patterns
from webhooks.models import Subscription

UPDATABLE_FIELDS = ("url", "events", "description", "active", "metadata", "rate_limit")


class SubscriptionLimitReached(Exception):
    """The tenant already has as many live subscriptions as it may."""


def subscription_create(
    *,
    tenant: Tenant,
    url: str,
    events: list[str] | None = None,
    description: str = "",
    active: bool = True,
    metadata: dict[str, str] | None = None,
    rate_limit: int | None = None,
) -> Subscription:
    """A new subscription, unless the tenant is at its limit (Tenant.subscription_limit).

    Counted while holding the tenant's row, so two creates cannot both take the last place.
    """
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
            rate_limit=rate_limit,
        )


def subscription_update(*, subscription: Subscription, changes: dict[str, Any]) -> Subscription:
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise ValueError(f"Not updatable: {', '.join(sorted(unknown))}")
    if "events" in changes:
        changes["events"] = normalise_patterns(changes["events"])
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
