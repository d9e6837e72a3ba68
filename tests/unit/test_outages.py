"""An outage is said when it starts, once a minute while it lasts and when it ends: not once per failure."""

from __future__ import annotations

import logging

import psycopg
import pytest
from django.db import OperationalError

from core.outages import REPEAT_SECONDS, Outage, summary

REFUSED = OperationalError(
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "asiri" is not\n'
    "currently accepting connections"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.DEBUG, logger="test.outages")
    logger = logging.getLogger("test.outages")

    def lines() -> list[tuple[str, str]]:
        said = [(record.levelname, record.getMessage()) for record in caplog.records]
        assert not any(record.exc_info for record in caplog.records), "an outage line carries no traceback"
        caplog.clear()
        return said

    logger.lines = lines
    return logger


def test_a_burst_of_failures_is_one_line_naming_where_what_and_why(clock, log):
    outage = Outage("the database", clock=clock)
    for _ in range(50):
        outage.failed(log, "POST /v1/events", REFUSED)
        clock.now += 0.5
    assert log.lines() == [
        (
            "ERROR",
            'POST /v1/events: the database cannot be reached: connection failed: connection to server at "127.0.0.1", '
            'port 5432 failed: FATAL: database "asiri" is not currently accepting connections',
        )
    ]


def test_a_long_outage_is_said_again_once_a_minute_with_the_failures_between(clock, log):
    outage = Outage("the database", clock=clock)
    outage.failed(log, "dispatch", REFUSED)
    for _ in range(int(REPEAT_SECONDS)):  # one a second, for a minute
        clock.now += 1
        outage.failed(log, "dispatch", REFUSED)
    said = log.lines()
    assert len(said) == 2
    assert said[1][0] == "ERROR"
    assert said[1][1].startswith("dispatch: the database still cannot be reached after 60 s (59 more failures")


def test_its_end_says_how_long_it_lasted_and_the_next_failure_starts_a_new_one(clock, log):
    outage = Outage("the database", clock=clock)
    outage.ended(log)
    assert log.lines() == []  # nothing was wrong
    for _ in range(3):
        outage.failed(log, "dispatch", REFUSED)
        clock.now += 10
    log.lines()
    outage.ended(log)
    outage.ended(log)
    assert log.lines() == [("WARNING", "the database answers again, after 30 s and 3 failures")]
    clock.now += 5
    outage.failed(log, "readiness", REFUSED)
    assert [message for _, message in log.lines()] == [f"readiness: the database cannot be reached: {summary(REFUSED)}"]


def test_failures_a_minute_apart_with_no_end_seen_are_separate_outages(clock, log):
    # A process that never sees the database answer (a web node between probes) still says a new outage
    # as new, not as the old one going on for days.
    outage = Outage("the database", clock=clock)
    outage.failed(log, "GET /v1/webhooks/subscriptions", REFUSED)
    clock.now += REPEAT_SECONDS * 60
    outage.failed(log, "GET /v1/webhooks/subscriptions", REFUSED)
    assert [message.split(": the database ")[1][:17] for _, message in log.lines()] == ["cannot be reached"] * 2


def test_a_summary_is_one_line_and_bounded():
    assert summary(psycopg.OperationalError("a\n  b\tc")) == "a b c"
    assert summary(OperationalError()) == "OperationalError"
    long = summary(OperationalError("x" * 1000))
    assert len(long) == 300 and long.endswith("…")
