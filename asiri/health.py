"""Health checks for load balancers and orchestrators, answered before any other middleware.

`/healthz`: the process is up (no I/O). `/readyz`: the database answers within a short timeout and
has every migration this code needs (`"database": "migrations pending"` until the release step has run
`migrate`), else 503. The database is the only readiness condition: every operation works without the broker
(deliveries are rows, wake-ups a hint), so a broker outage reads `"status": "degraded"` with 200 and
no load balancer takes a web node out for it. Neither needs a key, and neither says which versions
or hosts are behind it. They come first so a probe's Host header (often an IP address) does not
have to be in DJANGO_ALLOWED_HOSTS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from kombu import Connection

from core.outages import BROKER, DATABASE
from core.schema import MIGRATIONS, pending_line, pending_migrations

logger = logging.getLogger(__name__)

BROKER_TIMEOUT = 2.0


def database_state() -> str:
    """What readiness says of the database: "ok", "unavailable" or "migrations pending"."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        pending = pending_migrations()
    except Exception as exc:
        DATABASE.failed(logger, "readiness", exc)
        return "unavailable"
    DATABASE.ended(logger)
    if pending:
        MIGRATIONS.failed(logger, "readiness", pending_line(pending))
        return "migrations pending"
    MIGRATIONS.ended(logger)
    return "ok"


def broker_ready() -> bool:
    try:
        with Connection(
            settings.CELERY_BROKER_URL,
            transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
            connect_timeout=BROKER_TIMEOUT,
        ) as broker:
            broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
    except Exception as exc:
        BROKER.failed(logger, "readiness", exc)
        return False
    BROKER.ended(logger)
    return True


def readiness() -> JsonResponse:
    checks = {"database": database_state(), "broker": "ok" if broker_ready() else "unavailable"}
    status = "unavailable" if checks["database"] != "ok" else "ok" if checks["broker"] == "ok" else "degraded"
    response = JsonResponse({"status": status, "checks": checks}, status=503 if status == "unavailable" else 200)
    # Said by the outage's own lines (core.outages): not again by django.request, an ERROR per probe.
    response._has_been_logged = True
    return response


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/healthz" and request.method in ("GET", "HEAD"):
            return JsonResponse({"status": "ok"})
        if request.path == "/readyz" and request.method in ("GET", "HEAD"):
            return readiness()
        return self.get_response(request)
