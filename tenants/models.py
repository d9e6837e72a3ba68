from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.ids import random_token

SCOPES = {
    "webhooks:read": "List and fetch webhook subscriptions.",
    "webhooks:write": "Create, change, delete and test webhook subscriptions.",
    "audit:read": "Read the delivery log.",
    "events:write": "Publish events (POST /v1/events).",
}

KEY_PREFIX = "asiri_"
_LOOKUP_LENGTH = 12
_SECRET_LENGTH = 40
# asiri_<lookup>_<secret>: the lookup finds the row with one indexed query, the secret
# (about 238 bits) is only ever stored as a digest.
_KEY_RE = re.compile(rf"^{KEY_PREFIX}([A-Za-z0-9]{{{_LOOKUP_LENGTH}}})_([A-Za-z0-9]{{{_SECRET_LENGTH}}})$")
_VISIBLE_RE = re.compile(rf"^{KEY_PREFIX}([A-Za-z0-9]{{{_LOOKUP_LENGTH}}})$")
LAST_USED_RESOLUTION = timedelta(minutes=1)


def key_digest(key: str) -> str:
    # A fast hash is right here: the key is random and long, so there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> str | None:
    """The lookup part of a well-formed key, or None."""
    match = _KEY_RE.match(key)
    return match.group(1) if match else None


class Tenant(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    max_subscriptions = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Live subscriptions this tenant may have; empty: ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT.",
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug

    @property
    def subscription_limit(self) -> int:
        if self.max_subscriptions is None:
            return settings.ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT
        return self.max_subscriptions

    def deactivate(self) -> None:
        self.is_active = False
        self.save(update_fields=["is_active"])


class ApiKeyQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> ApiKeyQuerySet:
        return self.filter(tenant=tenant)

    def find(self, key_or_visible_part: str) -> ApiKey | None:
        """The key named by a whole key or by the part the admin shows (`asiri_<lookup>`)."""
        lookup = parse_key(key_or_visible_part)
        if lookup is None:
            match = _VISIBLE_RE.match(key_or_visible_part)
            lookup = match.group(1) if match else None
        if lookup is None:
            return None
        api_key = self.filter(lookup=lookup).first()
        if api_key and lookup == parse_key(key_or_visible_part) and not api_key.matches(key_or_visible_part):
            return None
        return api_key


class ApiKey(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    lookup = models.CharField(max_length=_LOOKUP_LENGTH, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        permissions = [("revoke_apikey", "Can revoke an API key")]

    # DRF treats whatever authentication returns as request.user: a key is a principal.
    is_authenticated = True

    def __str__(self) -> str:
        return f"{self.visible_part} ({self.name})" if self.name else self.visible_part

    @property
    def visible_part(self) -> str:
        return f"{KEY_PREFIX}{self.lookup}"

    @classmethod
    def issue(cls, *, tenant: Tenant, scopes: list[str], name: str = "", expires_at=None) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the plain key, which is never available again."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise ValueError(f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(SCOPES)}.")
        lookup = random_token(_LOOKUP_LENGTH)
        plain = f"{KEY_PREFIX}{lookup}_{random_token(_SECRET_LENGTH)}"
        api_key = cls.objects.create(
            tenant=tenant,
            name=name,
            lookup=lookup,
            digest=key_digest(plain),
            scopes=sorted(set(scopes)),
            expires_at=expires_at,
        )
        return api_key, plain

    def matches(self, plain: str) -> bool:
        return hmac.compare_digest(self.digest, key_digest(plain))

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now) and self.tenant.is_active

    def revoke(self) -> None:
        """Revocation is final: there is deliberately no way back."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def touch(self, now=None) -> None:
        """Record use, at most once a minute, so authentication stays a read."""
        now = now or timezone.now()
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now
