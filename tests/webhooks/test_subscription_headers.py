"""A subscription's own headers through the API: refused names, write-only values, PATCH replaces."""

from __future__ import annotations

import pytest

from tests.support.headers import REFUSED_NAMES
from webhooks.models import Subscription

URL = "/v1/webhooks/subscriptions"
SECRET = "Bearer sk_live_write_only_0123456789"
KEY = "key-write-only-9876543210"


def create(api, headers):
    return api.post(URL, {"url": "https://hooks.example.com/h", "headers": headers}, format="json")


def test_it_stores_headers_and_never_shows_a_write_only_value(api):
    given = {"Authorization": SECRET, "X-Api-Key": KEY, "X-Tenant": "acme", "Cookie": "s=1"}
    response = create(api, given)
    assert response.status_code == 201, response.content
    shown = {"Authorization": None, "X-Api-Key": None, "X-Tenant": "acme", "Cookie": None}
    assert response.json()["headers"] == shown  # the create response too
    sub_id = response.json()["id"]
    assert Subscription.objects.get(pk=sub_id).headers == given
    assert api.get(f"{URL}/{sub_id}").json()["headers"] == shown
    assert api.get(URL).json()["results"][0]["headers"] == shown
    patched = api.patch(f"{URL}/{sub_id}", {"description": "x"}, format="json")
    assert patched.json()["headers"] == shown
    rotated = api.post(f"{URL}/{sub_id}/rotate-secret").json()
    assert rotated["headers"] == shown
    everything = b"".join(
        r.content for r in (response, patched, api.get(f"{URL}/{sub_id}"), api.get(URL))
    ).decode() + str(rotated)
    assert SECRET not in everything and KEY not in everything and "s=1" not in everything


def test_a_patch_replaces_the_object_and_null_keeps_a_write_only_value(api):
    sub_id = create(api, {"Authorization": SECRET, "X-Api-Key": KEY, "X-Tenant": "acme"}).json()["id"]
    response = api.patch(f"{URL}/{sub_id}", {"headers": {"authorization": None, "X-Region": "eu"}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["headers"] == {"authorization": None, "X-Region": "eu"}
    assert Subscription.objects.get(pk=sub_id).headers == {"authorization": SECRET, "X-Region": "eu"}
    # A new value replaces it; an empty object removes them all.
    api.patch(f"{URL}/{sub_id}", {"headers": {"Authorization": "Bearer new"}}, format="json")
    assert Subscription.objects.get(pk=sub_id).headers == {"Authorization": "Bearer new"}
    api.patch(f"{URL}/{sub_id}", {"headers": {}}, format="json")
    assert Subscription.objects.get(pk=sub_id).headers == {}


def test_null_for_a_write_only_header_with_nothing_stored_is_a_400_naming_it(api):
    response = create(api, {"X-Api-Key": None})
    assert response.status_code == 400 and "X-Api-Key" in str(response.json()["headers"])
    assert Subscription.objects.count() == 0
    sub_id = create(api, {"Authorization": SECRET}).json()["id"]
    response = api.patch(f"{URL}/{sub_id}", {"headers": {"X-Token": None}}, format="json")
    assert response.status_code == 400 and "X-Token" in str(response.json()["headers"])
    assert Subscription.objects.get(pk=sub_id).headers == {"Authorization": SECRET}  # unchanged


@pytest.mark.parametrize("name", [n for n in REFUSED_NAMES if n])
def test_each_reserved_or_malformed_name_is_a_400_naming_it(api, name):
    response = create(api, {name: "v"})
    assert response.status_code == 400, response.content
    assert repr(name[:10])[1:-1] in " ".join(response.json()["headers"])
    assert Subscription.objects.count() == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Tenant": "a", "x-tenant": "b"},  # names ignore case
        {"X-Tenant": None},  # only a write-only header may be null
        {"X-Tenant": 5},
        {"X-Tenant": "a\r\nInjected: 1"},
        {"X-Tenant": "v" * 1001},
        {f"X-H{i}": "v" for i in range(21)},
        ["X-Tenant", "a"],
        "X-Tenant: a",
    ],
)
def test_it_refuses_bad_headers(api, headers):
    response = create(api, headers)
    assert response.status_code == 400 and "headers" in response.json(), response.content


def test_it_accepts_the_limits_exactly(api):
    headers = {f"X-{i:02d}" + "h" * 60: "~" * 1000 for i in range(20)}
    response = create(api, headers)
    assert response.status_code == 201, response.content
    assert response.json()["headers"] == headers
