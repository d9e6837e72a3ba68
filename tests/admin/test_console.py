"""The console's second pass: redeliver says what it will do, a Redeliver button, exact times, short ids, "/"."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from deliveries.claims import claim_due
from deliveries.models import Delivery, DeliveryStatus
from webhooks.models import Subscription

LIST = "/admin/deliveries/delivery/"


def page(delivery: Delivery, suffix: str = "change/") -> str:
    return f"{LIST}{quote(delivery.pk)}/{suffix}"


@pytest.fixture
def four(alice, make_subscription, make_failed_delivery) -> dict[str, Delivery]:
    """A failed delivery, a retrying one, one a worker is sending, and one to a disabled endpoint."""
    live = make_subscription(alice, url="https://hooks.example.com/live")
    dead = make_subscription(alice, url="https://hooks.example.com/dead")
    made = {
        name: make_failed_delivery(live if name != "disabled" else dead, attempts=1)
        for name in ["failed", "retrying", "in_flight", "disabled"]
    }
    later = timezone.now() + timedelta(hours=2)
    Delivery.objects.filter(pk__in=[made["retrying"].pk, made["in_flight"].pk]).update(
        status=DeliveryStatus.RETRYING, next_attempt_at=later
    )
    Delivery.objects.filter(pk=made["in_flight"].pk).update(next_attempt_at=timezone.now())
    assert len(claim_due(limit=1, only_ids=[made["in_flight"].pk])) == 1
    Subscription.objects.filter(pk=dead.pk).update(active=False, disabled_reason="HTTP 410")
    return made


def test_the_confirmation_says_per_delivery_what_will_happen_before_anything_is_done(support_client, four):
    before = {d.pk: (d.status, d.next_attempt_at) for d in Delivery.objects.all()}
    form = {"action": "redeliver", "_selected_action": [d.pk for d in four.values()]}
    html = support_client.post(LIST, form).content.decode()
    rows = {pk: row for pk, row in re.findall(r"<tr class=\"\w+\"><td><code>(\w+)</code></td>(.*?)</tr>", html, re.S)}
    assert "A new series of attempts starts now with attempt 2" in rows[four["failed"].pk]
    assert "Attempt 2 is made now instead of at" in rows[four["retrying"].pk]
    assert "UTC" in rows[four["retrying"].pk]
    assert "Refused: An attempt is in flight" in rows[four["in_flight"].pk]
    assert "Refused: The subscription is paused or disabled" in rows[four["disabled"].pk]
    assert "<strong>2</strong> deliveries" in html
    hidden = re.findall(r'name="_selected_action" value="(\w+)"', html)
    assert sorted(hidden) == sorted([four["failed"].pk, four["retrying"].pk])  # only what will start
    assert {d.pk: (d.status, d.next_attempt_at) for d in Delivery.objects.all()} == before


def test_confirming_redelivers_and_messages_keep_ids_as_they_are(
    support_client, four, django_capture_on_commit_callbacks
):
    form = {"action": "redeliver", "_selected_action": [d.pk for d in four.values()], "confirmed": "yes"}
    with django_capture_on_commit_callbacks(execute=False):
        html = support_client.post(LIST, form, follow=True).content.decode()
    assert "Redelivering 2 deliveries." in html
    assert f"Not redelivered, {four['in_flight'].pk}: An attempt is in flight" in html
    assert f"Not redelivered, {four['disabled'].pk}: The subscription is paused or disabled" in html
    assert Delivery.objects.get(pk=four["retrying"].pk).next_attempt_at <= timezone.now()


def test_the_redeliver_button_posts_to_the_same_service(support_client, four, django_capture_on_commit_callbacks):
    retrying = four["retrying"]
    html = support_client.get(page(retrying)).content.decode()
    assert f'action="{page(retrying, "redeliver/")}"' in html and 'id="redeliver-button"' in html
    assert "instead of at" in html
    assert support_client.get(page(retrying, "redeliver/")).status_code == 405
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        done = support_client.post(page(retrying, "redeliver/"), follow=True)
    assert done.redirect_chain[-1][0] == page(retrying)
    assert f"Redelivering 1 delivery: {retrying.pk}." in done.content.decode() and len(callbacks) == 1
    assert Delivery.objects.get(pk=retrying.pk).next_attempt_at <= timezone.now()
    busy = support_client.post(page(four["in_flight"], "redeliver/"), follow=True).content.decode()
    assert f"Not redelivered, {four['in_flight'].pk}: An attempt is in flight" in busy
    assert (
        'id="redeliver-button" value="Redeliver" disabled'
        in support_client.get(page(four["disabled"])).content.decode()
    )


def test_the_redeliver_button_needs_the_permission(db, four):
    viewer = User.objects.create_user("vic", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client = Client()
    client.force_login(viewer)
    failed = four["failed"]
    assert 'id="redeliver-button"' not in client.get(page(failed)).content.decode()
    assert client.post(page(failed, "redeliver/")).status_code == 403
    assert Delivery.objects.get(pk=failed.pk).status == DeliveryStatus.FAILED


def test_times_show_seconds_and_the_timezone(support_client, four):
    failed = four["failed"]
    html = support_client.get(page(failed)).content.decode()
    started = timezone.localtime(failed.attempts.get().started_at)
    assert started.strftime("%Y-%m-%d %H:%M:%S UTC") in html
    assert "p.m." not in html and "a.m." not in html
    listing = support_client.get(LIST).content.decode()
    assert timezone.localtime(failed.created_at).strftime("%Y-%m-%d %H:%M:%S UTC") in listing


def test_an_ordinary_delivery_is_not_marked_with_a_red_cross(support_client, four):
    html = support_client.get(page(four["failed"])).content.decode()
    assert "icon-no.svg" not in html and "icon-yes.svg" not in html
    assert re.search(r"Test send:</label>\s*<div class=\"readonly\">no</div>", html)


def test_lists_show_short_ids_with_the_whole_id_on_hover_and_to_copy(support_client, four):
    failed = four["failed"]
    listing = support_client.get(LIST).content.decode()
    assert f'title="{failed.pk}">{failed.pk[:10]}…</span>' in listing
    assert f'data-copy="{failed.pk}"' in listing and f'data-copy="{failed.subscription_id}"' in listing
    subscriptions = support_client.get("/admin/webhooks/subscription/").content.decode()
    assert f'title="{failed.subscription_id}">{failed.subscription_id[:10]}…</span>' in subscriptions


def test_the_root_leads_to_the_api_reference_not_a_404(client, support_client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/docs"
    assert client.get("/docs").status_code == 200
    assert '<a href="/">View site</a>' in support_client.get("/admin/").content.decode()
