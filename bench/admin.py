#!/usr/bin/env python
"""Admin list pages with a million deliveries: each must open in under a second.

    python bench/admin.py [--rows 1000000]    (or: make bench-admin)

Fills a fresh `asiri_bench` database (PostgreSQL) with ROWS deliveries (one attempt each), then
renders every admin page support staff use, in process with Django's test client as a logged-in
superuser, and prints the median and worst of several renders beside the same page on an
almost empty table (the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import delivery as bench

REPEAT = 5


def pages(context: dict) -> dict[str, str]:
    from django.contrib.admin.utils import quote  # admin URLs escape "_" and what follows it

    return {
        "deliveries": "/admin/deliveries/delivery/",
        "deliveries, failed": "/admin/deliveries/delivery/?status__exact=failed",
        "deliveries, 5xx": "/admin/deliveries/delivery/?response=5xx",
        "deliveries, event type": "/admin/deliveries/delivery/?event_type=bench.fill",
        "deliveries, tenant": f"/admin/deliveries/delivery/?tenant__id__exact={context['tenant_id']}",
        "deliveries, one day": "/admin/deliveries/delivery/?" + context["day_query"],
        "search by event id": f"/admin/deliveries/delivery/?q={context['event_id']}",
        "search by delivery id": f"/admin/deliveries/delivery/?q={context['delivery_id']}",
        "delivery detail": f"/admin/deliveries/delivery/{quote(context['delivery_id'])}/change/",
        "subscriptions": "/admin/webhooks/subscription/",
        "events": "/admin/deliveries/event/",
        "dashboard": "/admin/dashboard/",
    }


def measure(client, url: str) -> tuple[float, float]:
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    bench.say("ASIRI admin benchmark")
    bench.prepare_database()
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client

    from deliveries.models import Delivery
    from tenants.models import Tenant
    from webhooks.services import subscription_create

    tenant = Tenant.objects.create(slug="bench", name="Benchmark")
    subscription = subscription_create(tenant=tenant, url="https://hooks.example.com/bench", events=["*"])
    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.create_superuser("bench", password="x"))  # axes: login() needs a request

    def context() -> dict:
        row = Delivery.objects.order_by("-created_at").first()
        day = row.created_at
        return {
            "tenant_id": tenant.id,
            "event_id": row.event_id,
            "delivery_id": row.id,
            "day_query": f"created_at__year={day.year}&created_at__month={day.month}&created_at__day={day.day}",
        }

    bench.fill_log(subscription.id, tenant.id, 50)
    baseline = {name: measure(client, url) for name, url in pages(context()).items()}
    bench.say(f"  filling the delivery table with {args.rows:,} rows")
    Delivery.objects.all().delete()
    from deliveries.models import Event

    Event.objects.all().delete()
    bench.fill_log(subscription.id, tenant.id, args.rows)
    bench.say(f"\n  {'page':24s} {'50 rows':>16s} {f'{args.rows:,} rows':>22s}   ratio")
    for name, url in pages(context()).items():
        median, worst = measure(client, url)
        base = baseline[name][0]
        flag = "" if worst < 1000 else "   over 1 s"
        bench.say(
            f"  {name:24s} {base:9.1f} ms med  {median:9.1f} ms med {worst:7.1f} max  {median / base:5.1f}x{flag}"
        )


if __name__ == "__main__":
    main()
