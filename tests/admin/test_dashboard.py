from __future__ import annotations

from datetime import timedelta

from django.db.models import F

from deliveries.dashboard import dashboard_stats
from deliveries.models import DeliveryStatus, Pulse
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
    assert sum(b.total for b in stats["hourly"]) == 12
    assert [b.rate for b in stats["hourly"] if b.total] == [0.75]
    assert sum(b.total for b in stats["daily"]) == 16
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
