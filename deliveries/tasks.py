"""Celery tasks: thin, idempotent, each calling one function. Enqueued after commit."""

from celery import shared_task

from core.clock import database_now
from deliveries import shutdown, wakeups
from deliveries.engine import pump, send_now
from deliveries.models import deliveries_release_stranded
from deliveries.recovery import recovery_run
from deliveries.services import deliveries_dispatch, deliveries_purge_expired


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver() -> str:
    """A wake-up: send what is due, until nothing is, the time budget ends or the worker stops."""
    stats = pump()
    if stats.reclaim and not shutdown.requested():
        wakeups.send(wakeups.DELIVER)
    return str(stats)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_now(delivery_ids: list[str]) -> str:
    """Test sends and redeliveries, on their own queue (ASIRI_PRIORITY_QUEUE): never behind a backlog."""
    return str(send_now(delivery_ids))


@shared_task(ignore_result=True)
def dispatch() -> str:
    return f"{deliveries_dispatch()} due"


@shared_task(ignore_result=True)
def release_waiting() -> str:
    return f"released {deliveries_release_stranded(database_now())} waiting deliveries"


@shared_task(ignore_result=True)
def purge_expired() -> str:
    return f"removed {deliveries_purge_expired()} deliveries"


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def recover(recovery_id: str) -> str:
    recovery = recovery_run(recovery_id=recovery_id)
    if recovery is None:
        return f"{recovery_id}: taken or finished already"
    return f"{recovery_id}: {recovery.redelivered} redelivered, {recovery.recovered_missed} missed"
