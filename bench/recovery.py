#!/usr/bin/env python
"""Recovery benchmark: "your endpoint was down for an hour", at scale, on the real stack.

    python bench/recovery.py [--failed 10000] [--missed 500]   (or: make bench-recovery)

A fresh `asiri_bench_recover` database (Redis db 8), the fast receiver, and `web`, `worker` and `beat`
from the Procfile. One subscription has `--failed` deliveries that failed every attempt in the last hour
and `--missed` events published while it was paused; one `POST …/recover` call sends them all. Prints
how long the call took, when the recovery was `done` (its counts), and when the last request arrived.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import delivery as stack_tools  # noqa: E402 (the path above first)

DB_NAME = "asiri_bench_recover"
ENV = {
    **stack_tools.ENV,
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/8",
}
os.environ.update(ENV)


def prepare_database() -> None:
    import subprocess

    import psycopg
    import redis

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    redis.Redis.from_url(ENV["CELERY_BROKER_URL"]).flushdb()


def an_outage(tenant, url: str, failed: int, missed: int):
    """The subscription, its failed deliveries and the events it missed, written in bulk."""
    from django.utils import timezone

    from deliveries.models import Delivery, Event
    from webhooks.models import Subscription

    now = timezone.now()
    subscription = Subscription.objects.create(
        tenant=tenant, url=url, events=["invoice.*"], created_at=now - timedelta(days=1)
    )
    spread = timedelta(minutes=50)
    events = Event.objects.bulk_create(
        [
            Event(tenant=tenant, type="invoice.paid", data={"n": n}, created_at=now - spread * (n / failed))
            for n in range(failed)
        ],
        batch_size=2000,
    )
    Delivery.objects.bulk_create(
        [
            Delivery(
                tenant=tenant,
                event=event,
                subscription=subscription,
                event_type=event.type,
                status="failed",
                attempt_count=8,
                series_start=0,
                response_status_code=503,
                failure_reason="HTTP 503",
                created_at=event.created_at,
                last_attempt_at=event.created_at,
            )
            for event in events
        ],
        batch_size=2000,
    )
    Event.objects.bulk_create(
        [
            Event(tenant=tenant, type="invoice.created", data={"n": n}, created_at=now - spread * (n / missed))
            for n in range(missed)
        ],
        batch_size=2000,
    )
    return subscription


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--missed", type=int, default=500)
    args = parser.parse_args()

    say = stack_tools.say
    say("ASIRI Webhooks recovery benchmark")
    say(f"  machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    say(f"  preparing a fresh {DB_NAME} database")
    prepare_database()
    import django

    django.setup()
    import requests
    from django.utils import timezone

    from tenants.models import ApiKey, Tenant

    tenant = Tenant.objects.create(slug="bench", name="Benchmark")
    _, api_key = ApiKey.issue(tenant=tenant, scopes=["webhooks:read", "webhooks:write"])
    stack = stack_tools.Stack(Path(tempfile.mkdtemp(prefix="asiri-bench-recover-")))
    say("  starting receiver, web (gunicorn), worker and beat as the Procfile does")
    stack.start("receiver", f"{sys.executable} bench/receiver.py --ports {stack.fast_port}", "receiver ready")
    stack.start_service()
    try:
        say(f"  writing {args.failed:,} failed deliveries and {args.missed:,} missed events of the last hour")
        subscription = an_outage(tenant, f"http://127.0.0.1:{stack.fast_port}/hook", args.failed, args.missed)
        api = f"http://127.0.0.1:{stack.web_port}/v1/webhooks/subscriptions/{subscription.id}"
        headers = {"Authorization": f"Bearer {api_key}"}
        since = (timezone.now() - timedelta(hours=1)).isoformat()

        started = time.time()
        response = requests.post(f"{api}/recover", json={"since": since}, headers=headers, timeout=30)
        answered = time.time()
        assert response.status_code == 202, response.text
        recovery_id = response.json()["id"]
        while True:
            recovery = requests.get(f"{api}/recoveries/{recovery_id}", headers=headers, timeout=30).json()
            if recovery["status"] == "done":
                break
            if time.time() - started > 600:
                raise SystemExit(f"the recovery did not finish in 10 minutes: {recovery}")
            time.sleep(0.05)
        done = time.time()
        arrived = stack_tools.wait_for_unique(stack, args.failed + args.missed, timeout=600)
        stats = stack_tools.receiver_stats(stack)
        from deliveries.models import Recovery

        row = Recovery.objects.get(pk=recovery_id)
    finally:
        stack.down()

    say(f"\nPOST …/recover answered 202 in {(answered - started) * 1000:.0f} ms")
    say(
        f"recovery done after {done - started:.2f} s: redelivered {recovery['redelivered']:,}, "
        f"recovered_missed {recovery['recovered_missed']:,}"
    )
    run_seconds = (row.finished_at - row.started_at).total_seconds()
    say(f"  of which the run itself (started_at → finished_at): {run_seconds:.2f} s")
    say(
        f"all {args.failed + args.missed:,} received after {arrived - started:.2f} s "
        f"({stats['requests']:,} requests, {stats['unique']:,} distinct webhook-ids)"
    )


if __name__ == "__main__":
    main()
