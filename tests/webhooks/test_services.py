"""Subscription workflows where the API's tests cannot reach: races."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from webhooks.models import Subscription
from webhooks.services import SubscriptionLimitReached, subscription_create


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
