"""Support recovers a time range from the admin (counts first), and the bulk redeliver names what it left out."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Recovery
from deliveries.recovery import recovery_run
from deliveries.services import event_publish
from webhooks.models import Subscription


@pytest.fixture
def outage(alice, make_subscription, make_failed_delivery) -> Subscription:
    """Two failed deliveries and one event missed while paused, all in the last hour."""
    subscription = make_subscription(alice, created_at=timezone.now() - timedelta(days=1))
    make_failed_delivery(subscription)
    make_failed_delivery(subscription)
    Subscription.objects.filter(pk=subscription.pk).update(active=False)
    event_publish(tenant=alice, event_type="invoice.paid", data={})
    Subscription.objects.filter(pk=subscription.pk).update(active=True)
    return subscription


def recover_url(subscription: Subscription) -> str:
    return f"/admin/webhooks/subscription/{quote(subscription.id)}/recover/"


def a_range() -> dict[str, str]:
    now = timezone.now()
    return {"since": (now - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"), "until": ""}


def test_support_recovers_after_seeing_the_counts(support_client, outage, django_capture_on_commit_callbacks):
    action = support_client.post(
        "/admin/webhooks/subscription/", {"action": "recover", "_selected_action": [outage.pk]}
    )
    assert action.status_code == 302 and action["Location"] == recover_url(outage)
    assert support_client.get(recover_url(outage)).status_code == 200

    confirmation = support_client.post(recover_url(outage), a_range()).content.decode()
    assert "<strong>2</strong> failed deliveries" in confirmation
    assert "<strong>1</strong> missed event " in confirmation
    assert not Recovery.objects.exists(), "nothing is done before the confirmation"

    hidden = dict(re.findall(r'name="(since|until)" value="([^"]*)"', confirmation))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        done = support_client.post(recover_url(outage), {**hidden, "confirmed": "yes"}, follow=True)
    (recovery,) = Recovery.objects.all()
    assert recovery.status == "queued" and len(callbacks) == 1
    assert f"Recovery {recovery.id} queued" in done.content.decode()

    recovery_run(recovery_id=recovery.id)
    page = support_client.get(f"/admin/webhooks/subscription/{quote(outage.id)}/change/").content.decode()
    assert recovery.id in page and "Recover a time range" in page
    assert Delivery.objects.filter(subscription=outage, status=DeliveryStatus.PENDING).count() == 3


def test_a_paused_subscription_or_a_bad_range_is_refused_in_the_form(support_client, outage):
    too_old = {"since": (timezone.now() - timedelta(days=15)).strftime("%Y-%m-%d %H:%M:%S")}
    assert "at most 14 days ago" in support_client.post(recover_url(outage), too_old).content.decode()
    Subscription.objects.filter(pk=outage.pk).update(active=False)
    assert "re-enable it first" in support_client.post(recover_url(outage), a_range()).content.decode()
    assert not Recovery.objects.exists()


def test_staff_without_the_permission_cannot_recover(db, outage):
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_subscription"))
    client = Client()
    client.force_login(user)
    assert client.post(recover_url(outage), {**a_range(), "confirmed": "yes"}).status_code == 403
    assert not Recovery.objects.exists()


def test_a_bulk_redeliver_over_the_cap_says_how_many_it_left_out(
    support_client, alice, make_subscription, make_failed_delivery, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("deliveries.admin.REDELIVER_CAP", 2)
    subscription = make_subscription(alice)
    ids = [make_failed_delivery(subscription).pk for _ in range(5)]
    form = {"action": "redeliver", "_selected_action": ids, "select_across": "1", "index": "0"}
    confirmation = support_client.post("/admin/deliveries/delivery/", form).content.decode()
    assert "<strong>3</strong>" in confirmation and "will <strong>not</strong> be sent" in confirmation
    confirmed = dict(re.findall(r'name="(left_out)" value="([^"]*)"', confirmation))
    assert confirmed == {"left_out": "3"}
    with django_capture_on_commit_callbacks(execute=False):
        done = support_client.post(
            "/admin/deliveries/delivery/",
            {"action": "redeliver", "_selected_action": ids[:2], "confirmed": "yes", **confirmed},
            follow=True,
        ).content.decode()
    assert "Redelivering 2 deliveries" in done and "3 of the selected deliveries were not redelivered" in done
    assert Delivery.objects.filter(status=DeliveryStatus.PENDING).count() == 2


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        # Python takes offsets up to ±23:59, PostgreSQL only to ±15:59: taken as UTC, not passed on.
        ("{recent}+23:59", "", None),
        ("{recent}", "9999-12-31T23:59:59-14:00", "Out of range"),  # past year 9999 in UTC
        ("0001-01-01T00:00:00+14:00", "", "Out of range"),
        ("{future}", "", "Must be in the past"),
    ],
)
def test_odd_moments_in_the_form_are_read_as_utc_or_refused_with_the_reason(
    support_client, outage, since, until, message
):
    now = timezone.now()
    moments = {
        "{recent}": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
        "{future}": (now + timedelta(days=1)).isoformat(),
    }
    for placeholder, moment in moments.items():
        since = since.replace(placeholder, moment)
    response = support_client.post(recover_url(outage), {"since": since, "until": until})
    assert response.status_code == 200
    page = response.content.decode()
    if message:
        assert message in page
    else:
        assert "Recover" in page and "errorlist" not in page
    assert not Recovery.objects.exists()


@pytest.mark.parametrize(("posted", "said"), [("²", None), ("-1", None), ("10000", "10,000 or more of the selected")])
def test_the_left_out_count_echoed_by_the_confirmation_is_read_as_ascii_digits_only(
    support_client, alice, make_subscription, make_failed_delivery, posted, said, django_capture_on_commit_callbacks
):
    delivery = make_failed_delivery(make_subscription(alice))
    form = {"action": "redeliver", "_selected_action": [delivery.pk], "confirmed": "yes", "left_out": posted}
    with django_capture_on_commit_callbacks(execute=False):
        done = support_client.post("/admin/deliveries/delivery/", form, follow=True)
    assert done.status_code == 200
    page = done.content.decode()
    assert "Redelivering 1 delivery" in page
    assert ("were not redelivered" in page) == (said is not None)
    if said:
        assert said in page
