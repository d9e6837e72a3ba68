from celery import shared_task

from deliveries.services import deliveries_dispatch_due, delivery_attempt


@shared_task(acks_late=True, reject_on_worker_lost=True)
def deliver(delivery_id: str) -> str:
    return delivery_attempt(delivery_id)


@shared_task
def dispatch_due_deliveries() -> str:
    return f"enqueued {deliveries_dispatch_due()}"
