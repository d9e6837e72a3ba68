"""The dispatcher: the database, not the broker, decides what still has to be sent."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from deliveries.models import Delivery
from deliveries.services import deliveries_dispatch_due, delivery_send_test
from tests.support.processes import celery_worker, wait_until
from tests.support.receiver import Receiver


def lost_test_send(subscription, django_capture_on_commit_callbacks) -> Delivery:
    """A test send whose enqueue never reached the broker, with its lease already over."""
    with django_capture_on_commit_callbacks(execute=False):
        delivery = delivery_send_test(subscription=subscription)
    Delivery.objects.filter(pk=delivery.pk).update(locked_until=timezone.now() - timedelta(seconds=1))
    return delivery


def test_it_hands_out_due_unheld_deliveries_once(alice, make_subscription, django_capture_on_commit_callbacks):
    subscription = make_subscription(alice)
    lost = lost_test_send(subscription, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        held = delivery_send_test(subscription=subscription)  # its task is on the way: leave it alone
    with mock.patch("deliveries.tasks.deliver.delay") as delay:
        assert deliveries_dispatch_due() == 1
        assert deliveries_dispatch_due() == 0  # now leased: not handed out twice
    delay.assert_called_once_with(lost.id)
    assert Delivery.objects.get(pk=lost.pk).locked_until > timezone.now()
    assert Delivery.objects.get(pk=held.pk).locked_until > timezone.now()


def test_it_leaves_finished_deliveries_alone(alice, make_subscription, django_capture_on_commit_callbacks):
    lost = lost_test_send(make_subscription(alice), django_capture_on_commit_callbacks)
    Delivery.objects.filter(pk=lost.pk).update(status="succeeded")
    with mock.patch("deliveries.tasks.deliver.delay") as delay:
        assert deliveries_dispatch_due() == 0
    delay.assert_not_called()


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_send_whose_enqueue_was_lost_still_arrives(
    alice, make_subscription, empty_broker, django_capture_on_commit_callbacks
):
    with Receiver() as receiver, celery_worker(ASIRI_ALLOW_PRIVATE_URLS="1"):
        lost = lost_test_send(make_subscription(alice, url=receiver.url()), django_capture_on_commit_callbacks)
        assert deliveries_dispatch_due() == 1
        (request,) = receiver.wait_for(1, timeout=20)
        assert request.headers["webhook-id"] == lost.id
        assert wait_until(lambda: Delivery.objects.filter(pk=lost.pk, status="succeeded").exists(), timeout=10)
