"""Whether the database holds every migration this code was shipped with.

Each Procfile process can start before the release step has run `migrate`: a first deploy, a release step that
failed, one process started alone. Until it has run, every statement fails with "relation does not exist". A
readiness probe answered `ok` then, so a load balancer sent traffic to a web process that failed every call with
a 500, and the worker wrote a traceback a second (beat's dispatcher). Now readiness says "migrations pending",
the API answers 503 and the tasks say it once a minute (core.outages), until `migrate` has run.
"""

from __future__ import annotations

import threading
import time

from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from core.outages import Outage

MIGRATIONS = Outage(
    "the database", problem="lacks migrations this code needs", over="has the migrations this code needs now"
)
# While migrations are pending, how often to look again: reading the migration files takes tens of milliseconds.
CHECK_EVERY = 5.0
HOW_TO_APPLY = "run `python manage.py migrate` (the Procfile's release step)"


class _Check:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._checked_at: float | None = None

    def pending(self) -> int:
        if self._checked_at is not None and not self._pending:
            return 0  # every migration applied stays so for this process's code: never asked again
        with self._lock:
            now = time.monotonic()
            if self._checked_at is None or now - self._checked_at >= CHECK_EVERY:
                executor = MigrationExecutor(connection)
                self._pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
                self._checked_at = now
            return self._pending

    def reset(self) -> None:
        with self._lock:
            self._pending, self._checked_at = 0, None


_check = _Check()


def pending_migrations() -> int:
    """How many of this code's migrations the database has not applied; 0, and never asked again, once none.

    Raises what the database raises if it cannot be asked.
    """
    return _check.pending()


def forget_checks() -> None:
    """For tests that take migrations away: look again at the next call."""
    _check.reset()


def pending_line(pending: int, error: BaseException | None = None) -> str:
    """How many are missing, what the database said (if it said something), and what to run."""
    if error is None:
        return f"{pending} not applied; {HOW_TO_APPLY}"
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{pending} not applied ({type(error).__name__}: {first_line}); {HOW_TO_APPLY}"


def missing_migrations(error: BaseException) -> str | None:
    """If `error` comes from a schema that lacks this code's migrations, a line that says so; else None."""
    try:
        pending = pending_migrations()
    except Exception:
        return None
    return pending_line(pending, error) if pending else None
