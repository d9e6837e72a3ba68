from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis
from django.db import connection
from rest_framework.test import APIClient

from deliveries import ratelimit, shutdown, wakeups
from deliveries.models import Attempt, Delivery, DeliveryStatus, Event
from tenants import throttling
from tenants.models import ApiKey, Tenant
from webhooks.models import Subscription

ALL_SCOPES = ["webhooks:read", "webhooks:write", "audit:read"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """tests/unit needs nothing started (`make test-unit`); everything else runs on PostgreSQL and Redis."""
    if os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        return
    if any(not item.nodeid.startswith("tests/unit/") for item in items):
        raise pytest.UsageError(
            "The suite runs on PostgreSQL: set DATABASE_URL (and CELERY_BROKER_URL), or use `make test` "
            "(`make test-unit` runs tests/unit with nothing started)."
        )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Close connections other threads left open (the live server's request threads keep
    theirs), so the test database can be dropped at the end of the run."""
    yield
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _local_only(settings) -> None:
    """No test asks a real DNS server; delivery tests opt in to private (loopback) targets."""
    settings.ASIRI_RESOLVER = "tests.support.resolver.local_resolve"
    settings.ASIRI_ALLOW_PRIVATE_URLS = False
    settings.ASIRI_REQUIRE_HTTPS = True


@pytest.fixture(autouse=True)
def _redis_reachable_and_no_shutdown() -> None:
    """A test that made Redis look down, or started a shutdown, must not change how the next one runs."""
    yield
    for breaker in (throttling.breaker, ratelimit.breaker, wakeups.breaker):
        breaker.reset()
    shutdown.reset()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class Connections:
    hosts: list[str] = field(default_factory=list)  # every host connected to, loopback or not
    stopped: list[str] = field(default_factory=list)  # the ones that were not loopback


@pytest.fixture(autouse=True)
def connections(monkeypatch) -> Iterator[Connections]:
    """Every connection this process makes during the test; one to anything but loopback fails it.

    It is stopped before it leaves the machine, and fails the test even when the code under test
    swallows the error: no test contacts another address, not even when the guard it tests is broken.
    """
    seen = Connections()

    def guard(real):
        def connect(sock: socket.socket, address, *args):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                seen.hosts.append(address[0])
                if not _is_loopback(address[0]):
                    seen.stopped.append(address[0])
                    raise OSError(errno.ENETUNREACH, f"tests connect only to loopback, not {address[0]}")
            return real(sock, address, *args)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guard(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(socket.socket.connect_ex))
    yield seen
    assert seen.stopped == [], f"the test tried to connect to {seen.stopped}"


@pytest.fixture
def empty_broker(settings) -> None:
    """A broker with no tasks left over from another test (make test gives the suite its own Redis db)."""
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


@pytest.fixture
def alice(db) -> Tenant:
    return Tenant.objects.create(slug="alice", name="Alice Inc.")


@pytest.fixture
def charlie(db) -> Tenant:
    return Tenant.objects.create(slug="charlie", name="Charlie Ltd.")


@pytest.fixture
def make_key(db) -> Callable[..., str]:
    def make(tenant: Tenant, scopes: list[str] | None = None, **kwargs) -> str:
        return ApiKey.issue(tenant=tenant, scopes=ALL_SCOPES if scopes is None else scopes, **kwargs)[1]

    return make


@pytest.fixture
def client_for(make_key) -> Callable[..., APIClient]:
    def make(tenant: Tenant, scopes: list[str] | None = None) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(tenant, scopes)}")
        return client

    return make


@pytest.fixture
def api(alice, client_for) -> APIClient:
    """Alice's client with every scope."""
    return client_for(alice)


@pytest.fixture
def make_failed_delivery(db) -> Callable[..., Delivery]:
    """A delivery that failed every attempt with the same answer: what support requests are about."""

    def make(
        subscription: Subscription,
        *,
        attempts: int = 2,
        code: int = 503,
        body: str = "unavailable",
        data: dict | None = None,
    ) -> Delivery:
        event = Event.objects.create(tenant=subscription.tenant, type="invoice.paid", data=data or {})
        delivery = Delivery.objects.create(
            tenant=subscription.tenant,
            event=event,
            subscription=subscription,
            event_type=event.type,
            status=DeliveryStatus.FAILED,
            attempt_count=attempts,
            response_status_code=code,
            failure_reason=f"HTTP {code}",
        )
        Attempt.objects.bulk_create(
            Attempt(
                delivery=delivery,
                number=n,
                duration_ms=31,
                response_status_code=code,
                error=f"HTTP {code}",
                response_body=body,
                response_headers={"retry-after": "120", "content-type": "text/plain"},
            )
            for n in range(1, attempts + 1)
        )
        return delivery

    return make


@pytest.fixture
def make_subscription(db) -> Callable[..., Subscription]:
    def make(tenant: Tenant, url: str = "https://hooks.example.com/asiri", **fields) -> Subscription:
        return Subscription.objects.create(tenant=tenant, url=url, events=fields.pop("events", ["*"]), **fields)

    return make
