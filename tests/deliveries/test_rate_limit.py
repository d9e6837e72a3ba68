"""Per-subscription `rate_limit`: claims never exceed it in any one second, across workers."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from deliveries import engine, ratelimit
from deliveries.models import Attempt
from deliveries.services import event_publish


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
def test_a_claim_takes_no_more_than_the_rate_limit_and_leaves_the_rest_due(alice, make_subscription, publish):
    limited = make_subscription(alice, events=["limited"], rate_limit=3)
    other = make_subscription(alice, events=["other"])
    publish("limited", 10)
    publish("other", 10)
    throttled: dict[str, float] = {}
    claimed = engine.claim_due(limit=100, throttled=throttled)
    assert claimed_per_subscription(claimed) == {limited.id: 3, other.id: 10}
    assert set(throttled) == {limited.id}
    assert 0 < throttled[limited.id] - time.monotonic() <= ratelimit.WINDOW_SECONDS
    # Unclaimed rows stay due with no attempt: nothing was lost, they just wait.
    assert Attempt.objects.filter(delivery__subscription=limited).count() == 3


@pytest.mark.django_db
def test_the_window_is_shared_by_every_worker(alice, make_subscription, publish):
    limited = make_subscription(alice, events=["limited"], rate_limit=4)
    publish("limited", 10)
    first_worker = engine.claim_due(limit=2)
    second_worker = engine.claim_due(limit=100)  # its own empty `throttled`: only Redis knows
    third_worker = engine.claim_due(limit=100)
    assert [len(first_worker), len(second_worker), len(third_worker)] == [2, 2, 0]
    assert claimed_per_subscription(first_worker + second_worker) == {limited.id: 4}


@pytest.mark.django_db
def test_the_window_slides_a_second_later_it_has_room_again(alice, make_subscription, publish):
    make_subscription(alice, events=["limited"], rate_limit=5)
    publish("limited", 12)
    throttled: dict[str, float] = {}
    assert len(engine.claim_due(limit=100, throttled=throttled)) == 5
    assert engine.claim_due(limit=100, throttled=throttled) == []
    time.sleep(max(throttled.values()) - time.monotonic() + 0.01)
    assert len(engine.claim_due(limit=100, throttled=throttled)) == 5


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
    key = f"unit-{time.time_ns()}"
    assert ratelimit.take_sends(key, 5, 3) == (3, 0.0)
    granted, wait = ratelimit.take_sends(key, 5, 4)
    assert granted == 2 and 0 < wait <= ratelimit.WINDOW_SECONDS
    assert ratelimit.take_sends(key, 5, 1)[0] == 0
