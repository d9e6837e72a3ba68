"""A service this process depends on (the database, the broker) that cannot be reached: said when the outage
starts, once a minute while it lasts, and when it ends.

Said with a traceback by every request, readiness probe and task that met it, a database outage of 45 s wrote
some 200 lines a minute from one web and one worker process (every API call twice, every probe twice, the
dispatcher every second), with nothing in them the first line had not said. The access log still shows each
503 (asiri.logs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from django.db import InterfaceError, OperationalError

# What a database raises, through Django, for a statement worth trying again: it could not be reached, it
# dropped the connection, or it gave up on the statement (a deadlock, a timeout). Only the first two are an
# outage (`unreachable`); the others are logged as what they are.
DATABASE_TRANSIENT = (OperationalError, InterfaceError)
# PostgreSQL's codes for a connection lost or refused: class 08, and the server shutting down or starting.
_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03")
# While an outage lasts, a line at most this often; a failure after this long without one starts a new outage.
REPEAT_SECONDS = 60.0


def summary(error: BaseException | str) -> str:
    """The error on one line, as psycopg and kombu word it: the server, the port and its answer."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def unreachable(error: BaseException) -> bool:
    """Whether a database error says the server could not be reached or dropped the connection, rather than
    that it refused one statement (a deadlock, a timeout, a full disk) or SQLite's file said no."""
    if isinstance(error, InterfaceError):  # Django's, on a connection already closed
        return True
    cause = error.__cause__ if isinstance(error, OperationalError) else None
    if not isinstance(cause, psycopg.Error):
        return False
    # psycopg gives no code when it could not talk to the server at all: a refused or lost connection.
    return cause.sqlstate is None or cause.sqlstate.startswith(_CONNECTION_STATES)


class Outage:
    """One dependency's outages, as this process sees them; safe to share between threads."""

    def __init__(
        self,
        what: str,
        *,
        problem: str = "cannot be reached",
        over: str = "answers again",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.problem = problem
        self.over = over
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # the first failure of the outage under way
        self._last_failure = 0.0
        self._said_at = 0.0
        self._unsaid = 0  # failures since the last line
        self._failures = 0
        self.failure_count = 0  # every failure this process saw, never reset: a caller can tell if it added one

    def failed(self, log: logging.Logger, where: str, error: BaseException | str) -> None:
        """Count a failure to reach it; log a line if it starts an outage or the last line is a minute old."""
        with self._lock:
            now = self._clock()
            starts = self._since is None or now - self._last_failure >= REPEAT_SECONDS
            if starts:
                self._since, self._failures, self._unsaid = now, 0, 0
            self._last_failure = now
            self._failures += 1
            self.failure_count += 1
            if not starts and now - self._said_at < REPEAT_SECONDS:
                self._unsaid += 1
                return
            unsaid, lasted = self._unsaid, now - self._since
            self._said_at, self._unsaid = now, 0
        if starts:
            log.error("%s: %s %s: %s", where, self.what, self.problem, summary(error))
        else:
            log.error(
                "%s: %s still %s after %.0f s (%d more failures since the last line): %s",
                where,
                self.what,
                self.problem,
                lasted,
                unsaid,
                summary(error),
            )

    def ended(self, log: logging.Logger) -> None:
        """It answered: if an outage was under way, say that it is over and how long it lasted."""
        if self._since is None:  # the usual case, read without the lock
            return
        with self._lock:
            if self._since is None:
                return
            lasted, failures = self._clock() - self._since, self._failures
            self._since = None
        log.warning("%s %s, after %.0f s and %d failures", self.what, self.over, lasted, failures)


DATABASE = Outage("the database")
BROKER = Outage("the broker")
