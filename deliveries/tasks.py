"""Celery tasks: thin, idempotent, each calling one function. Enqueued after commit.

Each logs what it did, and nothing when it did nothing: Celery's own line per task is silenced (settings
_celery_chatter), since the dispatcher runs every second. A database that cannot be reached is said by
core.outages, not by a traceback from each task: none of these needs retrying, since the dispatcher wakes
pumps and recoveries again for whatever is due once the database answers.
"""

import functools
import inspect
import logging
from collections.abc import Callable

from celery import shared_task
from django.db import DatabaseError

from core.clock import database_now
from core.outages import DATABASE, unreachable
from core.schema import MIGRATIONS, missing_migrations
from deliveries import shutdown, wakeups
from deliveries.engine import pump, send_now
from deliveries.models import deliveries_release_stranded
from deliveries.recovery import recovery_run
from deliveries.services import deliveries_dispatch, deliveries_purge_expired

logger = logging.getLogger(__name__)


def _through_outages(task: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(task)
    def run(*args, **kwargs) -> str:
        failures_before = DATABASE.failure_count
        try:
            said = task(*args, **kwargs)
        except DatabaseError as exc:
            if unreachable(exc):
                if DATABASE.failure_count == failures_before:  # not said already on the way (the pump says its own)
                    DATABASE.failed(logger, task.__name__, exc)
                return f"{task.__name__}: the database cannot be reached"
            if missing := missing_migrations(exc):  # started before the release step ran `migrate`
                MIGRATIONS.failed(logger, task.__name__, missing)
                return f"{task.__name__}: the database lacks migrations"
            raise  # a deadlock, a timeout, a bug: Celery logs it with its traceback
        # A task can also end normally through an outage (outcomes left to their leases): it proves nothing then.
        if DATABASE.failure_count == failures_before:
            DATABASE.ended(logger)
        MIGRATIONS.ended(logger)
        return said

    # As the task's own, for Celery's check of the arguments a task is sent with (it reads no __wrapped__).
    run.__signature__ = inspect.signature(task)
    return run


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
@_through_outages
def deliver() -> str:
    """A wake-up: send what is due, until nothing is, the time budget ends or the worker stops."""
    stats = pump()
    if stats.reclaim and not shutdown.requested():
        wakeups.send(wakeups.DELIVER)
    return _said(f"pump: {stats}", stats.sent or stats.abandoned)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
@_through_outages
def deliver_now(delivery_ids: list[str]) -> str:
    """Test sends and redeliveries, on their own queue (ASIRI_PRIORITY_QUEUE): never behind a backlog."""
    stats = send_now(delivery_ids)
    return _said(f"sent now: {stats}", stats.sent or stats.abandoned)


@shared_task(ignore_result=True)
@_through_outages
def dispatch() -> str:
    due = deliveries_dispatch()
    return _said(f"dispatcher: {due} due", due)


@shared_task(ignore_result=True)
@_through_outages
def release_waiting() -> str:
    released = deliveries_release_stranded(database_now())
    return _said(f"waiting deliveries released: {released}", released)


@shared_task(ignore_result=True)
@_through_outages
def purge_expired() -> str:
    removed = deliveries_purge_expired()
    return _said(f"deliveries removed past the retention period: {removed}", removed)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
@_through_outages
def recover(recovery_id: str) -> str:
    recovery = recovery_run(recovery_id=recovery_id)
    if recovery is None:
        return _said(f"recovery {recovery_id}: taken or finished already", False)
    return _said(
        f"recovery {recovery_id}: {recovery.redelivered} redelivered, {recovery.recovered_missed} missed", True
    )


def _said(summary: str, worth_a_line: object) -> str:
    if worth_a_line:
        logger.info(summary)
    return summary
