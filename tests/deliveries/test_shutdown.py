"""Warm shutdown inside one pump (unit tests: the one outbound HTTP function is patched). The same with
real Celery workers and signals is in test_restarts.py."""

from __future__ import annotations

import asyncio
import threading

import pytest

from deliveries import engine, http, shutdown
from deliveries.models import Attempt, Delivery, DeliveryStatus
from deliveries.services import event_publish


@pytest.fixture
def published(alice, make_subscription, django_capture_on_commit_callbacks):
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        for n in range(10):
            event_publish(tenant=alice, event_type="invoice.paid", data={"n": n})


def answering_after(seconds: float):
    async def answer(session, url, body, headers):
        await asyncio.sleep(seconds)
        return http.HttpResult(200, int(seconds * 1000))

    return answer


def shut_down_in(seconds: float) -> None:
    threading.Timer(seconds, shutdown.request).start()


def test_it_stops_claiming_and_records_what_answers_before_the_deadline(post_webhook, published, settings):
    settings.ASIRI_SEND_CONCURRENCY = 4
    settings.ASIRI_SHUTDOWN_SECONDS = 5
    post_webhook.side_effect = answering_after(0.5)
    shut_down_in(0.2)
    stats = engine.pump(budget_seconds=30)
    assert (stats.sent, stats.succeeded, stats.abandoned) == (4, 4, 0)  # the first claim only
    assert Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 4
    untouched = Delivery.objects.exclude(status=DeliveryStatus.SUCCEEDED)
    assert untouched.count() == 6 and {d.attempt_count for d in untouched} == {0}


def test_requests_still_out_at_the_deadline_are_given_back_due_now(post_webhook, published, settings):
    settings.ASIRI_SEND_CONCURRENCY = 4
    settings.ASIRI_SHUTDOWN_SECONDS = 0.3
    post_webhook.side_effect = answering_after(30)
    shut_down_in(0.2)
    stats = engine.pump(budget_seconds=30)
    assert (stats.sent, stats.abandoned) == (0, 4)  # had it waited for the answers, they would be 4 and 0
    given_back = Delivery.objects.filter(attempt_count=1)
    assert given_back.count() == 4
    for delivery in given_back:
        assert delivery.status == DeliveryStatus.PENDING and delivery.series_start == 1  # no retry used up
    assert set(Delivery.objects.due(engine.database_now()).values_list("pk", flat=True)) >= {d.pk for d in given_back}
    abandoned = Attempt.objects.filter(error__startswith="Abandoned after")
    assert abandoned.count() == 4 and all(a.duration_ms >= 300 for a in abandoned)


def test_a_priority_send_gives_back_what_is_out_at_the_deadline(
    post_webhook, alice, make_subscription, settings, django_capture_on_commit_callbacks
):
    settings.ASIRI_SHUTDOWN_SECONDS = 0.2
    post_webhook.side_effect = answering_after(30)
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        event = event_publish(tenant=alice, event_type="invoice.paid", data={})
    delivery = Delivery.objects.get(event=event)
    shut_down_in(0.1)
    stats = engine.send_now([delivery.id])
    assert stats.abandoned == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.next_attempt_at is not None


def test_once_shutting_down_a_priority_send_leaves_the_delivery_to_the_pumps(
    post_webhook, alice, make_subscription, django_capture_on_commit_callbacks
):
    make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        event = event_publish(tenant=alice, event_type="invoice.paid", data={})
    shutdown.request()
    assert engine.send_now([Delivery.objects.get(event=event).id]).sent == 0
    post_webhook.assert_not_called()
    assert Delivery.objects.get(event=event).attempt_count == 0
