"""The worker side: claim due deliveries, send them concurrently, record every outcome.

No retry ever waits in the broker: claims (deliveries.claims) take what is due from the database, the
one HTTP seam (deliveries.http) sends, and deliveries.outcomes writes what came back. This module keeps
the loop that ties them together, and the warm shutdown that drains it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections import Counter
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F

from core.clock import database_now
from core.outages import DATABASE, unreachable
from core.schema import missing_migrations
from deliveries import http, shutdown
from deliveries.claims import LOST_ATTEMPT, Claimed, claim_due, seconds_until_due
from deliveries.models import Attempt, Delivery
from deliveries.outcomes import PumpStats, reconnect_if_lost, record_outcomes
from deliveries.signing import signature_header

logger = logging.getLogger(__name__)

__all__ = ["LOST_ATTEMPT", "claim_due", "pump", "record_outcomes", "send_now"]

FLUSH_TICK = 0.05
FLUSH_BATCH = 50
FLUSH_AGE = 0.1
THROTTLED_POLL = 0.1
IDLE_LINGER = 0.25  # a pump with nothing to do keeps looking this long before it stops
# A pump with nothing due stays if something falls due within this, rather than stop and be woken
# again by the dispatcher (every ASIRI_DISPATCH_INTERVAL) a moment later.
LOOK_AHEAD = 1.0


def request_for(delivery: Delivery, now: datetime) -> tuple[bytes, dict[str, str]]:
    body = delivery.event.body
    timestamp = int(now.timestamp())
    own = {
        "content-type": "application/json",
        "user-agent": settings.ASIRI_USER_AGENT,
        "webhook-id": delivery.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(delivery.subscription.signing_secrets(now), delivery.id, timestamp, body),
    }
    # The subscription's own headers go under the service's, which always win (names ignore case).
    custom = {name: value for name, value in delivery.subscription.headers.items() if name.lower() not in own}
    return body, {**custom, **own}


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
    ended = Ended()
    flushed_at = time.monotonic()
    # Sends ended since the last claim: an endpoint at its share has room for only that many, so a
    # claim made after every single completion would take one row per statement.
    ended_since_claim, claimed_at = 0, 0.0
    try:
        while not shutdown.requested():
            free = capacity - len(in_flight)
            refill = free >= refill_at and (
                ended_since_claim >= refill_at or time.monotonic() - claimed_at >= FLUSH_TICK
            )
            if time.monotonic() < deadline and (refill or not in_flight):
                claimed = claim_due(limit=free, busy=busy, throttled=throttled)
                ended_since_claim, claimed_at = 0, time.monotonic()
                for future, item in zip(_submit_all(sender, claimed), claimed, strict=True):
                    in_flight[future] = item
                    ended.watch(future)
                    busy[item.delivery.subscription_id] += 1
                total.max_in_flight = max(total.max_in_flight, len(in_flight))
                if not in_flight and not claimed:
                    room_at = min(throttled.values(), default=None)
                    if room_at is None and (soon := seconds_until_due(within=LOOK_AHEAD)) is not None:
                        room_at = time.monotonic() + soon
                    if room_at is not None and room_at < deadline:
                        # Only rate-limited endpoints have work, or work falls due in a moment (a rate
                        # schedule's next send time, a short retry): wait for it rather than for the
                        # dispatcher, looking again often enough that new work elsewhere is not held up.
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
            done = ended.take(timeout=FLUSH_TICK)
            ended_since_claim += len(done)
            for future in done:
                item = in_flight.pop(future)
                busy[item.delivery.subscription_id] -= 1
                finished.append((item, _outcome(future, item)))
            # Outcomes are written in batches: fewer, larger statements, at most FLUSH_AGE late.
            if finished and (
                len(finished) >= FLUSH_BATCH or not in_flight or time.monotonic() - flushed_at >= FLUSH_AGE
            ):
                # Taken before writing: if the write raises after it committed, the except below must not repeat it.
                batch, finished, flushed_at = finished, [], time.monotonic()
                total.add(record_outcomes(batch))
    except Exception as exc:
        # A claim or a write failed in a way nothing here expects (a bug, an error no retry covers), or the
        # database went away (the task says so, through core.outages): the sends already in flight are still
        # seen through and recorded, not left to wait out their leases and go out a second time.
        if not unreachable(exc):
            if not missing_migrations(exc):  # if it is, the task says so, once a minute (core.schema)
                logger.exception("the pump stopped on an error; finishing its %d sends in flight first", len(in_flight))
        else:
            # Said now, not when the task ends, which may be RECORD_WAIT later.
            DATABASE.failed(logger, "pump", exc)
            if in_flight or finished:
                logger.warning(
                    "the pump stopped; finishing its %d sends in flight first", len(in_flight) + len(finished)
                )
        reconnect_if_lost()
        for settle, sends in ((record_outcomes, finished), (_finish, in_flight)):
            try:
                settle(sends)
            except Exception:
                logger.exception("could not record %d sends: they go again when their leases end", len(sends))
        raise
    total.add(record_outcomes(finished))
    total.add(_finish(in_flight))
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
    reconnect_if_lost()
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


def _submit_all(sender, items: list[Claimed]) -> list[concurrent.futures.Future]:
    """Start every item's send at once; one whose request cannot be built gets a future holding why."""
    futures: list[concurrent.futures.Future | None] = []
    requests = []
    for item in items:
        try:
            body, headers = request_for(item.delivery, item.claimed_at)
        except Exception as exc:
            failed: concurrent.futures.Future = concurrent.futures.Future()
            failed.set_exception(exc)
            futures.append(failed)
        else:
            futures.append(None)
            requests.append((item.delivery.subscription.url, body, headers))
    started = iter(sender.submit_many(requests) if requests else [])
    return [future if future is not None else next(started) for future in futures]


class Ended:
    """The pump's sends that have ended, handed over in batches as they come.

    concurrent.futures.wait registers a waiter with every future in flight each time it is called, and
    the pump called it once per completion or two: with a hundred in flight, that bookkeeping was 40 % of
    the pump thread's samples in a benchmark of the sender alone (py-spy, bench/RESULTS.md). Here each
    future reports itself once, and one wake-up takes whatever has ended by then.
    """

    def __init__(self) -> None:
        self._ended: collections.deque[concurrent.futures.Future] = collections.deque()
        self._ready = threading.Event()

    def watch(self, future: concurrent.futures.Future) -> None:
        future.add_done_callback(self._add)

    def _add(self, future: concurrent.futures.Future) -> None:
        self._ended.append(future)
        self._ready.set()

    def take(self, *, timeout: float) -> list[concurrent.futures.Future]:
        """The futures ended since the last call, waiting up to `timeout` for one if there are none."""
        self._ready.wait(timeout)
        # Cleared before reading: a send ending from here on sets it again for the next call.
        self._ready.clear()
        taken = []
        while self._ended:
            taken.append(self._ended.popleft())
        return taken


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
    stats = _finish(dict(zip(_submit_all(sender, claimed), claimed, strict=True)))
    stats.max_in_flight = len(claimed)
    return stats
