"""Every answer under /v1 is JSON: routed or not, any method, with or without a key, even when Django refuses.

Requests go through Django's test Client with CSRF enforced, as in production: the default test
Client skips the check, and would hide the HTML 403 page that a view left to it answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from deliveries.models import Delivery, Event, Recovery
from tenants.ids import random_token
from tenants.models import KEY_PREFIX, parse_key
from tests.support.canary import Canary
from tests.support.processes import free_port, gunicorn, serves_healthz, wait_until
from webhooks.models import EventType, Subscription
from webhooks.views import SubscriptionViewSet

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
ALL_SCOPES = ["webhooks:read", "webhooks:write", "audit:read", "events:write"]


def api_routes(patterns: list | None = None, prefix: str = "", params: frozenset = frozenset()) -> Iterator:
    """(name, URL parameter names) of every named route under /v1/, read from the URL conf."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern).lstrip("^")
        names = params | set(entry.pattern.regex.groupindex)
        if isinstance(entry, URLResolver):
            yield from api_routes(entry.url_patterns, route, names)
        elif isinstance(entry, URLPattern) and entry.name and route.startswith("v1/"):
            yield entry.name, names


ROUTES = sorted(api_routes())
UNKNOWN_PATHS = [
    "/v1",
    "/v1/",
    "/v1/nothing",
    "/v1/webhooks/subscriptions/",
    "/v1/webhooks/subscriptions/{sub}/something-not-there",
    "/v1/webhooks/subscriptions/{sub}/deliveries/{dlv}/nope",
    "/v1/events/",
    "/v1/%FF%FE",  # not UTF-8
]


@pytest.fixture
def key(alice, make_key) -> str:
    return make_key(alice, ALL_SCOPES)


@pytest.fixture
def targets(alice) -> dict[str, str]:
    """Ids of Alice's own subscription and delivery, so the right key reaches each handler, not a 404."""
    subscription = Subscription.objects.create(tenant=alice, url="https://hooks.example.com/a", events=["*"])
    event = Event.objects.create(tenant=alice, type="invoice.paid", data={})
    delivery = Delivery.objects.create(
        tenant=alice, event=event, subscription=subscription, event_type=event.type, status="failed", attempt_count=1
    )
    recovery = Recovery.objects.create(
        tenant=alice, subscription=subscription, since=timezone.now(), until=timezone.now()
    )
    EventType.objects.create(name="invoice.paid", schema={"type": "object"}, example={})
    return {
        "pk": subscription.id,
        "subscription_id": subscription.id,
        "delivery_id": delivery.id,
        "event_id": event.id,
        "recovery_id": recovery.id,
        "name": "invoice.paid",
    }


def answers(path: str, key: str) -> Iterator[tuple[str, str, HttpResponse]]:
    """Every method with no key, a wrong key and the right key: (label, method, response)."""
    callers = {"no key": {}, "wrong key": "asiri_AAAAAAAAAAAA_" + "B" * 40, "right key": key}
    client = Client(enforce_csrf_checks=True)
    for caller, secret in callers.items():
        headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
        for method in METHODS:
            body = "{}" if method in ("POST", "PUT", "PATCH") else ""
            response = client.generic(method, path, body, content_type="application/json", **headers)
            yield f"{caller}: {method} {path} -> {response.status_code}", method, response


def what_is_wrong(response: HttpResponse, method: str) -> str | None:
    """Why this is not a JSON answer in the documented shape, or None."""
    if response.status_code >= 500:
        return "a server error"
    if response.status_code == 204:
        return "a body on a 204" if response.content else None
    media_type = response.get("Content-Type", "").split(";")[0]
    if media_type != "application/json" and not media_type.endswith("+json"):  # the OpenAPI document is +json
        return f"Content-Type {response.get('Content-Type')!r}"
    if response.status_code == 405 and method in {"", *response.get("Allow", "").split(", ")}:
        return f"Allow {response.get('Allow')!r}"
    if method == "HEAD":
        return "a body on a HEAD" if response.content else None
    body = json.loads(response.content)
    if not isinstance(body, dict):
        return "not a JSON object"
    if response.status_code > 400 and not isinstance(body.get("detail"), str):
        return "no detail"  # a 400 may name fields instead
    return None


@pytest.mark.parametrize(("name", "params"), ROUTES, ids=[name for name, _ in ROUTES])
def test_every_route_answers_every_method_and_caller_in_json(name, params, targets, key):
    path = reverse(name, kwargs={param: targets[param] for param in params})
    wrong = [f"{label}: {problem}" for label, method, r in answers(path, key) if (problem := what_is_wrong(r, method))]
    assert wrong == []


def test_the_walk_reaches_every_operation():
    assert {name for name, _ in ROUTES} == {
        "subscription-list",
        "subscription-detail",
        "subscription-rotate-secret",
        "subscription-deliveries",
        "subscription-test",
        "delivery",
        "delivery-redeliver",
        "subscription-recover",
        "subscription-recovery",
        "events",
        "events-batch",
        "event",
        "openapi",
        "event-type-list",
        "event-type-detail",
        "filter-test",
    }


@pytest.mark.parametrize("path", UNKNOWN_PATHS)
def test_unknown_paths_are_a_json_404_for_every_method_and_caller(path, targets, key):
    path = path.format(sub=targets["pk"], dlv=targets["delivery_id"])
    wrong = [
        label
        for label, method, r in answers(path, key)
        if r.status_code != 404
        or what_is_wrong(r, method)
        or (method != "HEAD" and r.json() != {"detail": "Not found."})
    ]
    assert wrong == []


def test_a_post_to_an_unknown_operation_is_a_404_not_a_forgery(targets, key):
    """The reported case: Django's HTML "CSRF verification failed" 403 came back instead."""
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post(f"/v1/webhooks/subscriptions/{targets['pk']}/something-not-there")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_the_admin_still_checks_csrf(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post("/admin/tenants/tenant/add/", {"slug": "x", "name": "X"})
    assert response.status_code == 403
    assert b"CSRF" in response.content


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_host_that_is_not_allowed_is_a_json_400(method, key):
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_HOST="evil.example")
    response = client.generic(method, "/v1/webhooks/subscriptions", "{}", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"detail": "The Host header names a host this server does not serve."}


def test_a_body_over_djangos_upload_limit_is_a_json_413(key, settings):
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {key}")
    body = json.dumps({"url": "https://hooks.example.com/" + "a" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE})
    response = client.post("/v1/webhooks/subscriptions", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": f"Request body is larger than {settings.ASIRI_MAX_REQUEST_BYTES} bytes."}
    assert not Subscription.objects.exists()


def test_a_crash_is_a_json_500_without_the_traceback(key, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("a secret detail of the crash")

    monkeypatch.setattr(SubscriptionViewSet, "list", crash)
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.get("/v1/webhooks/subscriptions")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}


class RaiseFromMiddleware:
    """Raises what X-Raise names, as Django's own code or a middleware would while handling a request."""

    RAISES = {
        "suspicious": SuspiciousOperation("a secret detail"),
        "too big": RequestDataTooBig("a secret detail"),
        "denied": PermissionDenied("a secret detail"),
        "crash": RuntimeError("a secret detail"),
    }

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raise self.RAISES[request.headers["X-Raise"]]


@pytest.mark.parametrize(
    ("raised", "status", "detail", "html_status"),
    [
        ("suspicious", 400, "Bad request.", 400),
        ("too big", 413, "Request body is too large.", 400),
        ("denied", 403, "You do not have permission to perform this action.", 403),
        ("crash", 500, "Internal server error.", 500),
    ],
)
def test_djangos_own_error_answers_are_json_under_v1_and_html_elsewhere(
    raised, status, detail, html_status, settings, db
):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.RaiseFromMiddleware"]
    client = Client(raise_request_exception=False, HTTP_X_RAISE=raised)
    response = client.post("/v1/webhooks/subscriptions", "{}", content_type="application/json")
    assert response.status_code == status
    assert response.json() == {"detail": detail}
    response = client.post("/admin/", "{}", content_type="application/json")
    assert response.status_code == html_status
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.integration
def test_the_api_answers_503_with_retry_after_while_its_database_cannot_be_reached():
    closed = Canary()  # bound, never listening: PostgreSQL down, every connection refused
    port = free_port()
    database = f"postgres://postgres@127.0.0.1:{closed.port}/asiri"
    with gunicorn(port, workers=1, DATABASE_URL=database) as web:
        base = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: serves_healthz(port), timeout=30)
        # Well formed, so authentication goes to the database to look it up.
        well_formed = f"{KEY_PREFIX}{random_token(12)}_{random_token(40)}"
        assert parse_key(well_formed)
        key = {"Authorization": f"Bearer {well_formed}", "Content-Type": "application/json"}
        answers = []
        for _ in range(5):
            answers += [
                requests.get(f"{base}/v1/webhooks/subscriptions", headers=key, timeout=10),
                requests.post(f"{base}/v1/events", headers=key, json={"type": "invoice.paid", "data": {}}, timeout=10),
            ]
        ready = [requests.get(f"{base}/readyz", timeout=10) for _ in range(3)]
        # A signed-in support person's page: their session is in the database.
        session = {"sessionid": random_token(32)}
        pages = [requests.get(f"{base}/admin/", cookies=session, timeout=10, allow_redirects=False) for _ in range(2)]
    for page in pages:
        assert page.status_code == 503 and page.headers["Retry-After"] == "5", page.text
        assert page.headers["Content-Type"].startswith("text/plain") and "database cannot be reached" in page.text
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5" and "database" in answer.json()["detail"]
    assert [answer.status_code for answer in ready] == [503] * 3
    # The outage is said once (core.outages), with why, not once per request and probe with a traceback; the
    # access log still has a line for each 503.
    log = "".join(web.lines)
    assert log.count("the database cannot be reached") == 1, log
    assert f"port {closed.port} failed: Connection refused" in log, log
    assert log.count("/v1/events 503") == 5, log
    assert "Traceback" not in log and "Internal Server Error" not in log and "Service Unavailable" not in log, log
