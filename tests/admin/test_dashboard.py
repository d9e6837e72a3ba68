from __future__ import annotations

from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from deliveries.dashboard import dashboard_stats
from deliveries.models import Attempt, Delivery, DeliveryStatus, Pulse
from deliveries.services import deliveries_dispatch
from tests.support.factories import add_deliveries


def test_the_stats_count_outcomes_rates_failures_and_backlog(alice, make_subscription):
    good, bad = make_subscription(alice), make_subscription(alice, url="https://hooks.example.com/broken")
    add_deliveries(good, 9, status=DeliveryStatus.SUCCEEDED)
    add_deliveries(bad, 3, status=DeliveryStatus.FAILED)
    add_deliveries(good, 4, status=DeliveryStatus.SUCCEEDED, hours_ago=72)
    add_deliveries(good, 2, status=DeliveryStatus.PENDING, due=True)
    stats = dashboard_stats()
    assert stats["last_24h"] == {"pending": 2, "retrying": 0, "succeeded": 9, "failed": 3}
    assert stats["last_7d"]["succeeded"] == 13
    assert stats["top_failing"][0]["subscription_id"] == bad.id and stats["top_failing"][0]["failed"] == 3
    assert stats["backlog"] == 2 and 290 <= stats["oldest_due_seconds"] <= 400


def test_the_dashboard_draws_its_charts_and_links_to_failures(support_client, alice, make_subscription):
    bad = make_subscription(alice)
    add_deliveries(bad, 2, status=DeliveryStatus.FAILED)
    index = support_client.get("/admin/").content.decode()
    assert "/admin/dashboard/" in index
    html = support_client.get("/admin/dashboard/").content.decode()
    assert html.count('class="bar"') == 24 + 7
    assert 'id="hourly-chart"' in html and 'id="daily-chart"' in html
    assert f"?q={bad.id}&amp;status__exact=failed" in html or f"?q={bad.id}&status__exact=failed" in html


def test_the_dashboard_is_for_staff_only(client, db):
    assert client.get("/admin/dashboard/").status_code == 302  # to the login page


def test_the_dashboard_warns_when_the_dispatcher_has_been_silent(support_client, db):
    never = support_client.get("/admin/dashboard/").content.decode()
    assert 'id="dispatcher-warning"' in never and "never run" in never
    deliveries_dispatch()
    fresh = support_client.get("/admin/dashboard/").content.decode()
    assert 'id="dispatcher-warning"' not in fresh and 'id="dispatcher-age"' in fresh
    Pulse.objects.update(at=F("at") - timedelta(seconds=45))
    silent = support_client.get("/admin/dashboard/").content.decode()
    assert 'id="dispatcher-warning"' in silent and "not run for 45 s" in silent


def test_the_success_rate_counts_attempts_not_only_finished_deliveries(alice, make_subscription, make_failed_delivery):
    down = make_subscription(alice, url="https://hooks.example.com/down")
    old = make_failed_delivery(down, attempts=1, code=500)  # first: ids and start times rise together
    Attempt.objects.filter(delivery=old).update(started_at=timezone.now() - timedelta(days=3))
    retrying = make_failed_delivery(down, attempts=3, code=500)  # still retrying: no delivery has ended
    Delivery.objects.filter(pk=retrying.pk).update(status=DeliveryStatus.RETRYING)
    fine = make_failed_delivery(make_subscription(alice), attempts=1, code=200)
    Delivery.objects.filter(pk=fine.pk).update(status=DeliveryStatus.SUCCEEDED)
    Attempt.objects.create(delivery=fine, number=2)  # in flight: no outcome yet, not counted
    stats = dashboard_stats()
    assert sum(b.total for b in stats["hourly"]) == 4
    assert [b.rate for b in stats["hourly"] if b.total] == [0.25]
    assert sum(b.total for b in stats["daily"]) == 5 and sum(b.succeeded for b in stats["daily"]) == 1


def test_endpoints_failing_now_are_listed_with_since_error_and_waiting(
    support_client, alice, make_subscription, make_failed_delivery
):
    since = timezone.now() - timedelta(hours=3)
    down = make_subscription(alice, url="https://hooks.example.com/down", failing_since=since)
    also_down = make_subscription(
        alice, url="https://hooks.example.com/also-down", failing_since=since + timedelta(hours=1)
    )
    make_subscription(alice, url="https://hooks.example.com/fine")
    make_failed_delivery(down, attempts=1, code=503)
    add_deliveries(down, 3, status=DeliveryStatus.RETRYING, due=True)
    rows = dashboard_stats()["failing_now"]
    assert [r["id"] for r in rows] == [down.id, also_down.id]  # longest failing first, the fine one absent
    assert rows[0]["failing_since"] == since and rows[0]["last_error"] == "HTTP 503" and rows[0]["waiting"] == 3
    assert rows[1]["last_error"] is None and rows[1]["waiting"] is None
    html = support_client.get("/admin/dashboard/").content.decode()
    assert 'id="failing-now"' in html and "hooks.example.com/fine" not in html
    assert since.strftime("%Y-%m-%d %H:%M:%S UTC") in html
    waiting = support_client.get(f"/admin/deliveries/delivery/?q={down.id}&waiting=yes").content.decode()
    assert waiting.count('class="action-select"') == 3
    due = support_client.get("/admin/deliveries/delivery/?waiting=due").content.decode()
    assert due.count('class="action-select"') == 3
    failing = support_client.get("/admin/webhooks/subscription/?failing=yes").content.decode()
    assert down.id in failing and also_down.id in failing and "hooks.example.com/fine" not in failing


def test_nothing_failing_reads_so(support_client, db):
    html = support_client.get("/admin/dashboard/").content.decode()
    assert 'id="nothing-failing"' in html
