"""Celery tasks: thin, idempotent, each calling one function. Enqueued after commit."""

from celery import shared_task

from deliveries.engine import pump, send_now
from deliveries.services import WAKEUP_EXPIRES, deliveries_dispatch, deliveries_purge_expired


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver(only_ids: list[str] | None = None) -> str:
    """A wake-up: send what is due, until nothing is or the time budget ends.

    `only_ids` is how test sends were named before they had deliver_now: wake-ups queued by an
    earlier release still carry it.
    """
    if only_ids:
        send_now(only_ids)
    stats = pump()
    if stats.reclaim:
        deliver.apply_async(expires=WAKEUP_EXPIRES)
    return str(stats)


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_now(delivery_ids: list[str]) -> str:
    """Test sends and redeliveries, on their own queue (ASIRI_PRIORITY_QUEUE): never behind a backlog."""
    return str(send_now(delivery_ids))


@shared_task(ignore_result=True)
def dispatch() -> str:
    return f"{deliveries_dispatch()} due"


@shared_task(ignore_result=True)
def purge_expired() -> str:
    return f"removed {deliveries_purge_expired()} deliveries"
