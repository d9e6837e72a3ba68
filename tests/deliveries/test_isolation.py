"""One bad item never stops the pump or costs the others their outcomes (unit tests: the one outbound
HTTP function is patched; the failing write is a real PostgreSQL trigger)."""

from __future__ import annotations

import logging

import pytest
from django.db import DatabaseError, connection

from deliveries import engine, http, outcomes
from deliveries.models import Attempt, Delivery, DeliveryStatus
from deliveries.services import event_publish


@pytest.fixture
def publish_to(alice, django_capture_on_commit_callbacks):
    def publish(event_type: str, count: int = 1) -> None:
        with django_capture_on_commit_callbacks(execute=False):
            for n in range(count):
                event_publish(tenant=alice, event_type=event_type, data={"n": n})

    return publish


def poison_outcome_writes(delivery_id: str) -> None:
    """Every write of this delivery's attempt outcome fails, as a row the database refuses would."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'this row cannot be written'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER poisoned_outcome BEFORE UPDATE ON deliveries_attempt FOR EACH ROW "
            "WHEN (NEW.delivery_id = %s AND NEW.duration_ms IS NOT NULL) EXECUTE FUNCTION refuse_outcome()",
            [delivery_id],
        )


def test_a_send_that_raises_and_a_row_that_cannot_be_written_cost_no_one_else(
    post_webhook, alice, make_subscription, publish_to, settings, caplog
):
    settings.ASIRI_RETRY_SCHEDULE = (60,)
    raising = make_subscription(alice, url="https://raises.example.com/", events=["poison.send"])
    make_subscription(alice, url="https://fine.example.com/", events=["poison.write", "fine"])

    async def answer(session, url, body, headers):
        if url == raising.url:
            raise RuntimeError("something the HTTP seam did not anticipate")
        return http.HttpResult(200, 5)

    post_webhook.side_effect = answer
    publish_to("poison.send")
    publish_to("poison.write")
    publish_to("fine", count=20)
    unwritable = Delivery.objects.get(event_type="poison.write")
    poison_outcome_writes(unwritable.id)

    with caplog.at_level(logging.WARNING):
        stats = engine.pump(budget_seconds=5)

    assert stats.sent == 22
    assert Delivery.objects.filter(event_type="fine", status=DeliveryStatus.SUCCEEDED).count() == 20
    assert Attempt.objects.filter(delivery__event_type="fine", response_status_code=200).count() == 20
    raised = Delivery.objects.get(subscription=raising)
    assert raised.status == DeliveryStatus.RETRYING and raised.next_attempt_at is not None
    assert raised.failure_reason.startswith("Internal error while sending (RuntimeError)")
    assert raised.attempts.get().error == raised.failure_reason
    unwritable.refresh_from_db()
    assert unwritable.status == DeliveryStatus.FAILED and unwritable.next_attempt_at is None
    assert unwritable.failure_reason == "Gave up: the outcome of attempt 1 could not be recorded (ProgrammingError)."
    gave_up = [r for r in caplog.records if "could not be recorded" in r.getMessage()]
    assert len(gave_up) == 1 and gave_up[0].levelname == "ERROR"


def test_a_failing_batch_write_falls_back_to_one_row_at_a_time(
    post_webhook, alice, make_subscription, publish_to, monkeypatch
):
    make_subscription(alice, events=["fine"])
    publish_to("fine", count=5)
    claimed = engine.claim_due(limit=10)
    real_finish = outcomes._finish_attempts

    def finish(attempts):
        if len(attempts) > 1:
            raise DatabaseError("the batch statement failed")
        real_finish(attempts)

    monkeypatch.setattr(outcomes, "_finish_attempts", finish)
    stats = engine.record_outcomes([(item, http.HttpResult(200, 3)) for item in claimed])
    assert (stats.sent, stats.succeeded) == (5, 5)
    assert Delivery.objects.filter(status=DeliveryStatus.SUCCEEDED).count() == 5
    assert Attempt.objects.filter(duration_ms=3, response_status_code=200).count() == 5


def test_a_request_that_cannot_be_built_is_that_deliverys_failure_only(
    post_webhook, alice, make_subscription, publish_to, monkeypatch, settings
):
    settings.ASIRI_RETRY_SCHEDULE = (60,)
    broken = make_subscription(alice, url="https://broken.example.com/", events=["broken"])
    make_subscription(alice, events=["fine"])
    publish_to("broken")
    publish_to("fine", count=3)
    real_request_for = engine.request_for

    def request_for(delivery, now):
        if delivery.subscription_id == broken.id:
            raise ValueError("a payload that cannot be serialised")
        return real_request_for(delivery, now)

    monkeypatch.setattr(engine, "request_for", request_for)
    stats = engine.pump(budget_seconds=5)
    assert (stats.sent, stats.succeeded, stats.retrying) == (4, 3, 1)
    assert "Internal error while sending (ValueError)" in Delivery.objects.get(subscription=broken).failure_reason
