"""Prometheus metrics of the delivery engine (served at /metrics; docs/operations.md, "Monitoring").

Counters and the histogram are counted where the work happens (worker processes). Under
gunicorn and Celery that is many processes, so with PROMETHEUS_MULTIPROC_DIR set they write to
files there and the exposition adds them up (prometheus_client's multiprocess mode).

The backlog gauges and the dispatcher's pulse are different: they describe the database, not a
process, so they are read from it at scrape time by BacklogCollector instead of being kept in any process.

No label carries a tenant, subscription, event or delivery id: those would make one series per
customer. The JSON logs carry the ids.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

from django.db import DatabaseError
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.clock import database_now
from deliveries.http import FAILURES, HttpResult
from deliveries.models import Delivery, Pulse

logger = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "retrying", "failed")
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", *FAILURES)
# Webhook endpoints answer in tens of milliseconds to the 15 s timeout.
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)

DELIVERIES = Counter(
    "asiri_deliveries",
    "Delivery attempts recorded, by the state the delivery is left in: succeeded, retrying (another attempt is "
    "scheduled) or failed (no more attempts).",
    ["outcome"],
)
ATTEMPTS = Counter(
    "asiri_attempts",
    "Delivery attempts by what came back: the HTTP status class, or why there was no response.",
    ["response_class"],
)
ATTEMPT_DURATION = Histogram(
    "asiri_attempt_duration_seconds",
    "Time from sending a webhook to having its response (or giving up on it).",
    buckets=DURATION_BUCKETS,
)
DISPATCHER_RUNS = Counter("asiri_dispatcher_runs", "Dispatcher runs completed (Celery beat schedules one a second).")

# Every series exists from the start at 0, so rate() and alerts see the first increment.
for _outcome in OUTCOMES:
    DELIVERIES.labels(outcome=_outcome)
for _response_class in RESPONSE_CLASSES:
    ATTEMPTS.labels(response_class=_response_class)


def response_class(result: HttpResult) -> str:
    if result.status_code is None:
        return result.failure if result.failure in FAILURES else "other_error"
    if 100 <= result.status_code < 600:
        return f"{result.status_code // 100}xx"
    return "other_error"


def count_outcomes(results: Iterable[HttpResult], outcomes: dict[str, int]) -> None:
    """Called by the engine once a batch of outcomes is written: `outcomes` counts deliveries by OUTCOMES."""
    for result in results:
        ATTEMPTS.labels(response_class=response_class(result)).inc()
        ATTEMPT_DURATION.observe(result.duration_ms / 1000)
    for outcome in OUTCOMES:
        if outcomes.get(outcome):
            DELIVERIES.labels(outcome=outcome).inc(outcomes[outcome])


def count_dispatcher_run() -> None:
    DISPATCHER_RUNS.inc()


class BacklogCollector(Collector):
    """The backlog, read from the database at each scrape with one query on the `delivery_due`
    partial index (pending and retrying rows only, keyed on next_attempt_at)."""

    def collect(self) -> Iterator[Metric]:
        try:
            now = database_now()
            row = Delivery.objects.backlog(now)
            pulse_age = Pulse.age_seconds(Pulse.DISPATCHER, now)
        except DatabaseError:
            # The process's own counters are still worth serving; /readyz reports the database.
            logger.warning("metrics: could not read the backlog", exc_info=True)
            return
        backlog = GaugeMetricFamily(
            "asiri_deliveries_backlog",
            "Deliveries not finished yet: due (to be sent now), scheduled (waiting for a retry, or being sent) or "
            "waiting (behind an unfinished delivery of their ordering key). Their sum is everything unsent.",
            labels=["state"],
        )
        backlog.add_metric(["due"], row["due"])
        backlog.add_metric(["scheduled"], row["scheduled"])
        backlog.add_metric(["waiting"], row["waiting"])
        yield backlog
        yield GaugeMetricFamily(
            "asiri_oldest_due_delivery_age_seconds",
            "How long the oldest due delivery has been waiting to be sent (0 when none is due).",
            value=row["oldest_due_seconds"] or 0.0,
        )
        yield GaugeMetricFamily(
            "asiri_dispatcher_last_run_age_seconds",
            "Seconds since the dispatcher last ran (+Inf if it never has). It runs every ASIRI_DISPATCH_INTERVAL "
            "seconds; without it no retry is made and no lost wake-up is made up for: alert when it exceeds 30.",
            value=float("inf") if pulse_age is None else pulse_age,
        )


class _ThisProcess(Collector):
    """The default registry (this process's metrics), for use inside another registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_registry() -> CollectorRegistry:
    """The counters of every process on this host (with PROMETHEUS_MULTIPROC_DIR), else of this one."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    return registry


def exposition_registry() -> CollectorRegistry:
    """What /metrics serves: the process counters and the database's backlog."""
    registry = process_registry()
    registry.register(BacklogCollector())
    return registry
