"""Subscription workflows where the API's tests cannot reach: races."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.utils import timezone

from webhooks.models import Subscription
from webhooks.services import SubscriptionLimitReached, subscription_create, subscriptions_record_health


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_creates_cannot_both_take_the_last_place(alice, make_subscription, monkeypatch):
    alice.max_subscriptions = 2
    alice.save()
    make_subscription(alice)
    # Each create waits (up to a second) for the other before it inserts: without a lock both would
    # have counted one subscription and both would insert; with it, the second cannot count yet.
    both_counted = threading.Barrier(2)
    real_save = Subscription.save

    def save_once_both_counted(self, *args, **kwargs):
        try:
            both_counted.wait(timeout=1)
        except threading.BrokenBarrierError:
            pass
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(Subscription, "save", save_once_both_counted)
    outcomes: list[str] = []

    def create() -> None:
        try:
            subscription_create(tenant=alice, url="https://hooks.example.com/race")
            outcomes.append("created")
        except SubscriptionLimitReached:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["created", "refused"]
    assert Subscription.objects.filter(tenant=alice).count() == 2


def test_the_failing_notice_is_claimed_once_per_streak_and_freed_by_a_success(alice, make_subscription):
    subscription, other = make_subscription(alice), make_subscription(alice)
    now = timezone.now()
    first = subscriptions_record_health(
        now, healthy=set(), failing={subscription.id}, gone=set(), exhausted={subscription.id}
    )
    again = subscriptions_record_health(
        now, healthy=set(), failing={subscription.id}, gone=set(), exhausted={subscription.id}
    )
    assert (first.failing, again.failing) == ([subscription.id], [])

    healthy = subscriptions_record_health(now, healthy={subscription.id, other.id}, failing=set(), gone=set())
    again = subscriptions_record_health(now, healthy={subscription.id}, failing=set(), gone=set())
    assert (healthy.recovered, again.recovered) == ([subscription.id], [])

    gone = subscriptions_record_health(now, healthy=set(), failing={other.id}, gone={other.id}, exhausted={other.id})
    assert gone.failing == [] and list(gone.disabled.values()) == [[other.id]]
