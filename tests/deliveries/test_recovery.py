"""Recovering a time range: the API's answers, and what a run touches and leaves alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries.models import Delivery, DeliveryStatus, Event, Recovery
from deliveries.recovery import recovery_preview, recovery_run, subscription_recover
from deliveries.services import deliveries_dispatch, event_publish
from webhooks.models import Subscription

SUBS = "/v1/webhooks/subscriptions"


def iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def subscription(alice, make_subscription) -> Subscription:
    return make_subscription(alice, created_at=timezone.now() - timedelta(days=2))


def recover(api, subscription: Subscription, body: dict):
    return api.post(f"{SUBS}/{subscription.id}/recover", body, format="json")


def test_it_queues_a_recovery_and_answers_202(api, subscription, django_capture_on_commit_callbacks):
    since = timezone.now() - timedelta(hours=1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = recover(api, subscription, {"since": iso(since)})
    assert response.status_code == 202
    body = response.json()
    assert body["id"].startswith("rcv_") and body["status"] == "queued"
    assert body["redelivered"] is None and body["recovered_missed"] is None
    assert set(body) == {"id", "status", "since", "until", "redelivered", "recovered_missed", "created_at"}
    assert len(callbacks) == 1, "one wake-up, after commit"
    recovery = Recovery.objects.get(pk=body["id"])
    assert recovery.since == since and recovery.until <= timezone.now()
    fetched = api.get(f"{SUBS}/{subscription.id}/recoveries/{body['id']}")
    assert fetched.status_code == 200 and fetched.json() == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"since": 1700000000}, "since"),
        ({"since": "2026-11-30 10:00:00"}, "since"),  # ISO 8601 but not RFC 3339
        ({"since": "{recent}", "until": "2026-13-01T00:00:00Z"}, "until"),
        ({"since": "{too_old}"}, "since"),
        ({"since": "{recent}", "until": "{recent}"}, "until"),  # since == until
        ({"since": "{recent}", "until": "{earlier}"}, "until"),
        ({"since": "{recent}", "limit": 5}, "limit"),
    ],
)
def test_a_bad_range_is_a_400_naming_the_field(api, subscription, body, field):
    now = timezone.now()
    moments = {
        "{recent}": iso(now - timedelta(hours=1)),
        "{earlier}": iso(now - timedelta(hours=2)),
        "{too_old}": iso(now - timedelta(days=14, minutes=1)),
    }
    body = {key: moments.get(value, value) if isinstance(value, str) else value for key, value in body.items()}
    response = recover(api, subscription, body)
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not Recovery.objects.exists()


def test_since_may_be_almost_fourteen_days_ago(api, subscription):
    response = recover(api, subscription, {"since": iso(timezone.now() - timedelta(days=14) + timedelta(minutes=1))})
    assert response.status_code == 202


@pytest.mark.parametrize("reason", [None, "Endpoint answered 410 Gone."])
def test_a_paused_or_disabled_subscription_is_a_409(api, subscription, reason):
    Subscription.objects.filter(pk=subscription.pk).update(active=False, disabled_reason=reason)
    response = recover(api, subscription, {"since": iso(timezone.now() - timedelta(hours=1))})
    assert response.status_code == 409
    assert "re-enable it first" in response.json()["detail"]
    assert not Recovery.objects.exists()


def test_other_tenants_and_other_subscriptions_get_404(
    api, client_for, charlie, alice, subscription, make_subscription
):
    recovery = subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1))
    charlies = client_for(charlie)
    body = {"since": iso(timezone.now() - timedelta(hours=1))}
    assert recover(charlies, subscription, body).status_code == 404
    assert charlies.get(f"{SUBS}/{subscription.id}/recoveries/{recovery.id}").status_code == 404
    other = make_subscription(alice)
    assert api.get(f"{SUBS}/{other.id}/recoveries/{recovery.id}").status_code == 404
    assert api.get(f"{SUBS}/{subscription.id}/recoveries/rcv_Unknown0000000000000").status_code == 404
    assert Recovery.objects.count() == 1


def publish_while_paused(subscription: Subscription, *types: str) -> list[Event]:
    Subscription.objects.filter(pk=subscription.pk).update(active=False)
    events = [event_publish(tenant=subscription.tenant, event_type=t, data={"n": i}) for i, t in enumerate(types)]
    Subscription.objects.filter(pk=subscription.pk).update(active=True)
    subscription.refresh_from_db()
    return events


def test_a_run_restarts_failed_deliveries_and_delivers_missed_events_only(
    alice, charlie, subscription, make_subscription, make_failed_delivery
):
    failed = [make_failed_delivery(subscription, attempts=3) for _ in range(3)]
    untouched = {status: make_failed_delivery(subscription) for status in ("pending", "retrying", "succeeded")}
    for status, delivery in untouched.items():
        Delivery.objects.filter(pk=delivery.pk).update(status=status)
    other_subscription = make_failed_delivery(make_subscription(alice))
    # (its event went to that subscription only: published before ours existed)
    Event.objects.filter(pk=other_subscription.event_id).update(created_at=timezone.now() - timedelta(days=3))
    missed = publish_while_paused(subscription, "invoice.paid", "customer.created")
    publish_while_paused(subscription, "asiri.subscription.failing", "webhook.test")  # reserved: `*` misses them
    event_publish(tenant=charlie, event_type="invoice.paid", data={})  # another tenant's
    before_subscription = Event.objects.create(
        tenant=alice, type="invoice.paid", created_at=timezone.now() - timedelta(days=3)
    )

    recovery = subscription_recover(subscription=subscription, since=timezone.now() - timedelta(days=4))
    done = recovery_run(recovery_id=recovery.id)

    assert done.status == "done" and done.finished_at is not None
    assert (done.redelivered, done.recovered_missed) == (3, 2)
    for delivery in failed:
        delivery.refresh_from_db()
        assert delivery.status == "pending" and delivery.series_start == 3 and delivery.failure_reason == ""
    for status, delivery in untouched.items():
        assert Delivery.objects.get(pk=delivery.pk).status == status
    assert Delivery.objects.get(pk=other_subscription.pk).status == "failed"
    created = Delivery.objects.filter(subscription=subscription, event__in=missed)
    assert sorted(created.values_list("event_type", flat=True)) == ["customer.created", "invoice.paid"]
    assert all(d.status == "pending" and d.next_attempt_at is not None for d in created)
    assert not Delivery.objects.filter(event=before_subscription).exists()
    assert not Delivery.objects.filter(subscription=subscription, event_type__startswith="asiri.").exists()


def test_a_run_leaves_what_is_outside_the_range(subscription, make_failed_delivery):
    inside = make_failed_delivery(subscription)
    earlier = make_failed_delivery(subscription)
    Delivery.objects.filter(pk=earlier.pk).update(created_at=timezone.now() - timedelta(hours=3))
    recovery = subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1))
    assert recovery_run(recovery_id=recovery.id).redelivered == 1
    assert Delivery.objects.get(pk=inside.pk).status == "pending"
    assert Delivery.objects.get(pk=earlier.pk).status == "failed"


def test_a_pattern_naming_the_reserved_namespace_recovers_it(alice, make_subscription):
    subscription = make_subscription(alice, events=["asiri.*"], created_at=timezone.now() - timedelta(days=1))
    publish_while_paused(subscription, "asiri.subscription.failing", "invoice.paid")
    recovery = subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1))
    assert recovery_run(recovery_id=recovery.id).recovered_missed == 1


def test_running_it_twice_touches_nothing_twice(subscription, make_failed_delivery):
    make_failed_delivery(subscription)
    publish_while_paused(subscription, "invoice.paid")
    since = timezone.now() - timedelta(hours=1)
    first = recovery_run(recovery_id=subscription_recover(subscription=subscription, since=since).id)
    second = recovery_run(recovery_id=subscription_recover(subscription=subscription, since=since).id)
    assert (first.redelivered, first.recovered_missed) == (1, 1)
    assert (second.redelivered, second.recovered_missed) == (0, 0)
    assert Delivery.objects.filter(subscription=subscription).count() == 2


def test_a_recovery_runs_once_whoever_asks(subscription, make_failed_delivery):
    make_failed_delivery(subscription)
    recovery = subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1))
    assert recovery_run(recovery_id=recovery.id) is not None
    assert recovery_run(recovery_id=recovery.id) is None


def test_it_works_in_batches(subscription, settings, monkeypatch, make_failed_delivery):
    monkeypatch.setattr("deliveries.recovery.RECOVERY_BATCH", 2)
    for _ in range(5):
        make_failed_delivery(subscription)
    publish_while_paused(subscription, *["invoice.paid"] * 5)
    recovery = subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1))
    done = recovery_run(recovery_id=recovery.id)
    assert (done.redelivered, done.recovered_missed) == (5, 5)
    assert not Delivery.objects.filter(status=DeliveryStatus.FAILED).exists()


def test_the_dispatcher_wakes_a_queued_recovery_whose_wake_up_was_lost(subscription, monkeypatch):
    sent = []
    monkeypatch.setattr("deliveries.wakeups.send", lambda task, args=None: sent.append((task, args)) or True)
    fresh = subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1))
    lost = subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1))
    Recovery.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(seconds=10))
    deliveries_dispatch()
    assert ("deliveries.tasks.recover", [lost.id]) in sent
    assert ("deliveries.tasks.recover", [fresh.id]) not in sent


def test_missed_events_the_filter_refuses_are_not_delivered_nor_counted(subscription, api):
    Subscription.objects.filter(pk=subscription.pk).update(filter={"data": {"n": {"$gte": 1}}})
    subscription.refresh_from_db()
    refused, *accepted = publish_while_paused(subscription, "invoice.paid", "invoice.paid", "invoice.paid")
    since = timezone.now() - timedelta(hours=1)
    assert recovery_preview(subscription=subscription, since=since, until=timezone.now())["missed"] == 2

    done = recovery_run(recovery_id=subscription_recover(subscription=subscription, since=since).id)

    assert done.recovered_missed == 2
    assert set(Delivery.objects.filter(subscription=subscription).values_list("event_id", flat=True)) == {
        event.id for event in accepted
    }
    assert not Delivery.objects.filter(event=refused).exists()


def test_a_refused_event_does_not_stop_a_run_in_batches(subscription, monkeypatch):
    """Walked by position, not by 'not delivered yet': refused events fill whole batches and are passed."""
    monkeypatch.setattr("deliveries.recovery.RECOVERY_BATCH", 2)
    Subscription.objects.filter(pk=subscription.pk).update(filter={"type": "invoice.paid"})
    subscription.refresh_from_db()
    publish_while_paused(subscription, *["customer.created"] * 4, "invoice.paid")
    done = recovery_run(
        recovery_id=subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1)).id
    )
    assert done.recovered_missed == 1


def test_a_notice_about_the_subscription_never_goes_to_it(alice, make_subscription):
    subscription = make_subscription(alice, events=["asiri.*"], created_at=timezone.now() - timedelta(days=1))
    other = make_subscription(alice, events=["invoice.*"])
    Subscription.objects.filter(pk=subscription.pk).update(active=False)
    for about in (subscription, other):
        event_publish(
            tenant=alice,
            event_type="asiri.subscription.failing",
            data={"subscription_id": about.id, "url": about.url},
            about_subscription_id=about.id,
        )
    Subscription.objects.filter(pk=subscription.pk).update(active=True)
    subscription.refresh_from_db()
    since = timezone.now() - timedelta(hours=1)
    assert recovery_preview(subscription=subscription, since=since, until=timezone.now())["missed"] == 1

    done = recovery_run(recovery_id=subscription_recover(subscription=subscription, since=since).id)

    assert done.recovered_missed == 1
    (delivery,) = Delivery.objects.filter(subscription=subscription)
    assert delivery.event.data["subscription_id"] == other.id


def test_ordered_deliveries_re_enter_at_the_end_of_their_key(subscription):
    """A failed ordered delivery is sent again after what its key published since, as a redelivery is;
    a missed ordered event takes its key and a position after the key's last one."""
    first = event_publish(tenant=subscription.tenant, event_type="invoice.paid", data={"n": 1}, ordering_key="k")
    failed = Delivery.objects.get(event=first)
    Delivery.objects.filter(pk=failed.pk).update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    (missed,) = publish_while_paused(subscription, "invoice.paid")
    Event.objects.filter(pk=missed.pk).update(ordering_key="k")
    later = event_publish(tenant=subscription.tenant, event_type="invoice.paid", data={"n": 3}, ordering_key="k")
    later_position = Delivery.objects.get(event=later).position

    done = recovery_run(
        recovery_id=subscription_recover(subscription=subscription, since=timezone.now() - timedelta(hours=1)).id
    )

    assert (done.redelivered, done.recovered_missed) == (1, 1)
    restarted = Delivery.objects.get(pk=failed.pk)
    created = Delivery.objects.get(event=missed)
    assert created.ordering_key == "k"
    assert later_position < restarted.position < created.position
    waiting = Delivery.objects.with_waiting_on().get(pk=restarted.pk)
    assert waiting.waiting_on == Delivery.objects.get(event=later).id


def test_an_until_past_now_is_taken_as_now_and_a_since_in_the_future_is_a_400(api, subscription):
    # Nothing after now can be recovered yet: a far `until` queued a range that ends in the year 9999.
    since = timezone.now() - timedelta(hours=1)
    response = recover(api, subscription, {"since": iso(since), "until": "9999-12-31T00:00:00Z"})
    assert response.status_code == 202
    assert Recovery.objects.get(pk=response.json()["id"]).until <= timezone.now()
    response = recover(api, subscription, {"since": iso(timezone.now() + timedelta(days=1))})
    assert response.status_code == 400 and list(response.json()) == ["since"]
