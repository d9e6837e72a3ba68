"""Structured logs: one JSON object per line, and one line per API request.

Lines carry ids (request, tenant, subscription, event, delivery), never a key, a signing secret
or an Authorization header: nothing here reads headers other than X-Request-ID (and, through
asiri/proxies.py, X-Forwarded-For from a trusted proxy, for the client address).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import kombu.exceptions
import redis.exceptions
from django.http import HttpRequest, HttpResponse

from asiri.proxies import client_address
from core.outages import BROKER, DATABASE
from core.schema import MIGRATIONS

FIELDS = (
    "request_id",
    "method",
    "path",
    "client",
    "status",
    "tenant_id",
    "subscription_id",
    "event_id",
    "delivery_id",
    "attempt",
    "outcome",
    "duration_ms",
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
request_log = logging.getLogger("asiri.requests")
celery_log = logging.getLogger("asiri.celery")  # asiri/celery.py's, which this module must not import


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class BeatSendingFilter(logging.Filter):
    """Drops beat's line for each task it sends (settings: every second, for the dispatcher), keeping its others."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.WARNING and str(record.msg).startswith("Scheduler: Sending due task"))


class BeatOutageFilter(logging.Filter):
    """Beat's error for each task it could not send, a traceback every second or two while the broker is away,
    becomes the broker's outage lines (core.outages): once when it starts, once a minute, and once when a task
    is sent again (asiri.celery). Before any task was sent, asiri.celery.Scheduler says it instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if str(record.msg).startswith("Message Error") and error is not None and _lost_broker(error):
            BROKER.failed(celery_log, "beat", error)
            return False
        return True  # any other error beat could not send a task for keeps its traceback


def _lost_broker(error: BaseException) -> bool:
    """Whether beat's SchedulingError was caused by a broker it could not reach (kombu's connection error, a
    socket's), not by the task or its arguments."""
    seen = error.__cause__ or error.__context__
    while seen is not None:
        if isinstance(seen, kombu.exceptions.OperationalError | redis.exceptions.ConnectionError | OSError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RequestLogMiddleware:
    """Gives every request an id (X-Request-ID, echoed back) and logs each API request once."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        given = request.headers.get("X-Request-ID", "")
        request.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        if request.path.startswith("/v1/") and 200 <= response.status_code < 300:
            # Every API call that succeeds looked its key up in the database: an outage this process saw is over.
            DATABASE.ended(request_log)
            MIGRATIONS.ended(request_log)
        if request.path.startswith("/v1/"):
            principal = getattr(request, "user", None)  # DRF sets the API key here once authenticated
            request_log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "request_id": request.request_id,
                    "method": request.method,
                    "path": request.path,
                    "client": client_address(request),
                    "status": response.status_code,
                    "tenant_id": getattr(principal, "tenant_id", None),
                    "subscription_id": (
                        getattr(request, "resolver_match", None)
                        and (
                            request.resolver_match.kwargs.get("subscription_id")
                            or request.resolver_match.kwargs.get("pk")
                        )
                    )
                    or None,
                    "duration_ms": int((time.monotonic() - started) * 1000),
                },
            )
        return response
