from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import ApiKey, Tenant, parse_key


def test_it_issues_a_recognisable_high_entropy_key_stored_only_as_a_digest(alice):
    api_key, plain = ApiKey.issue(tenant=alice, scopes=["webhooks:read"])
    assert plain.startswith("asiri_") and len(plain) >= 50
    assert parse_key(plain) == api_key.lookup
    stored = ApiKey.objects.filter(pk=api_key.pk).values().get()
    assert plain not in str(stored)
    assert plain.split("_")[2] not in str(stored)
    assert stored["digest"] == hashlib.sha256(plain.encode()).hexdigest()


def test_keys_are_unique(alice):
    keys = {ApiKey.issue(tenant=alice, scopes=["webhooks:read"])[1] for _ in range(20)}
    assert len(keys) == 20


def test_it_refuses_unknown_scopes(alice):
    with pytest.raises(ValueError, match="nope:read"):
        ApiKey.issue(tenant=alice, scopes=["webhooks:read", "nope:read"])


def test_it_finds_a_key_by_its_visible_part_or_whole_but_not_a_wrong_secret(alice):
    api_key, plain = ApiKey.issue(tenant=alice, scopes=["webhooks:read"])
    assert ApiKey.objects.find(plain) == api_key
    assert ApiKey.objects.find(api_key.visible_part) == api_key
    assert ApiKey.objects.find(api_key.visible_part + "_" + "x" * 40) is None
    assert ApiKey.objects.find("asiri_nothing") is None


def test_authentication_is_one_indexed_query(alice, make_key, django_assert_num_queries):
    plain = make_key(alice, ["audit:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    client.get("/v1/webhooks/subscriptions")  # first use writes last_used_at once
    with django_assert_num_queries(1):
        response = client.get("/v1/webhooks/subscriptions")  # 403: authentication alone
    assert response.status_code == 403


def test_last_used_is_written_at_most_once_a_minute(alice, make_key):
    plain = make_key(alice, ["webhooks:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    client.get("/v1/webhooks/subscriptions")
    first = ApiKey.objects.find(plain).last_used_at
    assert first is not None
    client.get("/v1/webhooks/subscriptions")
    assert ApiKey.objects.find(plain).last_used_at == first
    ApiKey.objects.filter(lookup=parse_key(plain)).update(last_used_at=timezone.now() - timedelta(minutes=2))
    client.get("/v1/webhooks/subscriptions")
    assert ApiKey.objects.find(plain).last_used_at > first


def test_revocation_is_final(alice):
    api_key, _ = ApiKey.issue(tenant=alice, scopes=["webhooks:read"])
    api_key.revoke()
    revoked_at = api_key.revoked_at
    api_key.revoke()
    api_key.refresh_from_db()
    assert api_key.revoked_at == revoked_at and not api_key.is_usable()


def test_a_key_stops_working_when_its_tenant_is_deactivated(alice, make_key):
    plain = make_key(alice, ["webhooks:read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert client.get("/v1/webhooks/subscriptions").status_code == 200
    Tenant.objects.get(pk=alice.pk).deactivate()
    assert client.get("/v1/webhooks/subscriptions").status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer  ",
        "bearer asiri_",
        "Bearer asiri_AAAAAAAAAAAA_" + "é" * 40,
        "Bearer \x00",
        "Bearer asiri_AAAAAAAAAAAA_" + "B" * 40 + " extra",
    ],
)
def test_odd_headers_are_a_401_not_a_500(alice, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/v1/webhooks/subscriptions")
    assert response.status_code == 401
