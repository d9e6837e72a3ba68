"""Operational webhooks, with the one outbound HTTP function patched: what is published, when, to whom."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deliveries import engine, http
from deliveries.models import Delivery, Event
from deliveries.notices import DISABLED, FAILING, RECOVERED
from deliveries.services import delivery_send_test, event_publish
from tests.support.factories import make_due
from webhooks.models import Subscription

SUBJECT_URL = "https://hooks.example.com/subject"


@pytest.fixture
def endpoints(alice, make_subscription, settings):
    """The subject, which asks for notices too, and the endpoints that may or may not get them."""
    settings.ASIRI_RETRY_SCHEDULE = (5,)  # two attempts: the second one exhausts the series
    return {
        "subject": make_subscription(alice, url=SUBJECT_URL, events=["invoice.*", "asiri.*"]),
        "watcher": make_subscription(alice, url="https://hooks.example.com/watcher", events=["asiri.*"]),
        "recoveries": make_subscription(
            alice, url="https://hooks.example.com/recoveries", events=["asiri.subscription.recovered"]
        ),
        "everything": make_subscription(alice, url="https://hooks.example.com/star", events=["*"]),
    }


@pytest.fixture
def subject_answers(post_webhook):
    """Set what the subject's endpoint answers; every other endpoint answers 200."""
    answer = {"result": http.HttpResult(500, 3)}

    def respond(session, url, body, headers):
        return answer["result"] if url == SUBJECT_URL else http.HttpResult(200, 3)

    post_webhook.side_effect = respond

    def set_(code: int) -> None:
        answer["result"] = http.HttpResult(code, 3)

    return set_


@pytest.fixture
def publish(alice, django_capture_on_commit_callbacks):
    def publish_(event_type: str = "invoice.paid") -> Event:
        with django_capture_on_commit_callbacks(execute=False):
            return event_publish(tenant=alice, event_type=event_type, data={})

    return publish_


def run_out_of_retries() -> None:
    """Send whatever is due, then again once the retries fall due: every series ends."""
    engine.pump(budget_seconds=5)
    make_due()
    engine.pump(budget_seconds=5)


def notices(event_type: str) -> list[Event]:
    return list(Event.objects.filter(type=event_type).order_by("created_at"))


def receivers(event: Event) -> set[str]:
    return set(Delivery.objects.filter(event=event).values_list("subscription_id", flat=True))


def test_failing_is_published_once_per_streak_and_recovered_after_it(endpoints, subject_answers, publish):
    subject = endpoints["subject"]
    publish()
    publish()  # two deliveries of the same streak run out of retries in one batch
    run_out_of_retries()
    assert Delivery.objects.filter(subscription=subject, status="failed").count() == 2

    (failing,) = notices(FAILING)
    subject.refresh_from_db()
    assert failing.data == {
        "subscription_id": subject.id,
        "url": SUBJECT_URL,
        "failing_since": failing.data["failing_since"],
        "last_status_code": 500,
        "last_error": "HTTP 500",
    }
    assert failing.data["failing_since"].endswith("Z") and subject.failing_notified_at is not None
    assert receivers(failing) == {endpoints["watcher"].id}
    assert Delivery.objects.get(event=failing).status == "succeeded"  # delivered like any event
    assert [(s.subscription_id, s.reason) for s in failing.skips.all()] == [(subject.id, "subject")]

    publish()  # the same streak: no second notice
    run_out_of_retries()
    assert len(notices(FAILING)) == 1 and notices(RECOVERED) == []

    subject_answers(200)
    publish()
    publish()
    engine.pump(budget_seconds=5)
    (recovered,) = notices(RECOVERED)
    assert recovered.data == {"subscription_id": subject.id, "url": SUBJECT_URL}
    assert receivers(recovered) == {endpoints["watcher"].id, endpoints["recoveries"].id}
    subject.refresh_from_db()
    assert subject.failing_notified_at is None and subject.failing_since is None

    subject_answers(503)  # a new streak is told again
    publish()
    run_out_of_retries()
    assert len(notices(FAILING)) == 2 and len(notices(RECOVERED)) == 1
    assert not Delivery.objects.filter(subscription=subject, event__type__startswith="asiri.").exists()
    assert not Delivery.objects.filter(subscription=endpoints["everything"], event__type__startswith="asiri.").exists()


def test_a_retry_that_fails_is_not_a_failing_streak_yet(endpoints, subject_answers, publish):
    publish()
    engine.pump(budget_seconds=5)
    assert Delivery.objects.get(subscription=endpoints["subject"]).status == "retrying"
    assert notices(FAILING) == []


def test_a_success_without_a_failing_notice_publishes_nothing(endpoints, subject_answers, publish):
    publish()
    engine.pump(budget_seconds=5)  # failed once, retrying
    subject_answers(200)
    make_due()
    engine.pump(budget_seconds=5)
    assert notices(RECOVERED) == [] and notices(FAILING) == []


def test_410_publishes_disabled_with_the_reason_and_no_failing(endpoints, subject_answers, publish):
    subject_answers(410)
    publish()
    engine.pump(budget_seconds=5)
    subject = Subscription.objects.get(pk=endpoints["subject"].pk)
    (disabled,) = notices(DISABLED)
    assert disabled.data == {"subscription_id": subject.id, "url": SUBJECT_URL, "reason": subject.disabled_reason}
    assert "410 Gone" in disabled.data["reason"]
    assert receivers(disabled) == {endpoints["watcher"].id}
    assert notices(FAILING) == []


def test_too_long_failing_publishes_disabled(endpoints, subject_answers, publish, settings):
    settings.ASIRI_RETRY_SCHEDULE = (5, 5, 5)
    publish()
    engine.pump(budget_seconds=5)
    Subscription.objects.filter(pk=endpoints["subject"].pk).update(failing_since=timezone.now() - timedelta(hours=121))
    make_due()
    engine.pump(budget_seconds=5)
    (disabled,) = notices(DISABLED)
    assert "120 hours" in disabled.data["reason"]
    assert receivers(disabled) == {endpoints["watcher"].id}


def test_a_test_send_that_fails_changes_nothing(endpoints, subject_answers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        delivery_send_test(subscription=endpoints["subject"])
    run_out_of_retries()
    assert Event.objects.filter(type__startswith="asiri.").count() == 0


def test_a_paused_watcher_is_accounted_as_skipped(endpoints, subject_answers, publish):
    watcher = endpoints["watcher"]
    watcher.active = False
    watcher.save()
    publish()
    run_out_of_retries()
    (failing,) = notices(FAILING)
    assert receivers(failing) == set()
    assert {(s.subscription_id, s.reason) for s in failing.skips.all()} == {
        (endpoints["subject"].id, "subject"),
        (watcher.id, "paused"),
    }


@pytest.mark.parametrize("streak", [True, False])
def test_a_delivery_given_up_without_outcome_is_the_streaks_failing_notice(endpoints, publish, streak):
    """A worker that died on every attempt leaves no outcome; the claim ends the delivery. In a failing
    streak that is its notice; without a streak it starts none (the endpoint did nothing wrong)."""
    subject = endpoints["subject"]
    if streak:
        Subscription.objects.filter(pk=subject.pk).update(failing_since=timezone.now() - timedelta(minutes=5))
    publish()
    for _ in range(2):  # two attempts (ASIRI_RETRY_SCHEDULE = (5,)), each claimed by a worker that then died
        engine.claim_due(limit=10)
        make_due()
    engine.claim_due(limit=10)

    given_up = Delivery.objects.get(subscription=subject, event__type="invoice.paid")
    assert given_up.status == "failed" and given_up.failure_reason.startswith("Gave up")
    subject.refresh_from_db()
    if not streak:
        assert notices(FAILING) == [] and subject.failing_since is None
        return
    (notice,) = notices(FAILING)
    assert notice.data["subscription_id"] == subject.id and notice.data["last_error"] == given_up.failure_reason
    assert subject.id not in receivers(notice) and endpoints["watcher"].id in receivers(notice)
    assert subject.failing_notified_at is not None
