from __future__ import annotations

import base64
import secrets
from datetime import datetime

from django.db import models
from django.utils import timezone

from tenants.ids import new_id
from tenants.models import Tenant
from webhooks.events import pattern_matches


def new_subscription_id() -> str:
    return new_id("sub")


def new_signing_secret() -> str:
    # Standard Webhooks: whsec_ + base64 of the raw key bytes (32 here; 24 to 64 allowed).
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SubscriptionQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> SubscriptionQuerySet:
        return self.filter(tenant=tenant)

    def live(self) -> SubscriptionQuerySet:
        return self.filter(deleted_at__isnull=True)

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
    secret = models.CharField(max_length=100, default=new_signing_secret, editable=False)
    # null, not "", is the API's "not disabled by the system"
    disabled_reason = models.TextField(null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="subscription_tenant_newest")]

    def __str__(self) -> str:
        return f"{self.id} → {self.url}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def wants(self, event_type: str) -> bool:
        return any(pattern_matches(pattern, event_type) for pattern in self.events)

    def signing_secrets(self, now: datetime | None = None) -> list[str]:
        """The secrets a send is signed with: one, or more while a rotation is under way."""
        return [self.secret]

    def soft_delete(self) -> None:
        self.deleted_at = timezone.now()
        self.active = False
        self.save(update_fields=["deleted_at", "active", "updated_at"])
