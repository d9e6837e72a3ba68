"""Every operation × every way a caller can be wrong: the expected status and no side effect.

"Charlie should have no access to Alice's stuff": Alice owns the subscription, Charlie's
keys are the other tenant's.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from deliveries.models import Attempt, Delivery, Event, Recovery
from tenants.models import ApiKey
from webhooks.models import EventType, Subscription

OPERATIONS = [
    # (name, method, path, body, scope, success status, targets an object)
    ("list", "get", "/v1/webhooks/subscriptions", None, "webhooks:read", 200, False),
    (
        "create",
        "post",
        "/v1/webhooks/subscriptions",
        {"url": "https://hooks.example.com/new"},
        "webhooks:write",
        201,
        False,
    ),
    ("fetch", "get", "/v1/webhooks/subscriptions/{id}", None, "webhooks:read", 200, True),
    ("patch", "patch", "/v1/webhooks/subscriptions/{id}", {"description": "changed"}, "webhooks:write", 200, True),
    ("delete", "delete", "/v1/webhooks/subscriptions/{id}", None, "webhooks:write", 204, True),
    ("log", "get", "/v1/webhooks/subscriptions/{id}/deliveries", None, "audit:read", 200, True),
    ("test", "post", "/v1/webhooks/subscriptions/{id}/test", None, "webhooks:write", 202, True),
    ("rotate", "post", "/v1/webhooks/subscriptions/{id}/rotate-secret", None, "webhooks:write", 200, True),
    ("delivery", "get", "/v1/webhooks/subscriptions/{id}/deliveries/{delivery}", None, "audit:read", 200, True),
    (
        "redeliver",
        "post",
        "/v1/webhooks/subscriptions/{id}/deliveries/{delivery}/redeliver",
        None,
        "webhooks:write",
        202,
        True,
    ),
    ("publish", "post", "/v1/events", {"type": "invoice.paid", "data": {}}, "events:write", 202, False),
    ("events", "get", "/v1/events", None, "audit:read", 200, False),
    (
        "batch",
        "post",
        "/v1/events/batch",
        {"events": [{"type": "invoice.paid", "data": {}}]},
        "events:write",
        202,
        False,
    ),
    ("event", "get", "/v1/events/{event}", None, "audit:read", 200, True),
    (
        "recover",
        "post",
        "/v1/webhooks/subscriptions/{id}/recover",
        lambda: {"since": an_hour_ago()},
        "webhooks:write",
        202,
        True,
    ),
    ("recovery", "get", "/v1/webhooks/subscriptions/{id}/recoveries/{recovery}", None, "webhooks:read", 200, True),
    ("event types", "get", "/v1/event-types", None, "webhooks:read", 200, False),
    ("event type", "get", "/v1/event-types/invoice.paid", None, "webhooks:read", 200, False),
    (
        "filter test",
        "post",
        "/v1/webhooks/filter-test",
        {"filter": {"type": "invoice.paid"}, "payload": {"type": "invoice.paid", "data": {}}},
        "webhooks:read",
        200,
        False,
    ),
]
ALL_SCOPES = ["webhooks:read", "webhooks:write", "audit:read", "events:write"]


def an_hour_ago() -> str:
    return (timezone.now() - timedelta(hours=1)).isoformat()


def with_history(subscription: Subscription) -> Subscription:
    """Give the subscription a finished delivery and a recovery, so operations on them have a target."""
    EventType.objects.get_or_create(name="invoice.paid", defaults={"schema": {"type": "object"}})
    event = Event.objects.create(tenant=subscription.tenant, type="invoice.paid", data={})
    Delivery.objects.create(
        tenant=subscription.tenant,
        event=event,
        subscription=subscription,
        event_type=event.type,
        status="failed",
        attempt_count=1,
    )
    Recovery.objects.create(
        tenant=subscription.tenant, subscription=subscription, since=timezone.now(), until=timezone.now()
    )
    return subscription


def snapshot() -> tuple:
    return (
        list(Subscription.objects.order_by("id").values()),
        Delivery.objects.count(),
        Event.objects.count(),
        Attempt.objects.count(),
        list(Recovery.objects.order_by("id").values()),
    )


def call(client: APIClient, operation: tuple, subscription_id: str):
    _, method, path, body, *_ = operation
    delivery = Delivery.objects.filter(subscription_id=subscription_id).first()
    recovery = Recovery.objects.filter(subscription_id=subscription_id).first()
    # Ids of the targeted subscription's rows where they exist, well-formed unknown ones where not; the event
    # of that delivery where one exists, otherwise the target's id as an event id, as bad as it was.
    event = delivery.event_id if delivery else subscription_id.replace("sub_", "evt_", 1)
    path = path.format(
        id=subscription_id,
        delivery=delivery.id if delivery else "dlv_Unknown000000000000000",
        recovery=recovery.id if recovery else "rcv_Unknown000000000000000",
        event=event,
    )
    body = body() if callable(body) else body
    return getattr(client, method)(path, body, format="json" if body else None)


def bearer(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


def bad_callers(alice, make_key) -> dict[str, APIClient]:
    good = make_key(alice)
    revoked = make_key(alice)
    ApiKey.objects.find(revoked).revoke()
    expired = make_key(alice, expires_at=timezone.now() - timedelta(seconds=1))
    lookup_part = good.rsplit("_", 1)[0]
    inactive_tenant_key = make_key(alice.__class__.objects.create(slug="gone", is_active=False))
    return {
        "no key": APIClient(),
        "other scheme": bearer(f"Basic {good}"),
        "token scheme": bearer(f"Token {good}"),
        "empty bearer": bearer("Bearer "),
        "malformed": bearer("Bearer not-a-key"),
        "unknown": bearer("Bearer asiri_AAAAAAAAAAAA_" + "B" * 40),
        "wrong secret": bearer(f"Bearer {lookup_part}_{'C' * 40}"),
        "revoked": bearer(f"Bearer {revoked}"),
        "expired": bearer(f"Bearer {expired}"),
        "inactive tenant": bearer(f"Bearer {inactive_tenant_key}"),
    }


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op[0] for op in OPERATIONS])
def test_it_answers_401_to_every_bad_key_and_changes_nothing(operation, alice, make_key, make_subscription):
    subscription = with_history(make_subscription(alice))
    callers = bad_callers(alice, make_key)
    before = snapshot()
    bodies = set()
    for label, client in callers.items():
        response = call(client, operation, subscription.id)
        assert response.status_code == 401, label
        assert response["WWW-Authenticate"].startswith("Bearer"), label
        assert response["Content-Type"] == "application/json", label
        bodies.add(response.content)
    # A missing key and every kind of wrong one alike: the answer tells a caller nothing.
    assert bodies == {b'{"detail":"Missing or invalid API key."}'}
    assert snapshot() == before


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op[0] for op in OPERATIONS])
def test_it_answers_403_naming_the_missing_scope(operation, alice, client_for, make_subscription):
    subscription = with_history(make_subscription(alice))
    scope = operation[4]
    client = client_for(alice, [s for s in ALL_SCOPES if s != scope])
    before = snapshot()
    response = call(client, operation, subscription.id)
    assert response.status_code == 403
    assert response.json()["required_scope"] == scope
    assert scope in response.json()["detail"]
    assert snapshot() == before


TARGETS = ["other tenant", "unknown", "malformed", "nul byte", "unicode", "deleted"]
# An event outlives the subscriptions it went to: a deleted subscription's event is still the tenant's.
UNSEEN = [(op, target) for op in OPERATIONS if op[6] for target in TARGETS if (op[0], target) != ("event", "deleted")]


@pytest.mark.parametrize(("operation", "target"), UNSEEN, ids=[f"{target}-{op[0]}" for op, target in UNSEEN])
def test_it_answers_404_for_objects_it_cannot_see(operation, target, alice, charlie, client_for, make_subscription):
    theirs = with_history(make_subscription(charlie))
    deleted = with_history(make_subscription(alice))
    deleted.soft_delete()
    subscription_id = {
        "other tenant": theirs.id,
        "unknown": "sub_DoesNotExist0000000000",
        "malformed": "12345",
        "nul byte": "sub_%00abc",
        "unicode": "sub_\u202e\U0001f600",
        "deleted": deleted.id,
    }[target]
    client = client_for(alice)
    before = snapshot()
    response = call(client, operation, subscription_id)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert snapshot() == before


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op[0] for op in OPERATIONS])
def test_it_succeeds_with_the_right_key(
    operation, alice, client_for, make_subscription, django_capture_on_commit_callbacks
):
    subscription = with_history(make_subscription(alice))
    with django_capture_on_commit_callbacks(execute=False):
        response = call(client_for(alice, [operation[4]]), operation, subscription.id)
    assert response.status_code == operation[5], response.content


def test_it_never_lists_another_tenants_subscriptions(alice, charlie, client_for, make_subscription):
    mine = make_subscription(alice)
    make_subscription(charlie)
    response = client_for(alice).get("/v1/webhooks/subscriptions")
    assert [item["id"] for item in response.json()["results"]] == [mine.id]


def test_it_creates_in_the_keys_own_tenant(alice, charlie, client_for):
    response = client_for(charlie).post(
        "/v1/webhooks/subscriptions", {"url": "https://hooks.example.com/c"}, format="json"
    )
    assert response.status_code == 201
    assert Subscription.objects.get(pk=response.json()["id"]).tenant == charlie


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("options", "/v1/webhooks/subscriptions"),
        ("put", "/v1/webhooks/subscriptions"),
        ("put", "/v1/webhooks/subscriptions/sub_x"),
        ("get", "/v1/webhooks/subscriptions/sub_x/test"),
        ("delete", "/v1/webhooks/subscriptions/sub_x/deliveries"),
    ],
)
def test_methods_an_operation_does_not_serve_are_a_405(api, method, path):
    response = getattr(api, method)(path)
    assert response.status_code == 405
    assert "detail" in response.json()


@pytest.mark.parametrize("path", ["/v1/nothing", "/v1/webhooks/subscriptions/", "/v1/webhooks/subscriptions/a/b/c"])
def test_unknown_api_paths_are_a_json_404(api, path, settings):
    settings.DEBUG = True  # even where Django would show its HTML debug page
    response = api.get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
