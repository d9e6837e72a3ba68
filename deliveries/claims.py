"""Claiming due deliveries: which locked rows go, stop or end, their leases, and the rate-limited endpoints'
send times. The database is the source of truth: a claim pushes next_attempt_at past a lease, so a worker
that dies mid-send only delays its deliveries."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from core.clock import database_now
from core.compiled import Compiled, compile_once
from core.rows import loaded, row_builder
from deliveries import ratelimit
from deliveries.models import (
    Attempt,
    Delivery,
    DeliveryQuerySet,
    DeliveryStatus,
    Event,
    deliveries_release_next,
    deliveries_set_each,
    delivery_keys,
    execute_with_sorts_last,
)
from deliveries.notices import health_record
from webhooks.models import Subscription

# Rows given send times per claim, each a non-HOT update under the claim's row locks: 250 logged 151
# statements over 10 ms and 5 over 100 ms in bench scenario 6 on a slower day, 100 logged 15 (1,000 had taken
# up to 98 ms on a faster one). The schedule continues where it stopped at the next claim (about one a second
# per worker process for a throttled endpoint); rows a fast rate leaves unscheduled are claimed as due ones.
SCHEDULE_BATCH = 100
# A throttled endpoint's due rows are given send times at most this far ahead per claim: the work
# of one claim stays bounded whatever its backlog, and a raised rate_limit applies within a minute.
SCHEDULE_HORIZON = 60.0
# What triage needs of each candidate, in its order.
CANDIDATE_COLUMNS = (
    "id",
    "subscription_id",
    "is_test",
    "subscription__active",
    "subscription__deleted_at",
    "subscription__rate_limit",
    "attempt_count",
    "series_start",
)
# The worker died mid-send, or PostgreSQL's host crashed before a result committed without waiting for the
# disk reached it (outcomes._write_successes_at_once): either way the request may have arrived.
LOST_ATTEMPT = "No result was recorded for this attempt: the worker or the database stopped before saving it."
ORPHANED = "Stopped: its event no longer exists."

logger = logging.getLogger(__name__)


@dataclass
class Claimed:
    delivery: Delivery
    attempt: Attempt
    claimed_at: datetime
    started: float = field(default_factory=time.monotonic)


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
        now = _read_in_index_order()
        lease_end = now + timedelta(seconds=settings.ASIRI_DELIVERY_LEASE)
        share = settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT
        held_back = [subscription for subscription, n in busy.items() if n >= share] + list(throttled)
        if held_back and only_ids is None and connection.vendor == "postgresql":
            # Otherwise one endpoint's backlog could fill every candidate slot and starve the rest;
            # filtered on the due index, a held-back backlog would be read row by row in every claim.
            # (PostgreSQL's SQL: the embedded default's SQLite, one machine's worth of work, filters instead.)
            rows = _due_elsewhere(now, held_back, limit=limit, room=_room(busy, share))
        else:
            # As many rows as free slots: a row locked but not taken is one that other workers skip for
            # nothing (four per slot cost the drain a tenth: bench/RESULTS.md). An endpoint that
            # reaches its share among them is held back from the next claim, which goes past it.
            rows = _candidates(now, limit, held_back=held_back, only_ids=only_ids)
        decided = triage(rows, busy=busy, share=share, limit=limit)
        _end_unsendable(decided, now)
        picked = dict(decided.picked)
        if not decided.rate_limits:
            return _start_attempts(list(picked), now, lease_end)
        # Out of every other claim's sight while the endpoints' windows are asked about.
        Delivery.objects.filter(pk__in=list(picked)).update(next_attempt_at=lease_end)
    chosen, held = _within_rate_limits(decided.picked, decided.rate_limits, decided.taken, filled=decided.filled)
    for subscription_id, wait in held.items():
        throttled[subscription_id] = clock + wait
    with transaction.atomic():
        _read_in_index_order()  # _schedule_by_rate reads a throttled endpoint's backlog oldest first
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


def _read_in_index_order() -> datetime:
    """For the rest of the claim's transaction, plan no bitmap or sequential scans and stay idle no longer than
    half a lease, on PostgreSQL; returns the database's clock, read in the same round trip.

    A claim wants the oldest few due rows: an index scan of delivery_due that stops at the limit is the
    right plan at any backlog. But the planner estimates how many rows are due from statistics, which lag
    behind a burst (an outage's backlog, a bulk import) or were never taken: believing a dozen were due, it
    read all 15,000 with a bitmap scan and sorted them, 13 to 18 ms per claim and growing with the backlog
    (auto_explain, bench/RESULTS.md). Every statement of a claim reads rows by an index, so no other plan
    changes.
    """
    if connection.vendor != "postgresql":
        return database_now()
    # A worker stopped mid-claim (SIGSTOP, a VM paused) held its rows locked past their lease, then leased them
    # already expired when it went on: another worker sent them too. Its transaction now ends first, rows unlocked.
    idle_limit = f"{max(1, int(settings.ASIRI_DELIVERY_LEASE * 500))}ms"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true), "
            "set_config('idle_in_transaction_session_timeout', %s, true), statement_timestamp()",
            [idle_limit],
        )
        return cursor.fetchone()[3]


# A claim's `now` in its compiled candidate query (_sendable_query), until bound: a time no clock gives.
_NOW = datetime(2000, 1, 1, 0, 0, 0, 424242, tzinfo=UTC)


def _candidates(now: datetime, limit: int, *, held_back: list[str], only_ids: list[str] | None) -> list[tuple]:
    """Lock up to `limit` of the oldest sendable deliveries (Delivery.objects.sendable), outside `held_back`
    and among `only_ids` if given; their CANDIDATE_COLUMNS."""
    if held_back or only_ids is not None or connection.vendor != "postgresql":
        candidates = Delivery.objects.sendable(now)
        if held_back:
            candidates = candidates.exclude(subscription_id__in=held_back)
        if only_ids is not None:
            candidates = candidates.filter(pk__in=only_ids)
        return list(_oldest_first(candidates)[:limit])
    query = _sendable_query(limit)
    with connection.cursor() as cursor:
        execute_with_sorts_last(cursor, query.sql, query.bind(now=now))
        return cursor.fetchall()


def _oldest_first(candidates: DeliveryQuerySet) -> DeliveryQuerySet:
    return (
        candidates.order_by("next_attempt_at")
        .select_for_update(skip_locked=True, of=("self",))
        .values_list(*CANDIDATE_COLUMNS)
    )


@functools.lru_cache(maxsize=256)
def _sendable_query(limit: int) -> Compiled:
    """The candidate query of a claim with nothing held back (the usual one), compiled once per limit."""
    return compile_once(_oldest_first(Delivery.objects.sendable(_NOW))[:limit], now=_NOW)


def seconds_until_due(*, within: float) -> float | None:
    """Seconds until the next delivery in flight falls due, on the database's clock, if within `within`."""
    now = database_now()
    soonest = (
        Delivery.objects.in_flight()
        .filter(next_attempt_at__gt=now, next_attempt_at__lte=now + timedelta(seconds=within))
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    return None if soonest is None else (soonest - now).total_seconds()


def _start_attempts(delivery_ids: list[str], now: datetime, lease_end: datetime) -> list[Claimed]:
    """Count an attempt for each claimed delivery and write its row, before any request is made."""
    if not delivery_ids:
        return []
    if connection.vendor == "postgresql":
        return _start_attempts_at_once(delivery_ids, now, lease_end)
    Delivery.objects.filter(pk__in=delivery_ids).update(
        attempt_count=F("attempt_count") + 1, last_attempt_at=now, next_attempt_at=lease_end
    )
    # An attempt left without a result was cut short by a worker that died.
    Attempt.objects.without_outcome().filter(delivery_id__in=delivery_ids).update(error=LOST_ATTEMPT)
    # Joined: a delivery whose event is gone is left out here, and ended below.
    deliveries = list(Delivery.objects.filter(pk__in=delivery_ids).select_related("event", "subscription"))
    attempts = Attempt.objects.bulk_create(
        [Attempt(delivery=d, number=d.attempt_count, started_at=now) for d in deliveries]
    )
    found = {d.id for d in deliveries}
    orphans = Delivery.objects.filter(pk__in=[i for i in delivery_ids if i not in found]).values_list(
        "pk", "attempt_count"
    )
    # Their attempts too, as the one statement on PostgreSQL writes them, for _end_orphans to say why.
    Attempt.objects.bulk_create([Attempt(delivery_id=pk, number=count, started_at=now) for pk, count in orphans])
    _end_orphans([pk for pk, _ in orphans])
    return [Claimed(d, a, now) for d, a in zip(deliveries, attempts, strict=True)]


def _end_orphans(delivery_ids: list[str]) -> None:
    """End, unsent, claimed deliveries whose event is gone, rather than fail every claim that takes them.

    The database does not check Delivery.event (models.py says why) and nothing deletes an event that has
    deliveries, so this is a safety net: a retention purge racing a recovery of events as old as the retention
    period could leave one. Their just-started attempts say why no request was made."""
    if not delivery_ids:
        return
    logger.error("deliveries %s: their event no longer exists; ended unsent", ", ".join(delivery_ids))
    Attempt.objects.without_outcome().filter(delivery_id__in=delivery_ids).update(error=ORPHANED)
    _end(delivery_ids, ORPHANED)


def _end(delivery_ids: list[str], reason: str) -> None:
    """End these deliveries unsent, and let the next of each ordering key among them go."""
    keys = delivery_keys(delivery_ids)
    Delivery.objects.filter(pk__in=delivery_ids).update(
        status=DeliveryStatus.FAILED, next_attempt_at=None, failure_reason=reason
    )
    deliveries_release_next(keys, database_now())


def _start_attempts_at_once(delivery_ids: list[str], now: datetime, lease_end: datetime) -> list[Claimed]:
    """_start_attempts in one statement, on PostgreSQL: the delivery rows are updated, the attempts cut
    short marked, the new attempts inserted, and the rows a send needs returned, in one round trip
    where the ORM takes four (profiling: a claim's statements were most of a pump's database time).

    Only a delivery's latest attempt can lack a result (each claim marks the one before), so the cut-short
    attempt is looked up by its key, (delivery, number): the planner then always reads it through
    attempt_number_unique. Asked for any attempt of the delivery without a result, it scanned the whole
    attempts table in every claim whenever its statistics lagged (bench/RESULTS.md).

    Each event and subscription comes back once, on the first of its deliveries (the others read NULLs),
    and is built once: a backlog's claim is a hundred deliveries to one subscription, a fan-out's a hundred
    subscriptions of one event. With the two times this claim set itself left unread, and the instances made
    as a queryset makes them, a claim's CPU in the worker fell by a quarter (bench/RESULTS.md)."""
    builders = {model: row_builder(model) for model in (Delivery, Event, Subscription)}
    columns = {
        model: [f"{alias}.{connection.ops.quote_name(f.column)}" for f in fields]
        for (model, (_, fields)), alias in zip(builders.items(), ("claimed", "event", "subscription"), strict=True)
    }
    # This claim set them, to `now` and `lease_end`: not read back, each a timestamp parsed in Python per row.
    known = {"last_attempt_at": now, "next_attempt_at": lease_end}
    columns[Delivery] = [
        "NULL" if f.attname in known else column
        for f, column in zip(builders[Delivery][1], columns[Delivery], strict=True)
    ]
    delivery, attempt = Delivery._meta.db_table, Attempt._meta.db_table
    sql = f"""
        WITH claimed AS (
            UPDATE {delivery} SET attempt_count = attempt_count + 1, last_attempt_at = %(now)s,
                next_attempt_at = %(lease_end)s
            WHERE id = ANY(string_to_array(%(ids)s, ',')) RETURNING *
        ), cut_short AS (
            UPDATE {attempt} SET error = %(lost)s FROM claimed
            WHERE {attempt}.delivery_id = claimed.id AND {attempt}.number = claimed.attempt_count - 1
                AND claimed.attempt_count > 1 AND {attempt}.duration_ms IS NULL AND {attempt}.error = ''
        ), started AS (
            INSERT INTO {attempt} (delivery_id, number, started_at, response_body, response_headers, error)
            SELECT id, attempt_count, %(now)s, '', '{{}}', '' FROM claimed
            RETURNING id, delivery_id, number
        ), firsts AS (
            SELECT id, row_number() OVER (PARTITION BY event_id ORDER BY id) = 1 AS first_of_event,
                row_number() OVER (PARTITION BY subscription_id ORDER BY id) = 1 AS first_of_subscription
            FROM claimed
        )
        SELECT started.id, started.number, {", ".join(c for group in columns.values() for c in group)}
        FROM claimed
        JOIN started ON started.delivery_id = claimed.id
        JOIN firsts ON firsts.id = claimed.id
        LEFT JOIN {Event._meta.db_table} event ON event.id = claimed.event_id AND firsts.first_of_event
        LEFT JOIN {Subscription._meta.db_table} subscription
            ON subscription.id = claimed.subscription_id AND firsts.first_of_subscription
    """  # noqa: S608 (table and column names are the models')
    # The ids as one string (they never hold a comma): a list is quoted element by element in Python.
    params = {"ids": ",".join(delivery_ids), "now": now, "lease_end": lease_end, "lost": LOST_ATTEMPT}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    widths = [len(group) for group in columns.values()]
    build_delivery, build_event, build_subscription = (build for build, _ in builders.values())
    event_pk, subscription_pk = (
        [f.primary_key for f in builders[model][1]].index(True) for model in (Event, Subscription)
    )
    split = []
    events: dict[str, Event] = {}
    subscriptions: dict[str, Subscription] = {}
    for attempt_id, number, *values in rows:
        delivery_values = values[: widths[0]]
        event_values = values[widths[0] : widths[0] + widths[1]]
        subscription_values = values[widths[0] + widths[1] :]
        # A primary key of NULL: another row of this claim carries the event (or subscription).
        if event_values[event_pk] is not None:
            events[event_values[event_pk]] = build_event(event_values)
        if subscription_values[subscription_pk] is not None:
            subscriptions[subscription_values[subscription_pk]] = build_subscription(subscription_values)
        split.append((attempt_id, number, delivery_values))
    # Instances equal to a queryset's (core.rows), related ones cached as select_related caches them:
    # Model.__init__ and the relation descriptors cost more than the rest of a claim's Python.
    event_cache, subscription_cache = Delivery.event.field, Delivery.subscription.field
    attempt_delivery = Attempt.delivery.field
    # As the statement inserted them; response_headers gets a dict of its own per attempt, below.
    attempt_defaults = {**{f.attname: f.get_default() for f in Attempt._meta.concrete_fields}, "started_at": now}
    claimed, orphans = [], []
    for attempt_id, number, delivery_values in split:
        delivery_row = build_delivery(delivery_values)
        if delivery_row.event_id not in events:
            orphans.append(delivery_row.id)
            continue
        delivery_row.__dict__.update(known)
        event_cache.set_cached_value(delivery_row, events[delivery_row.event_id])
        subscription_cache.set_cached_value(delivery_row, subscriptions[delivery_row.subscription_id])
        values = {
            **attempt_defaults,
            "id": attempt_id,
            "delivery_id": delivery_row.id,
            "number": number,
            "response_headers": {},
        }
        attempt_row = loaded(Attempt, values.items())
        attempt_delivery.set_cached_value(attempt_row, delivery_row)
        claimed.append(Claimed(delivery_row, attempt_row, now))
    _end_orphans(orphans)
    order = {delivery_id: n for n, delivery_id in enumerate(delivery_ids)}
    return sorted(claimed, key=lambda item: order[item.delivery.id])


def _end_unsendable(decided: Triage, now: datetime) -> None:
    if decided.exhausted:
        most_attempts = len(settings.ASIRI_RETRY_SCHEDULE) + 1
        # Also the way out of a retry schedule shortened by a deploy, after the outcomes were recorded: said as such.
        recorded = set(
            Attempt.objects.with_outcome()
            .filter(delivery_id__in=decided.exhausted, number=F("delivery__attempt_count"))
            .values_list("delivery_id", flat=True)
        )
        lost = [delivery_id for delivery_id in decided.exhausted if delivery_id not in recorded]
        lost_reason = f"Gave up: no outcome was recorded for {most_attempts} attempts."
        shortened_reason = (
            f"Gave up: the {most_attempts} attempts the retry schedule allows were made "
            "(it was shortened after they were scheduled)."
        )
        if lost:
            _end(lost, lost_reason)
        if recorded:
            _end(list(recorded), shortened_reason)
        reason = lost_reason if lost else shortened_reason
        # Its retries are used up: in a subscription's failing streak, that is the streak's notice.
        # Not a failure of the endpoint's own, though, so it starts no streak.
        streaks = Delivery.objects.filter(
            pk__in=decided.exhausted, is_test=False, subscription__failing_since__isnull=False
        ).values_list("subscription_id", "response_status_code")
        last_failures = {subscription_id: (status_code, reason) for subscription_id, status_code in streaks}
        if last_failures:
            health_record(now, healthy=set(), failing=set(last_failures), gone=set(), last_failures=last_failures)
    for subscription_id, delivery_ids in decided.stopped.items():
        subscription = Subscription.objects.get(pk=subscription_id)
        _end(delivery_ids, f"Stopped: {subscription.stop_reason}")


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


def _room(busy: Counter, share: int) -> dict[str, int]:
    return {subscription_id: share - n for subscription_id, n in busy.items() if 0 < n < share}


def _due_elsewhere(now: datetime, held_back: list[str], *, limit: int, room: dict[str, int]) -> list[tuple]:
    """Lock up to `limit` sendable deliveries outside `held_back`, for each subscription at most its
    `room` (ASIRI_SEND_CONCURRENCY_PER_ENDPOINT if not named), the subscriptions whose oldest due
    delivery is oldest first; their CANDIDATE_COLUMNS, oldest first.

    The work grows with the number of subscriptions that have deliveries in flight, not with the
    held-back backlogs: a skip scan of `delivery_due_by_subscription` lists those subscriptions
    (one index descent each) and their oldest due row, then each one's due rows come from the same
    index until `limit` are locked. The rows are locked as they are read (SKIP LOCKED): listed
    first and locked after, concurrent claims would all list the same oldest rows, and every one
    but the first would find them taken and claim nothing. The conditions are
    DeliveryQuerySet.sendable's, written out for this query plan: a key's first delivery with a row comparison
    in delivery_ordered_in_flight's order (the candidate is in flight, so the first row from its key on is of
    its key). Not planned with sorts last (execute_with_sorts_last): this query sorts the subscriptions' heads,
    and so planned, it drained bench scenario 6's unlimited endpoint at a twelfth of its rate.
    """
    table, subscriptions = Delivery._meta.db_table, Subscription._meta.db_table
    in_flight = "status IN ('pending', 'retrying')"  # the partial indexes' own condition
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH RECURSIVE in_flight(id) AS (
                (SELECT subscription_id FROM {table} WHERE {in_flight} ORDER BY subscription_id LIMIT 1)
                UNION ALL
                SELECT (SELECT subscription_id FROM {table} WHERE {in_flight} AND subscription_id > in_flight.id
                        ORDER BY subscription_id LIMIT 1)
                FROM in_flight WHERE in_flight.id IS NOT NULL
            ), heads AS (
                SELECT id, (SELECT next_attempt_at FROM {table}
                            WHERE subscription_id = in_flight.id AND {in_flight} AND next_attempt_at <= %(now)s
                            ORDER BY next_attempt_at LIMIT 1) AS due_at
                FROM in_flight WHERE id IS NOT NULL AND id <> ALL(%(held_back)s)
            ), oldest_first AS (
                SELECT heads.id, COALESCE(room.n, %(share)s) AS room
                FROM heads LEFT JOIN unnest(%(room_ids)s::text[], %(room_n)s::int[]) AS room(id, n) USING (id)
                WHERE due_at IS NOT NULL ORDER BY due_at LIMIT %(limit)s
            ), locked AS (
                SELECT due.* FROM oldest_first CROSS JOIN LATERAL (
                    SELECT id, subscription_id, is_test, attempt_count, series_start, next_attempt_at
                    FROM {table} AS candidate
                    WHERE subscription_id = oldest_first.id AND {in_flight} AND next_attempt_at <= %(now)s
                        AND (ordering_key IS NULL OR position = (
                            SELECT first.position FROM {table} AS first
                            WHERE first.{in_flight} AND first.ordering_key IS NOT NULL
                                AND (first.subscription_id, first.ordering_key)
                                    >= (candidate.subscription_id, candidate.ordering_key)
                            ORDER BY first.subscription_id, first.ordering_key, first.position LIMIT 1))
                    ORDER BY next_attempt_at LIMIT oldest_first.room
                    FOR UPDATE SKIP LOCKED
                ) AS due
                LIMIT %(limit)s
            )
            SELECT locked.id, locked.subscription_id, locked.is_test, subscription.active,
                subscription.deleted_at, subscription.rate_limit, locked.attempt_count, locked.series_start
            FROM locked JOIN {subscriptions} AS subscription ON subscription.id = locked.subscription_id
            ORDER BY locked.next_attempt_at
            """,  # noqa: S608 (the table names are the models')
            {
                "now": now,
                "held_back": held_back,
                "limit": limit,
                "share": settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT,
                "room_ids": list(room),
                "room_n": list(room.values()),
            },
        )
        return cursor.fetchall()


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
        .order_by("next_attempt_at")
        .select_for_update(skip_locked=True)
        .values_list("id", flat=True)[: max(0, SCHEDULE_BATCH - len(rows))]
    )
    slots = [(delivery_id, start + n * gap) for n, delivery_id in enumerate(rows)]
    last = (
        Delivery.objects.filter(subscription_id=subscription_id, next_attempt_at__gt=now)
        .filter(next_attempt_at__lte=horizon + timedelta(seconds=ratelimit.WINDOW_SECONDS))
        .in_flight()
        # A lease's end is no send time (and lies within the horizon when ASIRI_DELIVERY_LEASE is short).
        .exclude(next_attempt_at=F("last_attempt_at") + timedelta(seconds=settings.ASIRI_DELIVERY_LEASE))
        .order_by("-next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    after = max(start + len(slots) * gap, last + gap if last else start)
    room = min(SCHEDULE_BATCH - len(slots), math.ceil((horizon - after) / gap))
    if room > 0:
        backlog = (
            due.filter(is_test=False)
            .order_by("next_attempt_at")  # alone, so delivery_due_by_subscription serves it
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:room]
        )
        slots += [(delivery_id, after + n * gap) for n, delivery_id in enumerate(backlog)]
    deliveries_set_each("next_attempt_at", "timestamptz", slots, in_flight_only=True)
