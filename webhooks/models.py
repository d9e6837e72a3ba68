from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants.ids import new_id
from tenants.models import Tenant
from webhooks.events import pattern_matches
from webhooks.filters import matches


def new_subscription_id() -> str:
    return new_id("sub")


def new_signing_secret() -> str:
    # Standard Webhooks: whsec_ + base64 of the raw key bytes (32 here; 24 to 64 allowed).
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# What deciding whether a subscription gets an event reads (wants, accepts, and the skip reasons).
MATCHING_FIELDS = ["id", "events", "active", "disabled_reason", "filter"]


class SubscriptionQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> SubscriptionQuerySet:
        return self.filter(tenant=tenant)

    def live(self) -> SubscriptionQuerySet:
        return self.filter(deleted_at__isnull=True)

    def in_a_failing_streak(self) -> SubscriptionQuerySet:
        """Failing, or told the tenant it was: what a success has to end (services.subscriptions_record_health)."""
        return self.filter(Q(failing_since__isnull=False) | Q(failing_notified_at__isnull=False))

    def receiving(self) -> SubscriptionQuerySet:
        return self.live().filter(active=True)


class Subscription(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_subscription_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="subscriptions")
    url = models.TextField()
    events = models.JSONField(default=list)
    description = models.TextField(blank=True, default="")
    active = models.BooleanField(default=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Sent with every attempt; values under secret-bearing names are write-only (webhooks.headers).
    headers = models.JSONField(default=dict, blank=True)
    rate_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many deliveries per second; empty: as fast as workers go."
    )
    # A payload filter (webhooks/filters.py); null: every matching event.
    filter = models.JSONField(null=True, blank=True)
    secret = models.CharField(max_length=100, default=new_signing_secret, editable=False)
    # After a rotation the old secret keeps signing beside the new one until this time.
    previous_secret = models.CharField(max_length=100, blank=True, default="", editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Start of the current run of failed attempts (null after a success): drives auto-disable.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    # When the current streak's `asiri.subscription.failing` notice went out; cleared by the first success.
    failing_notified_at = models.DateTimeField(null=True, blank=True, editable=False)
    # null, not "", is the API's "not disabled by the system"
    disabled_reason = models.TextField(null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="subscription_tenant_newest")]
        constraints = [
            # 0 would mean "never send": the API refuses it, and so does the database for every other path.
            models.CheckConstraint(condition=models.Q(rate_limit__gte=1), name="subscription_rate_limit_positive"),
        ]
        permissions = [
            ("operate_subscription", "Can send test events to, pause and re-enable subscriptions"),
            ("rotate_secret_subscription", "Can rotate a subscription's signing secret (and see the new one)"),
        ]

    def __str__(self) -> str:
        return f"{self.id} → {self.url}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def stop_reason(self) -> str:
        """Why deliveries to this subscription end unsent, once it is deleted or disabled."""
        if self.is_deleted:
            return "the subscription was deleted."
        return f"the subscription is disabled ({self.disabled_reason or 'paused by the tenant'})."

    def wants(self, event_type: str) -> bool:
        return any(pattern_matches(pattern, event_type) for pattern in self.events)

    def accepts(self, envelope: dict) -> bool:
        """Whether its payload filter lets this event ({"type", "data"}) through."""
        return matches(self.filter, envelope)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets a send is signed with: one, or two while a rotation is under way."""
        if self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def rotate_secret(self, *, overlap: timedelta) -> str:
        now = timezone.now()
        self.previous_secret = self.secret
        self.previous_secret_expires_at = now + overlap
        self.secret = new_signing_secret()
        self.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
        return self.secret

    def soft_delete(self) -> None:
        self.deleted_at = timezone.now()
        self.active = False
        self.save(update_fields=["deleted_at", "active", "updated_at"])


class EventType(models.Model):
    """One entry of the global event catalog: what ASIRI publishes and the JSON Schema of its `data`.

    Validation of the schema and the example lives in webhooks.catalog (the admin and the loader call it).
    """

    name = models.CharField(primary_key=True, max_length=200)
    description = models.TextField(blank=True, default="")
    schema = models.JSONField(default=dict, blank=True, help_text="JSON Schema (2020-12) of the event's data.")
    example = models.JSONField(null=True, blank=True, help_text="A data object valid against the schema.")
    deprecated = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
