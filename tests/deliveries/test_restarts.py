"""Restarts as platforms do them, with real processes: a Celery worker and beat, Redis, PostgreSQL and a
receiver on 127.0.0.1 that takes 2 s to answer, so a backlog is in flight when the signal comes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from deliveries.models import Attempt, Delivery
from deliveries.services import event_publish
from tests.support import receiver as rx
from tests.support.processes import celery_beat, celery_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

DELIVERIES = 300
# Production's settings but for loopback targets, a brisk dispatcher and (for SIGKILL) a short lease.
ENV = {"ASIRI_ALLOW_PRIVATE_URLS": "1", "ASIRI_REQUIRE_HTTPS": "0", "ASIRI_DISPATCH_INTERVAL": "0.5"}


def start_backlog(alice, make_subscription, receiver: rx.Receiver) -> None:
    make_subscription(alice, url=receiver.url())
    for n in range(DELIVERIES):
        event_publish(tenant=alice, event_type="invoice.paid", data={"n": n})


def signal_worker(worker: subprocess.Popen, sig: int, *, group: bool) -> float:
    """Send `sig` to the worker's main process alone (Docker, Kubernetes) or its whole process group
    (Heroku, honcho, systemd); returns how long it took to exit."""
    sent = time.monotonic()
    if group:
        os.killpg(worker.pid, sig)
    else:
        os.kill(worker.pid, sig)
    try:
        worker.wait(timeout=30)
    finally:
        os.killpg(worker.pid, signal.SIGKILL) if worker.poll() is None else None
    return time.monotonic() - sent


@pytest.mark.parametrize("group", [True, False], ids=["process group", "main process"])
def test_sigterm_drains_in_flight_sends_within_10_s_and_nothing_arrives_twice(
    alice, make_subscription, empty_broker, tmp_path, group
):
    with rx.Receiver(delay=2) as receiver, celery_beat(tmp_path, **ENV):
        start_backlog(alice, make_subscription, receiver)
        with celery_worker(**ENV) as worker:
            assert wait_until(lambda: receiver.in_flight >= 100, timeout=30), receiver.in_flight
            took = signal_worker(worker, signal.SIGTERM, group=group)
        assert took < 10, f"the worker took {took:.1f} s to stop"
        assert worker.returncode == 0, "".join(worker.lines[-30:])
        assert Attempt.objects.filter(duration_ms__isnull=True).count() == 0  # nothing left half-done
        with celery_worker(**ENV):
            assert wait_until(lambda: len(receiver.ids()) >= DELIVERIES, timeout=60), len(receiver.ids())
            assert wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == DELIVERIES, timeout=20)
    ids = receiver.ids()
    assert set(ids) == set(Delivery.objects.values_list("id", flat=True))
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]
    assert Attempt.objects.count() == DELIVERIES  # one attempt each: the shutdown cost no retry


def test_sigkill_mid_backlog_loses_nothing_once_the_lease_ends(alice, make_subscription, empty_broker, tmp_path):
    env = {**ENV, "ASIRI_DELIVERY_LEASE": "10"}
    with rx.Receiver(delay=2) as receiver, celery_beat(tmp_path, **env):
        start_backlog(alice, make_subscription, receiver)
        with celery_worker(**env) as worker:
            assert wait_until(lambda: receiver.in_flight >= 100, timeout=30), receiver.in_flight
            signal_worker(worker, signal.SIGKILL, group=True)
        cut_short = Attempt.objects.filter(duration_ms__isnull=True).count()
        assert cut_short > 0  # the kill did land mid-send
        with celery_worker(**env):
            assert wait_until(lambda: len(receiver.ids()) >= DELIVERIES, timeout=90), len(receiver.ids())
            assert wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == DELIVERIES, timeout=30)
    ids = receiver.ids()
    assert set(ids) == set(Delivery.objects.values_list("id", flat=True))
    # At least once: only what was in flight at the kill may arrive twice.
    assert sum(n - 1 for n in ids.values()) <= cut_short
