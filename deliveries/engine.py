"""The worker side: claim due deliveries, send them concurrently, record every outcome.

The database is the source of truth. A delivery is due when it is pending or retrying and
its next_attempt_at has passed; claiming it pushes next_attempt_at past a lease, so a worker
that dies mid-send only delays it. No retry ever waits in the broker.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from deliveries import http, ratelimit
from deliveries.metrics import count_outcomes
from deliveries.models import Attempt, Delivery, DeliveryStatus
from deliveries.retry import next_delay
from deliveries.signing import signature_header
from webhooks.models import Subscription

logger = logging.getLogger(__name__)

CLAIM_OVERSCAN = 4  # look at this many candidates per free slot, to skip saturated endpoints
FLUSH_TICK = 0.05
FLUSH_BATCH = 50
FLUSH_AGE = 0.1
THROTTLED_POLL = 0.1
SCHEDULE_BATCH = 1000
IDLE_LINGER = 0.25  # a pump with nothing to do keeps looking this long before it stops
LOST_ATTEMPT = "No result recorded: the worker stopped during this attempt."


@dataclass
class Claimed:
    delivery: Delivery
    attempt: Attempt
    claimed_at: datetime


@dataclass
class PumpStats:
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    retrying: int = 0
    max_in_flight: int = 0
    reclaim: bool = False  # stopped with work left: hand over to a fresh task

    def __str__(self) -> str:
        return (
            f"sent {self.sent}: {self.succeeded} succeeded, {self.retrying} retrying, {self.failed} failed; "
            f"at most {self.max_in_flight} in flight"
        )


def claim_due(
    *,
    limit: int,
    busy: Counter | None = None,
    only_ids: list[str] | None = None,
    throttled: dict[str, float] | None = None,
) -> list[Claimed]:
    """Claim up to `limit` due deliveries, at most the per-endpoint share for each subscription.

    1. Lock candidates with SKIP LOCKED, so concurrent workers take different rows.
    2. Keep those whose subscription still has room in this process's per-endpoint share
       and, for a subscription with a `rate_limit`, in its shared one-second window.
    3. Count the attempt, push next_attempt_at past the lease, and write the attempt rows,
       all before any request is made.

    `throttled` maps a subscription to the monotonic time its window has room again; this
    call reads it to skip those subscriptions and adds to it.
    """
    if limit <= 0:
        return []
    busy = busy if busy is not None else Counter()
    throttled = throttled if throttled is not None else {}
    share = settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT
    now = timezone.now()
    clock = time.monotonic()
    for subscription_id in [s for s, until in throttled.items() if until <= clock]:
        del throttled[subscription_id]
    with transaction.atomic():
        candidates = Delivery.objects.due(now)
        if only_ids is not None:
            candidates = candidates.filter(pk__in=only_ids)
        held_back = [subscription for subscription, n in busy.items() if n >= share] + list(throttled)
        if held_back:
            # Otherwise one endpoint's backlog could fill every candidate slot and starve the rest.
            candidates = candidates.exclude(subscription_id__in=held_back)
        rows = (
            candidates.order_by("next_attempt_at")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list(
                "id",
                "subscription_id",
                "is_test",
                "subscription__active",
                "subscription__deleted_at",
                "subscription__rate_limit",
                "attempt_count",
                "series_start",
            )[: limit * CLAIM_OVERSCAN]
        )
        picked: list[tuple[str, str]] = []
        rate_limits: dict[str, int] = {}
        stopped: dict[str, list[str]] = {}
        taken = Counter()
        exhausted: list[str] = []
        most_attempts = len(settings.ASIRI_RETRY_SCHEDULE) + 1
        # Among what is due, test sends go first: a person is waiting for one, and on a rate-limited
        # endpoint its slot can tie with the backlog's next. Stable, so the rest stay oldest first;
        # test sends are few (they have their own, lower per-key limit).
        rows = sorted(rows, key=lambda row: not row[2])
        for delivery_id, subscription_id, is_test, active, deleted_at, rate_limit, attempts, series_start in rows:
            if attempts - series_start >= most_attempts:
                # Every attempt of the series was made but no outcome could be recorded (a worker
                # crashing on this delivery, say): end it rather than loop.
                exhausted.append(delivery_id)
            elif deleted_at is not None or (not is_test and not active):
                # Paused, disabled or deleted since it was scheduled: it ends here, unsent.
                stopped.setdefault(subscription_id, []).append(delivery_id)
            elif busy[subscription_id] + taken[subscription_id] < share:
                picked.append((delivery_id, subscription_id))
                taken[subscription_id] += 1
                if rate_limit is not None:
                    rate_limits[subscription_id] = rate_limit
                if len(picked) == limit:
                    break
        if exhausted:
            Delivery.objects.filter(pk__in=exhausted).update(
                status=DeliveryStatus.FAILED,
                next_attempt_at=None,
                failure_reason=f"Gave up: no outcome was recorded for {most_attempts} attempts.",
            )
        for subscription_id, delivery_ids in stopped.items():
            subscription = Subscription.objects.get(pk=subscription_id)
            Delivery.objects.filter(pk__in=delivery_ids).update(
                status=DeliveryStatus.FAILED,
                next_attempt_at=None,
                failure_reason=f"Stopped: {stop_reason(subscription)}",
            )
        chosen, held = _within_rate_limits(picked, rate_limits, taken)
        for subscription_id, wait in held.items():
            throttled[subscription_id] = clock + wait
        if chosen:
            Delivery.objects.filter(pk__in=chosen).update(
                attempt_count=F("attempt_count") + 1,
                last_attempt_at=now,
                next_attempt_at=now + timedelta(seconds=settings.ASIRI_DELIVERY_LEASE),
            )
        for subscription_id, wait in held.items():
            _schedule_by_rate(subscription_id, rate_limits[subscription_id], now, start=now + timedelta(seconds=wait))
        if not chosen:
            return []
        # An attempt left without a result was cut short by a worker that died.
        Attempt.objects.filter(delivery_id__in=chosen, duration_ms__isnull=True, error="").update(error=LOST_ATTEMPT)
        deliveries = list(Delivery.objects.filter(pk__in=chosen).select_related("event", "subscription"))
        attempts = Attempt.objects.bulk_create(
            [Attempt(delivery=d, number=d.attempt_count, started_at=now) for d in deliveries]
        )
    return [Claimed(d, a, now) for d, a in zip(deliveries, attempts, strict=True)]


def _within_rate_limits(
    picked: list[tuple[str, str]], rate_limits: dict[str, int], taken: Counter
) -> tuple[list[str], dict[str, float]]:
    """The picked ids that fit their subscription's rate limit, oldest first, and for each
    subscription that got fewer than it wanted, the seconds until its window has room."""
    answers = ratelimit.take_sends({sub: (limit, taken[sub]) for sub, limit in rate_limits.items()})
    allowed = {sub: granted for sub, (granted, _) in answers.items()}
    held = {sub: wait for sub, (granted, wait) in answers.items() if granted < taken[sub]}
    kept = []
    for delivery_id, subscription_id in picked:
        if subscription_id in allowed:
            if allowed[subscription_id] == 0:
                continue
            allowed[subscription_id] -= 1
        kept.append(delivery_id)
    return kept, held


def _schedule_by_rate(subscription_id: str, rate_limit: int, now: datetime, *, start: datetime) -> None:
    """Give a rate-limited subscription's due deliveries the times its window will have room
    for them, 1/rate apart from `start`, test sends first, then oldest first.

    Left due, they would be what every claim scans first, what the dispatcher wakes workers for
    every second, and what the backlog metrics count as late, though nothing is wrong. Rows
    another worker holds are skipped; a slot that turns out taken is rescheduled the same way.
    """
    rows = list(
        Delivery.objects.due(now)
        .filter(subscription_id=subscription_id)
        .order_by("-is_test", "next_attempt_at", "id")
        .select_for_update(skip_locked=True)
        .values_list("id", flat=True)
    )
    if not rows:
        return
    gap = timedelta(seconds=1.0 / rate_limit)
    for first in range(0, len(rows), SCHEDULE_BATCH):
        batch = rows[first : first + SCHEDULE_BATCH]
        slots = [When(pk=delivery_id, then=Value(start + (first + n) * gap)) for n, delivery_id in enumerate(batch)]
        Delivery.objects.filter(pk__in=batch).update(next_attempt_at=Case(*slots))


def stop_reason(subscription: Subscription) -> str:
    if subscription.is_deleted:
        return "the subscription was deleted."
    return f"the subscription is disabled ({subscription.disabled_reason or 'paused by the tenant'})."


def request_for(delivery: Delivery, now: datetime) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(delivery.event.payload(), separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = int(now.timestamp())
    headers = {
        "content-type": "application/json",
        "user-agent": settings.ASIRI_USER_AGENT,
        "webhook-id": delivery.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(delivery.subscription.signing_secrets(now), delivery.id, timestamp, body),
    }
    return body, headers


def describe_failure(result: http.HttpResult) -> str:
    if result.status_code is None:
        return result.error
    text = f"HTTP {result.status_code}"
    if 300 <= result.status_code < 400:
        text += f": redirect not followed (Location: {result.location or 'none'})"
    elif result.status_code == 410:
        text += " Gone: the endpoint asked to stop receiving"
    return text


def record_outcomes(outcomes: list[tuple[Claimed, http.HttpResult]]) -> PumpStats:
    """Write attempts and delivery states in bulk, then act on what the endpoints said.

    A delivery's row is only updated while it still belongs to this claim (its
    last_attempt_at is the claim's time): a result that comes back after the lease ran out
    and another worker took over does not overwrite the newer attempt.
    """
    stats = PumpStats()
    if not outcomes:
        return stats
    now = timezone.now()
    attempts = []
    grouped: dict[tuple, list[str]] = {}
    retries: list[tuple[Claimed, dict]] = []
    healthy, failing, gone = set(), set(), set()
    for claimed, result in outcomes:
        attempt = claimed.attempt
        attempt.duration_ms = result.duration_ms
        attempt.response_status_code = result.status_code
        attempt.response_body = result.body
        attempt.error = "" if result.ok else describe_failure(result)
        attempts.append(attempt)
        logger.info(
            "attempt %s of %s: %s",
            attempt.number,
            claimed.delivery.id,
            result.status_code or attempt.error,
            extra={
                "tenant_id": claimed.delivery.tenant_id,
                "subscription_id": claimed.delivery.subscription_id,
                "event_id": claimed.delivery.event_id,
                "delivery_id": claimed.delivery.id,
                "attempt": attempt.number,
                "outcome": "succeeded" if result.ok else "failed",
                "duration_ms": result.duration_ms,
            },
        )
        delivery = claimed.delivery
        counted = not delivery.is_test  # test sends never change a subscription's health
        if result.ok:
            stats.succeeded += 1
            values = {"status": DeliveryStatus.SUCCEEDED, "next_attempt_at": None, "failure_reason": ""}
            if counted:
                healthy.add(delivery.subscription_id)
        else:
            if counted:
                failing.add(delivery.subscription_id)
                if result.status_code == 410:
                    gone.add(delivery.subscription_id)
            delay = None
            if result.status_code != 410:
                delay = next_delay(
                    delivery.attempt_count - delivery.series_start,
                    settings.ASIRI_RETRY_SCHEDULE,
                    retry_after=result.retry_after if result.status_code in (429, 503) else None,
                )
            if delay is None:
                stats.failed += 1
                values = {"status": DeliveryStatus.FAILED, "next_attempt_at": None, "failure_reason": attempt.error}
            else:
                stats.retrying += 1
                retries.append(
                    (
                        claimed,
                        {
                            "status": DeliveryStatus.RETRYING,
                            "next_attempt_at": now + timedelta(seconds=delay),
                            "failure_reason": attempt.error,
                            "response_status_code": result.status_code,
                        },
                    )
                )
                continue
        values["response_status_code"] = result.status_code
        key = (claimed.claimed_at, *sorted(values.items()))
        grouped.setdefault(key, []).append(delivery.id)
    stats.sent = len(outcomes)
    with transaction.atomic():
        _finish_attempts(attempts)
        for (claimed_at, *items), ids in grouped.items():
            Delivery.objects.filter(pk__in=ids, last_attempt_at=claimed_at).update(**dict(items))
        for claimed, values in retries:
            Delivery.objects.filter(pk=claimed.delivery.pk, last_attempt_at=claimed.claimed_at).update(**values)
        _update_subscription_health(now, healthy=healthy - failing, failing=failing - healthy, gone=gone)
    # Counted once the outcomes are committed, so metrics never run ahead of the database.
    count_outcomes([result for _, result in outcomes], stats)
    return stats


def _finish_attempts(attempts: list[Attempt]) -> None:
    """One UPDATE … FROM (VALUES …) for a batch: Django's bulk_update builds a CASE per column
    and row, which profiling showed to be a third of a worker's time."""
    table = Attempt._meta.db_table
    rows = ", ".join(["(CAST(%s AS bigint), CAST(%s AS integer), CAST(%s AS integer), %s, %s)"] * len(attempts))
    params = []
    for a in attempts:
        params += [a.pk, a.duration_ms, a.response_status_code, a.response_body, a.error]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET duration_ms = v.column2, response_status_code = v.column3, "  # noqa: S608
            f"response_body = v.column4, error = v.column5 FROM (VALUES {rows}) AS v WHERE {table}.id = v.column1",
            params,
        )


def _update_subscription_health(now: datetime, *, healthy: set, failing: set, gone: set) -> None:
    if healthy:
        Subscription.objects.filter(pk__in=healthy, failing_since__isnull=False).update(failing_since=None)
    if failing:
        Subscription.objects.filter(pk__in=failing, failing_since__isnull=True).update(failing_since=now)
        cutoff = now - timedelta(hours=settings.ASIRI_DISABLE_AFTER_HOURS)
        worn_out = list(
            Subscription.objects.filter(pk__in=failing - gone, active=True, failing_since__lte=cutoff).values_list(
                "pk", flat=True
            )
        )
        if worn_out:
            hours = f"{settings.ASIRI_DISABLE_AFTER_HOURS:g}"
            disable_subscriptions(worn_out, f"Disabled automatically: no successful delivery for {hours} hours.")
    if gone:
        disable_subscriptions(
            list(gone),
            f"Disabled automatically: the endpoint answered 410 Gone at {now.isoformat(timespec='seconds')}.",
        )


def disable_subscriptions(subscription_ids: list[str], reason: str) -> None:
    Subscription.objects.filter(pk__in=subscription_ids, active=True).update(
        active=False, disabled_reason=reason, updated_at=timezone.now()
    )
    stop_pending(subscription_ids, f"Stopped: {reason}")


def stop_pending(subscription_ids, reason: str) -> int:
    """End the in-flight deliveries of these subscriptions as failed (test sends excepted)."""
    return (
        Delivery.objects.filter(subscription_id__in=subscription_ids, is_test=False)
        .in_flight()
        .update(status=DeliveryStatus.FAILED, next_attempt_at=None, failure_reason=reason)
    )


def pump(*, budget_seconds: float | None = None) -> PumpStats:
    """Keep up to ASIRI_SEND_CONCURRENCY sends in flight until nothing is due or time is up.

    Slots freed by fast endpoints are refilled at once, while a slow endpoint can hold no more
    than its per-endpoint share, so it slows only itself.
    """
    budget = settings.ASIRI_PUMP_SECONDS if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    capacity = settings.ASIRI_SEND_CONCURRENCY
    refill_at = max(1, capacity // 4)
    sender = http.sender()
    in_flight: dict[concurrent.futures.Future, Claimed] = {}
    busy: Counter = Counter()
    throttled: dict[str, float] = {}
    total = PumpStats()
    idle_since: float | None = None
    finished: list[tuple[Claimed, http.HttpResult]] = []
    flushed_at = time.monotonic()
    while True:
        free = capacity - len(in_flight)
        if time.monotonic() < deadline and (free >= refill_at or not in_flight):
            claimed = claim_due(limit=free, busy=busy, throttled=throttled)
            for item in claimed:
                in_flight[_submit(sender, item)] = item
                busy[item.delivery.subscription_id] += 1
            total.max_in_flight = max(total.max_in_flight, len(in_flight))
            if not in_flight and not claimed:
                room_at = min(throttled.values(), default=None)
                if room_at is not None and room_at < deadline:
                    # Only rate-limited endpoints have work: wait for their windows rather than for
                    # beat, looking again often enough that new work elsewhere is not held up.
                    time.sleep(min(max(0.0, room_at - time.monotonic()) + 0.001, THROTTLED_POLL))
                    continue
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= IDLE_LINGER:
                    return total
                time.sleep(FLUSH_TICK)
                continue
            idle_since = None
        elif not in_flight:
            total.reclaim = True
            return total
        done, _ = concurrent.futures.wait(in_flight, timeout=FLUSH_TICK, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            item = in_flight.pop(future)
            busy[item.delivery.subscription_id] -= 1
            finished.append((item, future.result()))
        # Outcomes are written in batches: fewer, larger statements, at most FLUSH_AGE late.
        if finished and (len(finished) >= FLUSH_BATCH or not in_flight or time.monotonic() - flushed_at >= FLUSH_AGE):
            _add(total, record_outcomes(finished))
            finished, flushed_at = [], time.monotonic()


def _submit(sender, item: Claimed) -> concurrent.futures.Future:
    body, headers = request_for(item.delivery, item.claimed_at)
    return sender.submit(item.delivery.subscription.url, body, headers)


def send_now(delivery_ids: list[str]) -> PumpStats:
    """Claim and send just these deliveries (a test send, a redelivery), whatever else is due.

    The priority queue's task: a person is waiting for this, so it never joins a backlog. A
    delivery another worker already holds, or whose endpoint's rate limit is full, is left
    to the pumps.
    """
    claimed = claim_due(limit=len(delivery_ids), only_ids=delivery_ids)
    if not claimed:
        return PumpStats()
    sender = http.sender()
    in_flight = {_submit(sender, item): item for item in claimed}
    results = [(in_flight[future], future.result()) for future in concurrent.futures.as_completed(in_flight)]
    stats = record_outcomes(results)
    stats.max_in_flight = len(claimed)
    return stats


def _add(total: PumpStats, part: PumpStats) -> None:
    total.sent += part.sent
    total.succeeded += part.succeeded
    total.failed += part.failed
    total.retrying += part.retrying
