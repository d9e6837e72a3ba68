"""An outage is said when it starts, once a minute while it lasts and when it ends: not once per failure."""

from __future__ import annotations

import inspect
import logging
import sqlite3
import sys

import kombu.exceptions
import psycopg
import pytest
import redis.exceptions
from celery.beat import SchedulingError
from django.db import InterfaceError, OperationalError

from asiri import logs
from core.outages import REPEAT_SECONDS, Outage, summary, unreachable
from deliveries import tasks
from tests.support.canary import Canary

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


def through_django(error: Exception) -> Exception:
    """`error` as Django raises it from a database call: its own class, the driver's error as the cause."""
    wrapper = InterfaceError if isinstance(error, psycopg.InterfaceError) else OperationalError
    try:
        try:
            raise error
        except Exception as driver_error:
            raise wrapper(str(driver_error)) from driver_error
    except wrapper as wrapped:
        return wrapped


def refused_connection() -> psycopg.OperationalError:
    with Canary() as closed:  # bound on 127.0.0.1, never listening
        try:
            psycopg.connect(host="127.0.0.1", port=closed.port, user="postgres", dbname="asiri", connect_timeout=5)
        except psycopg.OperationalError as exc:
            return exc
    raise AssertionError("a closed port took a connection")


def test_only_a_refused_or_lost_connection_is_an_outage():
    assert unreachable(through_django(refused_connection()))
    assert unreachable(through_django(psycopg.errors.AdminShutdown("terminating connection")))
    assert unreachable(through_django(psycopg.errors.CannotConnectNow("the database system is starting up")))
    assert unreachable(through_django(psycopg.errors.ConnectionFailure("connection failure")))
    assert unreachable(InterfaceError("connection already closed"))
    # The database answered, and refused one statement: worth a retry and a traceback, not an outage.
    assert not unreachable(through_django(psycopg.errors.DeadlockDetected("deadlock detected")))
    assert not unreachable(through_django(psycopg.errors.QueryCanceled("canceling statement due to timeout")))
    assert not unreachable(through_django(sqlite3.OperationalError("database is locked")))
    assert not unreachable(ValueError("not a database error"))


@pytest.fixture
def outage(monkeypatch, clock):
    fresh = Outage("the database", clock=clock)
    monkeypatch.setattr(tasks, "DATABASE", fresh)
    return fresh


def test_a_task_that_meets_an_outage_says_it_once_and_one_that_then_works_says_it_ended(outage, caplog):
    refused = through_django(refused_connection())

    def dispatch() -> str:
        raise refused

    run = tasks._through_outages(dispatch)
    assert run() == run() == "dispatch: the database cannot be reached"
    assert tasks._through_outages(lambda: "done")() == "done"
    said = [record.getMessage() for record in caplog.records if record.name == "deliveries.tasks"]
    assert len(said) == 2 and said[0].startswith("dispatch: the database cannot be reached: connection failed")
    assert said[1] == "the database answers again, after 0 s and 2 failures"


def test_a_task_whose_statement_the_database_refused_raises_as_before(outage, caplog):
    deadlock = through_django(psycopg.errors.DeadlockDetected("deadlock detected"))

    def release_waiting() -> str:
        raise deadlock

    with pytest.raises(OperationalError):
        tasks._through_outages(release_waiting)()
    assert outage.failure_count == 0 and not caplog.records


def test_a_task_that_ended_normally_through_an_outage_does_not_say_it_ended(outage, caplog):
    def deliver() -> str:  # as a pump whose outcomes were left to their leases
        outage.failed(logging.getLogger("test.outages"), "outcomes", REFUSED)
        return "pump: sent 3"

    assert tasks._through_outages(deliver)() == "pump: sent 3"
    assert not any("answers again" in record.getMessage() for record in caplog.records)


def test_a_wrapped_task_keeps_its_signature_for_celerys_argument_check():
    assert list(inspect.signature(tasks.deliver_now.run).parameters) == ["delivery_ids"]
    with pytest.raises(TypeError):
        tasks.deliver_now.__header__(["dlv_1"], "one too many")


def beat_error(cause: Exception) -> logging.LogRecord:
    """The record celery.beat writes when a task could not be sent, as Scheduler.apply_entry writes it."""
    try:
        try:
            raise cause
        except Exception as exc:
            raise SchedulingError(f"Couldn't apply scheduled task dispatch-due-deliveries: {exc}") from None
    except SchedulingError:
        exc_info = sys.exc_info()
    exc_info[1].__context__ = cause  # `from None` only hides it from the traceback; beat's reraise keeps it
    return logging.LogRecord("celery.beat", logging.ERROR, __file__, 1, "Message Error: %s\n%s", (), exc_info)


def test_beat_says_a_lost_broker_once_and_keeps_the_traceback_of_anything_else(monkeypatch, clock, caplog):
    monkeypatch.setattr(logs, "BROKER", Outage("the broker", clock=clock))
    keep = logs.BeatOutageFilter().filter
    lost = kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    assert not keep(beat_error(lost)) and not keep(beat_error(lost))
    assert not keep(beat_error(redis.exceptions.ConnectionError("Connection closed by server.")))
    assert keep(beat_error(TypeError("dispatch() takes 0 positional arguments but 1 was given")))
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        "beat: the broker cannot be reached: Couldn't apply scheduled task dispatch-due-deliveries: "
        "Error 111 connecting to 127.0.0.1:6379. Connection refused."
    ]
