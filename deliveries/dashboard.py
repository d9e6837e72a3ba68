"""What the admin dashboard shows: recent outcomes, success rates, the worst endpoints, the backlog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, Min, OuterRef, Q, Subquery
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from deliveries.models import Attempt, Delivery, DeliveryStatus, Pulse
from webhooks.models import Subscription

# Beat runs the dispatcher every second: this much silence means it is not running.
DISPATCHER_SILENCE_WARNING = 30
FAILING_NOW_ROWS = 20


@dataclass
class Bucket:
    start: datetime
    total: int
    succeeded: int

    @property
    def rate(self) -> float | None:
        return self.succeeded / self.total if self.total else None


def _status_counts(since: datetime) -> dict[str, int]:
    rows = Delivery.objects.filter(created_at__gte=since).values("status").annotate(n=Count("id"))
    counts = {status: 0 for status in DeliveryStatus.values}
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def trunc_value(moment: datetime, step: timedelta) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if step >= timedelta(days=1) else moment


def dashboard_stats(now: datetime | None = None) -> dict:
    now = now or timezone.now()
    day_ago, week_ago = now - timedelta(hours=24), now - timedelta(days=7)
    backlog = Delivery.objects.backlog(now)
    failing = (
        Delivery.objects.filter(created_at__gte=day_ago, status=DeliveryStatus.FAILED, is_test=False)
        .values("subscription_id", "subscription__url", "subscription__tenant__slug")
        .annotate(failed=Count("id"))
        .order_by("-failed")[:10]
    )
    return {
        "last_24h": _status_counts(day_ago),
        "last_7d": _status_counts(week_ago),
        "hourly": _attempt_buckets(now - timedelta(hours=23), TruncHour, timedelta(hours=1), 24),
        "daily": _attempt_buckets(now - timedelta(days=6), TruncDay, timedelta(days=1), 7),
        "top_failing": list(failing),
        "failing_now": failing_now(),
        "failing_now_more": Subscription.objects.live().filter(failing_since__isnull=False).count() > FAILING_NOW_ROWS,
        "backlog": backlog["due"],
        "oldest_due_seconds": backlog["oldest_due_seconds"],
        "dispatcher_age_seconds": (pulse := Pulse.age_seconds(Pulse.DISPATCHER, now)),
        "dispatcher_silent": pulse is None or pulse > DISPATCHER_SILENCE_WARNING,
    }


def failing_now() -> list[dict]:
    """Endpoints whose latest attempt failed (Subscription.failing_since is set on a failed attempt,
    retrying or not, and cleared by a success), longest failing first, with the last error and how
    many deliveries wait for them.

    Each subquery is one descent of a per-subscription index (delivery_log, delivery_due_by_subscription).
    """
    deliveries = Delivery.objects.filter(subscription=OuterRef("pk"))
    last_failure = deliveries.filter(is_test=False).exclude(failure_reason="").order_by("-created_at")
    waiting = deliveries.in_flight().order_by().values("subscription").annotate(n=Count("*")).values("n")
    return list(
        Subscription.objects.live()
        .filter(failing_since__isnull=False)
        .order_by("failing_since")
        .annotate(
            last_error=Subquery(last_failure.values("failure_reason")[:1]),
            waiting=Subquery(waiting[:1]),
        )
        .values("id", "url", "tenant__slug", "failing_since", "last_error", "waiting")[:FAILING_NOW_ROWS]
    )


def _attempt_buckets(since: datetime, trunc, step: timedelta, count: int) -> list[Bucket]:
    """Attempts with an outcome per period, and how many were answered 2xx: a retrying delivery's
    failures count at once, not only when the delivery ends a day later."""
    first = trunc_value(since, step)
    start_id = _first_attempt_id(first)
    rows = []
    if start_id is not None:
        rows = (
            Attempt.objects.filter(id__gte=start_id, started_at__gte=first)
            .filter(Q(duration_ms__isnull=False) | ~Q(error=""))  # those with an outcome
            .annotate(bucket=trunc("started_at"))
            .values("bucket")
            .annotate(
                total=Count("id"),
                succeeded=Count("id", filter=Q(response_status_code__gte=200, response_status_code__lt=300)),
            )
        )
    by_start = {row["bucket"]: row for row in rows}
    buckets = []
    for n in range(count):
        start = first + n * step
        row = by_start.get(start, {"total": 0, "succeeded": 0})
        buckets.append(Bucket(start, row["total"], row["succeeded"]))
    return buckets


def _first_attempt_id(since: datetime) -> int | None:
    """The smallest attempt id started at or after `since`, by bisecting the primary key.

    Attempts are numbered as they are written and stamped with the database's time when claimed,
    so ids and start times rise together: some twenty primary-key lookups find where a window
    begins, where a filter on started_at alone (not indexed) would read the whole table.
    """
    bounds = Attempt.objects.aggregate(low=Min("id"), high=Max("id"))
    low, high = bounds["low"], bounds["high"]
    if low is None:
        return None
    high += 1  # the answer lies in [low, high]; high means none
    while low < high:
        middle = (low + high) // 2
        found, started_at = Attempt.objects.filter(id__gte=middle).order_by("id").values_list("id", "started_at")[0]
        if started_at >= since:
            high = middle  # no attempt lies between middle and found
        else:
            low = found + 1
    return low
