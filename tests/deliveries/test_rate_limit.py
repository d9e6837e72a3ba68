"""Per-subscription `rate_limit`: claims never exceed it in any one second, across workers."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from deliveries import engine, ratelimit
from deliveries.models import Attempt, Delivery
from deliveries.services import delivery_send_test, event_publish
from tests.support.factories import make_due
from tests.support.processes import wait_until


@pytest.fixture
def publish(alice, django_capture_on_commit_callbacks):
    def publish_(event_type: str, count: int) -> None:
        with django_capture_on_commit_callbacks(execute=False):
            for n in range(count):
                event_publish(tenant=alice, event_type=event_type, data={"n": n})

    return publish_


def claimed_per_subscription(claimed) -> Counter:
    return Counter(c.delivery.subscription_id for c in claimed)


@pytest.mark.django_db
def test_a_claim_takes_no_more_than_the_rate_limit_and_schedules_the_rest_by_it(alice, make_subscription, publish):
    limited = make_subscription(alice, events=["limited"], rate_limit=3)
    other = make_subscription(alice, events=["other"])
    publish("limited", 10)
    publish("other", 10)
    throttled: dict[str, float] = {}
    before = timezone.now()
    claimed = engine.claim_due(limit=100, throttled=throttled)
    assert claimed_per_subscription(claimed) == {limited.id: 3, other.id: 10}
    assert set(throttled) == {limited.id}
    assert 0 < throttled[limited.id] - time.monotonic() <= ratelimit.WINDOW_SECONDS
    # The other 7 wait for the window, no attempt made: not due now (nothing for the dispatcher
    # to wake workers for, nothing late in the backlog metrics), then one every 1/3 s.
    waiting = Delivery.objects.filter(subscription=limited, attempt_count=0)
    assert waiting.count() == 7 and not Delivery.objects.due(timezone.now()).exists()
    slots = sorted(waiting.values_list("next_attempt_at", flat=True))
    assert before < slots[0] <= timezone.now() + timedelta(seconds=ratelimit.WINDOW_SECONDS)
    gaps = {round((later - earlier).total_seconds(), 3) for earlier, later in itertools.pairwise(slots)}
    assert gaps == {0.333}


@pytest.mark.django_db
def test_a_short_lease_does_not_push_the_schedule_back(alice, make_subscription, publish, settings):
    """A delivery in flight has a lease's end as its next_attempt_at; with a lease shorter than the
    schedule's horizon, that is no send time for the schedule to continue after."""
    settings.ASIRI_DELIVERY_LEASE = 10
    limited = make_subscription(alice, events=["limited"], rate_limit=2)
    publish("limited", 6)
    claimed = engine.claim_due(limit=100, throttled={})
    assert len(claimed) == 2  # in flight, leased for 10 s
    slots = sorted(
        Delivery.objects.filter(subscription=limited, attempt_count=0).values_list("next_attempt_at", flat=True)
    )
    assert len(slots) == 4
    # The first waits for the window (at most a second), not for the leases to run out.
    assert slots[0] <= timezone.now() + timedelta(seconds=ratelimit.WINDOW_SECONDS)
    assert slots[-1] <= timezone.now() + timedelta(seconds=ratelimit.WINDOW_SECONDS + 3 * 0.5)


@pytest.mark.django_db
def test_the_window_is_shared_by_every_worker(alice, make_subscription, publish):
    limited = make_subscription(alice, events=["limited"], rate_limit=4)
    publish("limited", 10)
    first_worker = engine.claim_due(limit=2)
    second_worker = engine.claim_due(limit=100)  # its own empty `throttled`: only Redis knows
    make_due()  # the rest's slots have come, but not the window's room
    third_worker = engine.claim_due(limit=100)
    assert [len(first_worker), len(second_worker), len(third_worker)] == [2, 2, 0]
    assert claimed_per_subscription(first_worker + second_worker) == {limited.id: 4}
    window = redis.Redis.from_url(settings.ASIRI_RATE_LIMIT_REDIS_URL)
    assert window.zcard(f"asiri:send-rate:{{{limited.id}}}") == 4  # in Redis, not in this process


@pytest.mark.django_db
def test_a_test_send_gets_the_first_slot_ahead_of_the_backlog(alice, make_subscription, publish):
    limited = make_subscription(alice, events=["limited"], rate_limit=1)
    publish("limited", 4)
    assert len(engine.claim_due(limit=100)) == 1
    test_send = delivery_send_test(subscription=limited)
    assert engine.send_now([test_send.id]).sent == 0  # the window is full
    # The test send's slot is when the window has room again, the same second the backlog's next
    # one was given: whichever is a microsecond earlier, the test send is what that room goes to.
    waiting = Delivery.objects.filter(subscription=limited, attempt_count=0)
    slots = sorted(waiting.values_list("next_attempt_at", flat=True))
    test_slot = Delivery.objects.get(pk=test_send.pk).next_attempt_at
    assert test_slot <= slots[1] and slots[0] <= timezone.now() + timedelta(seconds=ratelimit.WINDOW_SECONDS)
    wait_until(lambda: timezone.now() >= max(test_slot, slots[0]), timeout=2 * ratelimit.WINDOW_SECONDS)
    claimed = wait_until(lambda: engine.claim_due(limit=100), timeout=2 * ratelimit.WINDOW_SECONDS)
    assert [c.delivery.id for c in claimed] == [test_send.id]


@pytest.mark.django_db
def test_a_pump_never_starts_more_than_the_limit_in_any_second(post_webhook, alice, make_subscription, publish):
    limited = make_subscription(alice, events=["limited"], rate_limit=4)
    publish("limited", 10)
    stats = engine.pump(budget_seconds=10)
    assert stats.succeeded == 10
    starts = sorted(Attempt.objects.filter(delivery__subscription=limited).values_list("started_at", flat=True))
    # 10 at 4 a second: three windows, so the pump waited for them instead of stopping.
    assert (starts[-1] - starts[0]).total_seconds() >= 2 * ratelimit.WINDOW_SECONDS - 0.05
    for index in range(len(starts) - 4):
        assert (starts[index + 4] - starts[index]).total_seconds() >= ratelimit.WINDOW_SECONDS - 0.05


@pytest.mark.django_db
def test_without_redis_each_process_keeps_its_own_window(alice, make_subscription, publish, settings):
    settings.ASIRI_RATE_LIMIT_REDIS_URL = ""
    limited = make_subscription(alice, events=["limited"], rate_limit=2)
    publish("limited", 5)
    assert claimed_per_subscription(engine.claim_due(limit=100)) == {limited.id: 2}
    assert engine.claim_due(limit=100) == []


@pytest.mark.django_db
def test_a_redis_outage_holds_back_only_the_rate_limited_endpoints(alice, make_subscription, publish, settings):
    settings.ASIRI_RATE_LIMIT_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    make_subscription(alice, events=["limited"], rate_limit=100)
    other = make_subscription(alice, events=["other"])
    publish("limited", 3)
    publish("other", 3)
    throttled: dict[str, float] = {}
    assert claimed_per_subscription(engine.claim_due(limit=100, throttled=throttled)) == {other.id: 3}
    assert len(throttled) == 1


def test_take_sends_grants_what_fits_and_says_when_more_will():
    key, other = f"unit-{time.time_ns()}", f"other-{time.time_ns()}"
    assert ratelimit.take_sends({key: (5, 3), other: (1, 1)}) == {key: (3, 0.0), other: (1, 0.0)}
    answers = ratelimit.take_sends({key: (5, 4), other: (1, 1)})
    assert answers[key][0] == 2 and 0 < answers[key][1] <= ratelimit.WINDOW_SECONDS
    assert answers[other][0] == 0
    assert ratelimit.take_sends({key: (5, 1)})[key][0] == 0


def test_a_hanging_redis_is_asked_once_then_left_alone_for_a_while(settings):
    connections = []
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()

        def accept() -> None:
            with contextlib.suppress(OSError):
                while True:
                    connections.append(silent.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
        settings.ASIRI_RATE_LIMIT_REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        first = ratelimit.take_sends({"sub_a": (5, 1), "sub_b": (5, 1)})
        asked_first = len(connections)
        second = ratelimit.take_sends({"sub_c": (5, 1)})
        asked_then = len(connections)
    for connection in connections:
        connection.close()
    assert first == {"sub_a": (0, ratelimit.OUTAGE_WAIT), "sub_b": (0, ratelimit.OUTAGE_WAIT)}
    assert second == {"sub_c": (0, ratelimit.OUTAGE_WAIT)}
    # One round trip for the whole claim, then none until OUTAGE_WAIT has passed.
    assert (asked_first, asked_then) == (1, 1)


@pytest.mark.django_db
def test_the_database_refuses_a_rate_limit_below_one(alice, make_subscription):
    unlimited = make_subscription(alice)
    unlimited.full_clean()  # null is "no limit", not a violation
    with pytest.raises(IntegrityError), transaction.atomic():
        make_subscription(alice, rate_limit=0)
