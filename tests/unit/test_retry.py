"""The retry policy: data plus one function."""

from __future__ import annotations

import pytest

from deliveries.retry import JITTER, next_delay

SCHEDULE = (5, 300, 1800)


@pytest.mark.parametrize("failures", [1, 2, 3])
def test_each_failure_waits_its_scheduled_delay_within_the_jitter(failures):
    scheduled = SCHEDULE[failures - 1]
    delays = [next_delay(failures, SCHEDULE) for _ in range(200)]
    assert all(scheduled * (1 - JITTER) <= d <= scheduled * (1 + JITTER) for d in delays)
    assert len(set(delays)) > 1  # jittered, so endpoints that failed together are not retried together


def test_after_the_schedule_it_gives_up():
    assert next_delay(len(SCHEDULE) + 1, SCHEDULE) is None
    assert next_delay(0, SCHEDULE) is None


def test_retry_after_is_honoured_up_to_twice_the_scheduled_delay():
    assert next_delay(1, SCHEDULE, retry_after=60) == 10  # 60 s asked; twice the 5 s scheduled is the most
    assert next_delay(1, (100,), retry_after=150) == 150
    assert next_delay(1, (100,), retry_after=10_000) == 200
    assert 80 <= next_delay(1, (100,), retry_after=1) <= 120  # never sooner than the schedule
