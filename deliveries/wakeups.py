"""Wake-ups: a hint to workers that deliveries are due. Best effort by design.

The rows are the source of truth and the dispatcher wakes workers for whatever is due every second,
so a wake-up the broker cannot take is dropped, not waited for: publishing and test sends answer at
once through a broker outage. Tasks are named, not imported: the tasks call the services that wake.
"""

from __future__ import annotations

import time

from celery import current_app
from django.db import transaction

from core.redis import Breaker

DELIVER = "deliveries.tasks.deliver"
DELIVER_NOW = "deliveries.tasks.deliver_now"
# A wake-up older than this is dropped: the dispatcher will have sent a fresher one if work is due.
EXPIRES = 60
# A worker woken less than this ago is still pumping (it lingers longer than this before it stops),
# so a burst of publishes costs one wake-up, not one each. Must stay well below engine.IDLE_LINGER.
COALESCE = 0.05

breaker = Breaker("worker wake-ups", pause=5.0, consequence="the dispatcher wakes workers once the broker is back")


class Waker:
    """Sends wake-ups, coalescing bursts; one per process (`waker`), replaceable in tests."""

    def __init__(self) -> None:
        self.last = 0.0

    def pumps(self, count: int = 1) -> None:
        now = time.monotonic()
        if count == 1 and now - self.last < COALESCE:
            return
        self.last = now
        for _ in range(count):
            if not send(DELIVER):
                return

    def these(self, delivery_ids: list[str]) -> None:
        # send_now sends just these and stops: it is no pump for later publishes to rely on.
        send(DELIVER_NOW, [delivery_ids])


waker = Waker()


def send(task: str, args: list | None = None) -> bool:
    """Queue one task without retrying; False when the broker did not take it."""
    if not breaker.allows():
        return False
    try:
        current_app.send_task(task, args=args, expires=EXPIRES, retry=False)
    except Exception as exc:  # kombu's OperationalError, a Redis error, a socket error: all mean "not now"
        breaker.failed(exc)
        return False
    breaker.succeeded()
    return True


def wake_after_commit(count: int = 1, *, only_ids: list[str] | None = None) -> None:
    """After the caller's transaction commits, ask workers to send what is due (or just `only_ids`)."""
    if only_ids is not None:
        transaction.on_commit(lambda: waker.these(only_ids))
    else:
        transaction.on_commit(lambda: waker.pumps(count))
