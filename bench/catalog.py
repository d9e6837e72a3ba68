#!/usr/bin/env python
"""What the event catalog and payload filters cost at publish.

    python bench/catalog.py [--publishes 2000] [--fanouts 30]

In process, on a fresh `asiri_bench_catalog` database (PostgreSQL), through `event_publish` itself:

1. publish p50 of a 1 KB event whose type has no catalog entry, against the same event of a registered type whose
   schema it is validated against (target: at most +0.2 ms), measured alternately so both see the same machine;
2. one event fanned out to 1,000 subscriptions that each have a 3-condition filter (all matching, so the same
   deliveries are made) against the same 1,000 without filters (target: at most 1.5 ×).

Each publish runs in a transaction that is rolled back, so no wake-up is sent and the table does not grow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB_NAME = "asiri_bench_catalog"
os.environ.update(
    {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
        "CELERY_BROKER_URL": "memory://",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-never-used-in-production-0123456789",
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "ASIRI_LOG_LEVEL": "WARNING",
    }
)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asiri.settings")

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["invoice", "amount", "currency", "lines"],
    "properties": {
        "invoice": {"type": "string", "pattern": "^in_"},
        "customer": {"type": "string"},
        "amount": {"type": "integer", "minimum": 0},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku", "quantity", "unit_amount"],
                "properties": {
                    "sku": {"type": "string"},
                    "description": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "unit_amount": {"type": "integer", "minimum": 0},
                },
            },
        },
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
FILTER = {"type": "invoice.paid", "data": {"amount": {"$gte": 1000}, "currency": {"$in": ["EUR", "USD"]}}}


def payload_1kb() -> dict:
    lines = [
        {"sku": f"sku_{n:04}", "description": "Professional plan, monthly", "quantity": n + 1, "unit_amount": 1200}
        for n in range(9)
    ]
    data = {"invoice": "in_1234567890", "customer": "cus_42", "amount": 54000, "currency": "EUR", "lines": lines}
    data["metadata"] = {"order": "o_1"}
    import json

    size = len(json.dumps(data))
    data["metadata"]["pad"] = "x" * max(0, 1024 - size - 10)
    return data


def timed(function, repeat: int) -> list[float]:
    from django.db import transaction

    class Rollback(Exception):
        pass

    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            with transaction.atomic():
                function()
                raise Rollback
        except Rollback:
            pass
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--fanouts", type=int, default=30)
    args = parser.parse_args()
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    import django

    django.setup()
    import json

    from deliveries.services import event_publish
    from tenants.models import Tenant
    from webhooks.models import EventType, Subscription

    data = payload_1kb()
    print(f"payload: {len(json.dumps(data))} bytes of JSON")
    EventType.objects.create(name="invoice.paid", schema=SCHEMA, example=data)
    tenant = Tenant.objects.create(slug="bench", name="Benchmark")

    def publish(event_type: str, to=tenant) -> None:
        event_publish(tenant=to, event_type=event_type, data=data)

    timed(lambda: publish("invoice.paid"), 200)  # warm: connection, compiled schema, caches
    timed(lambda: publish("invoice.unlisted"), 200)
    plain, validated = [], []
    for _ in range(args.publishes // 100):
        plain += timed(lambda: publish("invoice.unlisted"), 100)
        validated += timed(lambda: publish("invoice.paid"), 100)
    p50_plain, p50_validated = statistics.median(plain), statistics.median(validated)
    print(
        f"1. publish p50, no schema {p50_plain:.3f} ms; with schema {p50_validated:.3f} ms; "
        f"difference {p50_validated - p50_plain:+.3f} ms (target <= +0.2)"
    )

    bare = Tenant.objects.create(slug="bench-bare", name="Without filters")
    filtered = Tenant.objects.create(slug="bench-filtered", name="With filters")
    for owner, rule in ((bare, None), (filtered, FILTER)):
        Subscription.objects.bulk_create(
            Subscription(tenant=owner, url=f"https://hooks.example.com/{n}", events=["invoice.*"], filter=rule)
            for n in range(1000)
        )
    timed(lambda: publish("invoice.paid", bare), 3)
    timed(lambda: publish("invoice.paid", filtered), 3)
    without, with_filters = [], []
    for _ in range(args.fanouts):
        without += timed(lambda: publish("invoice.paid", bare), 1)
        with_filters += timed(lambda: publish("invoice.paid", filtered), 1)
    p50_without, p50_with = statistics.median(without), statistics.median(with_filters)
    print(
        f"2. fan-out to 1,000 subscriptions p50, without filters {p50_without:.1f} ms; with a 3-condition "
        f"filter each {p50_with:.1f} ms; ratio {p50_with / p50_without:.2f} (target <= 1.5)"
    )


if __name__ == "__main__":
    main()
