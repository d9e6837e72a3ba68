"""The worker side: claim due deliveries, send them concurrently, record every outcome.

The database is the source of truth. A delivery is due when it is pending or retrying and
its next_attempt_at has passed; claiming it pushes next_attempt_at past a lease, so a worker
that dies mid-send only delays it. No retry ever waits in the broker.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from core.clock import database_now
from deliveries import http, ratelimit, shutdown
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
# A throttled endpoint's due rows are given send times at most this far ahead per claim: the work
# of one claim stays bounded whatever its backlog, and a raised rate_limit applies within a minute.
SCHEDULE_HORIZON = 60.0
IDLE_LINGER = 0.25  # a pump with nothing to do keeps looking this long before it stops
RECORD_TRIES = 3  # writes of one outcome, alone, before its delivery is ended instead
LOST_ATTEMPT = "No result recorded: the worker stopped during this attempt."


@dataclass
class Claimed:
    delivery: Delivery
    attempt: Attempt
    claimed_at: datetime
    started: float = field(default_factory=time.monotonic)


@dataclass
class PumpStats:
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    retrying: int = 0
    abandoned: int = 0
    max_in_flight: int = 0
    reclaim: bool = False  # stopped with work left: hand over to a fresh task

    def __str__(self) -> str:
        text = (
            f"sent {self.sent}: {self.succeeded} succeeded, {self.retrying} retrying, {self.failed} failed; "
            f"at most {self.max_in_flight} in flight"
        )
        return text + (f"; {self.abandoned} given back at shutdown" if self.abandoned else "")


@dataclass
class Triage:
    """What a claim decides about the rows it locked, before it writes anything."""

    picked: list[tuple[str, str]] = field(default_factory=list)  # (delivery, subscription), in send order
    stopped: dict[str, list[str]] = field(default_factory=dict)  # subscription: deliveries that end unsent
    exhausted: list[str] = field(default_factory=list)  # every attempt made, no outcome recorded
    rate_limits: dict[str, int] = field(default_factory=dict)
    taken: Counter = field(default_factory=Counter)
    # Rate-limited subscriptions with more due than one second of their rate: they fill their window.
    filled: set[str] = field(default_factory=set)


def triage(rows: list[tuple], *, busy: Counter, share: int, limit: int) -> Triage:
    """Sort locked candidate rows into those to send, to stop and to end; pure, no I/O.

    Test sends go first: a person is waiting for one, and on a rate-limited endpoint its slot can
    tie with the backlog's next. Stable, so the rest stay oldest first.
    """
    decided = Triage()
    most_attempts = len(settings.ASIRI_RETRY_SCHEDULE) + 1
    for delivery_id, subscription_id, is_test, active, deleted_at, rate_limit, attempts, series_start in sorted(
        rows, key=lambda row: not row[2]
    ):
        if attempts - series_start >= most_attempts:
            # Every attempt of the series was made but no outcome could be recorded (a worker
            # crashing on this delivery, say): end it rather than loop.
            decided.exhausted.append(delivery_id)
        elif deleted_at is not None or (not is_test and not active):
            # Paused, disabled or deleted since it was scheduled: it ends here, unsent.
            decided.stopped.setdefault(subscription_id, []).append(delivery_id)
        elif rate_limit is not None and decided.taken[subscription_id] >= rate_limit:
            # No window takes more than one second of its rate: picking more would only give them back.
            decided.filled.add(subscription_id)
        elif len(decided.picked) < limit and busy[subscription_id] + decided.taken[subscription_id] < share:
            decided.picked.append((delivery_id, subscription_id))
            decided.taken[subscription_id] += 1
            if rate_limit is not None:
                decided.rate_limits[subscription_id] = rate_limit
    return decided


def claim_due(
    *,
    limit: int,
    busy: Counter | None = None,
    only_ids: list[str] | None = None,
    throttled: dict[str, float] | None = None,
) -> list[Claimed]:
    """Claim up to `limit` due deliveries, at most the per-endpoint share for each subscription.

    1. Lock candidates with SKIP LOCKED, so concurrent workers take different rows; triage them.
    2. Lease what goes (next_attempt_at moves past the lease, on the database's clock) and commit,
       so no row lock is held while Redis is asked about rate-limited endpoints.
    3. Ask for room in the rate-limited endpoints' shared one-second windows; give the rest send
       times (a bounded number per claim).
    4. Count the attempts and write their rows, all before any request is made.

    `throttled` maps a subscription to the monotonic time its window has room again; this
    call reads it to skip those subscriptions and adds to it.
    """
    if limit <= 0:
        return []
    busy = busy if busy is not None else Counter()
    throttled = throttled if throttled is not None else {}
    clock = time.monotonic()
    for subscription_id in [s for s, until in throttled.items() if until <= clock]:
        del throttled[subscription_id]
    with transaction.atomic():
        now = database_now()
        lease_end = now + timedelta(seconds=settings.ASIRI_DELIVERY_LEASE)
        candidates = Delivery.objects.due(now)
        if only_ids is not None:
            candidates = candidates.filter(pk__in=only_ids)
        share = settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT
        held_back = [subscription for subscription, n in busy.items() if n >= share] + list(throttled)
        if held_back:
            # Otherwise one endpoint's backlog could fill every candidate slot and starve the rest.
            candidates = candidates.exclude(subscription_id__in=held_back)
            if only_ids is None:
                # Filtered on the due index, a held-back backlog is read row by row in every claim.
                candidates = candidates.filter(
                    pk__in=_due_elsewhere(now, held_back, limit=limit * CLAIM_OVERSCAN, each=share)
                )
        rows = list(
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
        decided = triage(rows, busy=busy, share=share, limit=limit)
        _end_unsendable(decided)
        picked = dict(decided.picked)
        if not decided.rate_limits:
            return _start_attempts(list(picked), now, lease_end)
        # Out of every other claim's sight while the endpoints' windows are asked about.
        Delivery.objects.filter(pk__in=list(picked)).update(next_attempt_at=lease_end)
    chosen, held = _within_rate_limits(decided.picked, decided.rate_limits, decided.taken, filled=decided.filled)
    for subscription_id, wait in held.items():
        throttled[subscription_id] = clock + wait
    with transaction.atomic():
        kept = set(chosen)
        returned = [delivery_id for delivery_id in picked if delivery_id not in kept]
        for subscription_id, wait in held.items():
            _schedule_by_rate(
                subscription_id,
                decided.rate_limits[subscription_id],
                now,
                start=now + timedelta(seconds=wait),
                first=[delivery_id for delivery_id in returned if picked[delivery_id] == subscription_id],
            )
        return _start_attempts(chosen, now, lease_end)


def _start_attempts(delivery_ids: list[str], now: datetime, lease_end: datetime) -> list[Claimed]:
    """Count an attempt for each claimed delivery and write its row, before any request is made."""
    if not delivery_ids:
        return []
    Delivery.objects.filter(pk__in=delivery_ids).update(
        attempt_count=F("attempt_count") + 1, last_attempt_at=now, next_attempt_at=lease_end
    )
    # An attempt left without a result was cut short by a worker that died.
    Attempt.objects.filter(delivery_id__in=delivery_ids, duration_ms__isnull=True, error="").update(error=LOST_ATTEMPT)
    deliveries = list(Delivery.objects.filter(pk__in=delivery_ids).select_related("event", "subscription"))
    attempts = Attempt.objects.bulk_create(
        [Attempt(delivery=d, number=d.attempt_count, started_at=now) for d in deliveries]
    )
    return [Claimed(d, a, now) for d, a in zip(deliveries, attempts, strict=True)]


def _end_unsendable(decided: Triage) -> None:
    if decided.exhausted:
        most_attempts = len(settings.ASIRI_RETRY_SCHEDULE) + 1
        Delivery.objects.filter(pk__in=decided.exhausted).update(
            status=DeliveryStatus.FAILED,
            next_attempt_at=None,
            failure_reason=f"Gave up: no outcome was recorded for {most_attempts} attempts.",
        )
    for subscription_id, delivery_ids in decided.stopped.items():
        subscription = Subscription.objects.get(pk=subscription_id)
        Delivery.objects.filter(pk__in=delivery_ids).update(
            status=DeliveryStatus.FAILED, next_attempt_at=None, failure_reason=f"Stopped: {stop_reason(subscription)}"
        )


def _within_rate_limits(
    picked: list[tuple[str, str]], rate_limits: dict[str, int], taken: Counter, *, filled: set[str] = frozenset()
) -> tuple[list[str], dict[str, float]]:
    """The picked ids that fit their subscription's rate limit, oldest first, and for each
    subscription that got fewer than it wanted, the seconds until its window has room.

    A `filled` subscription granted all it asked (a whole second of its rate) has rows left and a
    window that is full for exactly one second from now.
    """
    answers = ratelimit.take_sends({sub: (limit, taken[sub]) for sub, limit in rate_limits.items()})
    allowed = {sub: granted for sub, (granted, _) in answers.items()}
    held = {sub: wait for sub, (granted, wait) in answers.items() if granted < taken[sub]}
    held |= {sub: ratelimit.WINDOW_SECONDS for sub in filled & set(answers) if allowed[sub] == taken[sub]}
    kept = []
    for delivery_id, subscription_id in picked:
        if subscription_id in allowed:
            if allowed[subscription_id] == 0:
                continue
            allowed[subscription_id] -= 1
        kept.append(delivery_id)
    return kept, held


def _due_elsewhere(now: datetime, held_back: list[str], *, limit: int, each: int) -> list[str]:
    """The ids of the `limit` oldest due deliveries outside `held_back`, at most `each` per subscription.

    The work grows with the number of subscriptions that have deliveries in flight, not with the
    held-back backlogs: a skip scan of `delivery_due_by_subscription` lists those subscriptions
    (one index descent each), then each one's oldest due rows come from the same index.
    """
    table = Delivery._meta.db_table
    in_flight = "status IN ('pending', 'retrying')"  # the partial indexes' own condition
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE subscriptions(id) AS (
                (SELECT subscription_id FROM {table} WHERE {in_flight} ORDER BY subscription_id LIMIT 1)
                UNION ALL
                SELECT (SELECT subscription_id FROM {table} WHERE {in_flight} AND subscription_id > subscriptions.id
                        ORDER BY subscription_id LIMIT 1)
                FROM subscriptions WHERE subscriptions.id IS NOT NULL
            )
            SELECT due.id FROM subscriptions CROSS JOIN LATERAL (
                SELECT id, next_attempt_at FROM {table}
                WHERE subscription_id = subscriptions.id AND {in_flight} AND next_attempt_at <= %s
                ORDER BY next_attempt_at LIMIT %s
            ) AS due
            WHERE subscriptions.id <> ALL(%s)
            ORDER BY due.next_attempt_at LIMIT %s
            """,  # noqa: S608 (the table name is the model's)
            [now, each, held_back, limit],
        )
        return [row[0] for row in cursor.fetchall()]


def _schedule_by_rate(
    subscription_id: str, rate_limit: int, now: datetime, *, start: datetime, first: list[str]
) -> None:
    """Give a rate-limited subscription's due deliveries the times its window will have room
    for them, 1/rate apart: `first` (this claim's own, which it did not get room for) and test
    sends from `start`, then the oldest of the rest after the last send time already given, up to
    SCHEDULE_HORIZON seconds from now.

    Left due, they would be what every claim scans first, what the dispatcher wakes workers for
    every second, and what the backlog metrics count as late, though nothing is wrong. Rows
    another worker holds are skipped; a slot that turns out taken is rescheduled the same way.
    Continuing the schedule, rather than starting it again at `start`, keeps a claim that comes
    back every second from giving another minute's worth of rows the same minute.
    """
    gap = timedelta(seconds=1.0 / rate_limit)
    horizon = now + timedelta(seconds=SCHEDULE_HORIZON)
    rows = list(first)
    due = Delivery.objects.due(now).filter(subscription_id=subscription_id)
    rows += (
        due.filter(is_test=True)
        .order_by("next_attempt_at", "id")
        .select_for_update(skip_locked=True)
        .values_list("id", flat=True)[: max(0, SCHEDULE_BATCH - len(rows))]
    )
    slots = [(delivery_id, start + n * gap) for n, delivery_id in enumerate(rows)]
    # Send times given earlier lie within the horizon; a lease ends beyond it (ASIRI_DELIVERY_LEASE).
    last = (
        Delivery.objects.filter(subscription_id=subscription_id, next_attempt_at__gt=now)
        .filter(next_attempt_at__lte=horizon + timedelta(seconds=ratelimit.WINDOW_SECONDS))
        .in_flight()
        .order_by("-next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    after = max(start + len(slots) * gap, last + gap if last else start)
    room = min(SCHEDULE_BATCH - len(slots), math.ceil((horizon - after) / gap))
    if room > 0:
        backlog = (
            due.filter(is_test=False)
            .order_by("next_attempt_at", "id")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:room]
        )
        slots += [(delivery_id, after + n * gap) for n, delivery_id in enumerate(backlog)]
    if slots:
        _set_send_times(slots)


def _set_send_times(slots: list[tuple[str, datetime]]) -> None:
    """One UPDATE … FROM (VALUES …): a CASE with a WHEN per row is quadratic in the rows (a
    thousand of them took a claim 0.4 s under load, row locks held)."""
    table = Delivery._meta.db_table
    rows = ", ".join(["(%s, CAST(%s AS timestamptz))"] * len(slots))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET next_attempt_at = v.column2 FROM (VALUES {rows}) AS v "  # noqa: S608
            f"WHERE {table}.id = v.column1 AND {table}.status IN ('pending', 'retrying')",
            [value for slot in slots for value in slot],
        )


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
    """Write attempts and delivery states, in one batch if possible, else one by one.

    One row that cannot be written must not cost the others their outcomes: when the batch fails,
    each outcome is written alone, up to RECORD_TRIES times, and a delivery whose outcome still
    cannot be written is ended `failed` with the reason (logged once) instead of waiting out its
    lease to be sent again.
    """
    if not outcomes:
        return PumpStats()
    try:
        with transaction.atomic():
            stats = _write_outcomes(outcomes)
    except DatabaseError:
        logger.warning("writing %d outcomes at once failed; writing them one by one", len(outcomes), exc_info=True)
        stats = PumpStats()
        for outcome in outcomes:
            _add(stats, _write_alone(outcome))
    # Counted once the outcomes are committed, so metrics never run ahead of the database.
    count_outcomes(
        [result for _, result in outcomes],
        {"succeeded": stats.succeeded, "retrying": stats.retrying, "failed": stats.failed},
    )
    return stats


def _write_alone(outcome: tuple[Claimed, http.HttpResult]) -> PumpStats:
    claimed, _result = outcome
    for _ in range(RECORD_TRIES):
        try:
            with transaction.atomic():
                return _write_outcomes([outcome])
        except DatabaseError as exc:
            error = exc
    reason = f"Gave up: the outcome of attempt {claimed.attempt.number} could not be recorded ({type(error).__name__})."
    logger.error(
        "delivery %s: %s",
        claimed.delivery.id,
        reason,
        exc_info=error,
        extra={"delivery_id": claimed.delivery.id, "subscription_id": claimed.delivery.subscription_id},
    )
    try:
        with transaction.atomic():
            Delivery.objects.filter(pk=claimed.delivery.pk, last_attempt_at=claimed.claimed_at).update(
                status=DeliveryStatus.FAILED, next_attempt_at=None, failure_reason=reason
            )
    except DatabaseError:
        # Nothing more can be done from here: its lease runs out and the claim's triage ends it.
        logger.exception("delivery %s: could not be ended either", claimed.delivery.id)
    return PumpStats(sent=1, failed=1)


def _write_outcomes(outcomes: list[tuple[Claimed, http.HttpResult]]) -> PumpStats:
    """Write attempts and delivery states in bulk, then act on what the endpoints said.

    A delivery's row is only updated while it still belongs to this claim (its
    last_attempt_at is the claim's time): a result that comes back after the lease ran out
    and another worker took over does not overwrite the newer attempt.
    """
    stats = PumpStats()
    now = database_now()
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
                values = {
                    "status": DeliveryStatus.RETRYING,
                    "next_attempt_at": now + timedelta(seconds=delay),
                    "failure_reason": attempt.error,
                }
        values["response_status_code"] = result.status_code
        retry_at = values.pop("next_attempt_at")
        if retry_at is None:
            values["next_attempt_at"] = None
            grouped.setdefault((claimed.claimed_at, *sorted(values.items())), []).append(delivery.id)
        else:
            retries.append((claimed, {**values, "next_attempt_at": retry_at}))
    stats.sent = len(outcomes)
    _finish_attempts(attempts)
    for (claimed_at, *items), ids in grouped.items():
        Delivery.objects.filter(pk__in=ids, last_attempt_at=claimed_at).update(**dict(items))
    _schedule_retries(retries)
    _update_subscription_health(now, healthy=healthy - failing, failing=failing - healthy, gone=gone)
    for claimed, result in outcomes:
        _log_attempt(claimed, result)
    return stats


def _schedule_retries(retries: list[tuple[Claimed, dict]]) -> None:
    """One UPDATE for every retry of a batch, grouped by what they share (each has its own time)."""
    groups: dict[tuple, list[tuple[str, datetime]]] = {}
    for claimed, values in retries:
        shared = tuple(sorted((k, v) for k, v in values.items() if k != "next_attempt_at"))
        groups.setdefault((claimed.claimed_at, shared), []).append((claimed.delivery.id, values["next_attempt_at"]))
    for (claimed_at, shared), rows in groups.items():
        times = Case(*[When(pk=delivery_id, then=Value(at)) for delivery_id, at in rows])
        Delivery.objects.filter(pk__in=[delivery_id for delivery_id, _ in rows], last_attempt_at=claimed_at).update(
            next_attempt_at=times, **dict(shared)
        )


def _log_attempt(claimed: Claimed, result: http.HttpResult) -> None:
    attempt = claimed.attempt
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
    than its per-endpoint share, so it slows only itself. On a warm shutdown it stops claiming at
    once and drains what is in flight (`_drain`).
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
    while not shutdown.requested():
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
            finished.append((item, _outcome(future, item)))
        # Outcomes are written in batches: fewer, larger statements, at most FLUSH_AGE late.
        if finished and (len(finished) >= FLUSH_BATCH or not in_flight or time.monotonic() - flushed_at >= FLUSH_AGE):
            _add(total, record_outcomes(finished))
            finished, flushed_at = [], time.monotonic()
    _add(total, record_outcomes(finished))
    _add(total, _finish(in_flight))
    return total


def _finish(in_flight: dict[concurrent.futures.Future, Claimed]) -> PumpStats:
    """Wait for the sends in flight (until the shutdown deadline, once a shutdown starts), record
    their outcomes, and give back what is still out then.

    A request still running at the deadline may have reached its endpoint: its attempt is kept,
    marked abandoned, and the delivery is due again at once (at least once: the endpoint may get
    it twice), without using up one of the series' retries.
    """
    results = []
    while in_flight and not (
        shutdown.requested() and time.monotonic() >= shutdown.deadline(settings.ASIRI_SHUTDOWN_SECONDS)
    ):
        done, _ = concurrent.futures.wait(in_flight, timeout=FLUSH_TICK, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            item = in_flight.pop(future)
            results.append((item, _outcome(future, item)))
    stats = record_outcomes(results)
    if in_flight:
        for future in in_flight:
            future.cancel()
        give_back(list(in_flight.values()))
        stats.abandoned = len(in_flight)
    return stats


def give_back(items: list[Claimed]) -> None:
    """Make claimed deliveries due again now, on the database's clock: a shutdown cut their attempts short."""
    now = database_now()
    for item in items:
        elapsed = time.monotonic() - item.started
        with transaction.atomic():
            Attempt.objects.filter(pk=item.attempt.pk).update(
                duration_ms=int(elapsed * 1000),
                error=f"Abandoned after {elapsed:.1f} s: the worker shut down; the delivery is sent again.",
            )
            Delivery.objects.filter(pk=item.delivery.pk, last_attempt_at=item.claimed_at).in_flight().update(
                next_attempt_at=now, series_start=F("series_start") + 1
            )
    logger.warning("shutting down: gave back %d deliveries whose requests were still in flight", len(items))


def _outcome(future: concurrent.futures.Future, item: Claimed) -> http.HttpResult:
    """The send's result; anything the HTTP seam did not anticipate is this one delivery's failure."""
    try:
        return future.result()
    except Exception as exc:
        logger.exception("delivery %s: sending raised", item.delivery.id, extra={"delivery_id": item.delivery.id})
        return http.HttpResult(
            None,
            int((time.monotonic() - item.started) * 1000),
            error=f"Internal error while sending ({type(exc).__name__}); it will be retried.",
            failure="other_error",
        )


def _submit(sender, item: Claimed) -> concurrent.futures.Future:
    try:
        body, headers = request_for(item.delivery, item.claimed_at)
        return sender.submit(item.delivery.subscription.url, body, headers)
    except Exception as exc:
        failed: concurrent.futures.Future = concurrent.futures.Future()
        failed.set_exception(exc)
        return failed


def send_now(delivery_ids: list[str]) -> PumpStats:
    """Claim and send just these deliveries (a test send, a redelivery), whatever else is due.

    The priority queue's task: a person is waiting for this, so it never joins a backlog. A
    delivery another worker already holds, or whose endpoint's rate limit is full, is left
    to the pumps.
    """
    if shutdown.requested():
        return PumpStats()  # the dispatcher hands them to a pump
    claimed = claim_due(limit=len(delivery_ids), only_ids=delivery_ids)
    if not claimed:
        return PumpStats()
    sender = http.sender()
    stats = _finish({_submit(sender, item): item for item in claimed})
    stats.max_in_flight = len(claimed)
    return stats


def _add(total: PumpStats, part: PumpStats) -> None:
    total.sent += part.sent
    total.succeeded += part.succeeded
    total.failed += part.failed
    total.retrying += part.retrying
    total.abandoned += part.abandoned
