"""What the admin dashboard shows: recent outcomes, success rates, the worst endpoints, the backlog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Pulse

# Beat runs the dispatcher every second: this much silence means it is not running.
DISPATCHER_SILENCE_WARNING = 30


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


def _buckets(since: datetime, trunc, step: timedelta, count: int) -> list[Bucket]:
    rows = (
        Delivery.objects.filter(created_at__gte=since, status__in=[DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED])
        .annotate(bucket=trunc("created_at"))
        .values("bucket")
        .annotate(total=Count("id"), succeeded=Count("id", filter=Q(status=DeliveryStatus.SUCCEEDED)))
    )
    by_start = {row["bucket"]: row for row in rows}
    first = trunc_value(since, step)
    buckets = []
    for n in range(count):
        start = first + n * step
        row = by_start.get(start, {"total": 0, "succeeded": 0})
        buckets.append(Bucket(start, row["total"], row["succeeded"]))
    return buckets


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
        "hourly": _buckets(now - timedelta(hours=23), TruncHour, timedelta(hours=1), 24),
        "daily": _buckets(now - timedelta(days=6), TruncDay, timedelta(days=1), 7),
        "top_failing": list(failing),
        "backlog": backlog["due"],
        "oldest_due_seconds": backlog["oldest_due_seconds"],
        "dispatcher_age_seconds": (pulse := Pulse.age_seconds(Pulse.DISPATCHER, now)),
        "dispatcher_silent": pulse is None or pulse > DISPATCHER_SILENCE_WARNING,
    }
