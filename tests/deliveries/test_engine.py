"""The delivery engine, with the one outbound HTTP function patched (unit tests)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from deliveries import claims, engine, http
from deliveries.models import Attempt, Delivery, DeliveryStatus
from deliveries.services import NewEvent, delivery_send_test, event_publish, event_publish_many
from tests.support.factories import make_due
from tests.support.plans import explain
from webhooks.models import Subscription
from webhooks.services import subscription_rotate_secret

DEFAULT_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.fixture
def publish(alice, django_capture_on_commit_callbacks):
    def publish_(event_type="invoice.paid", data=None, tenant=None):
        with django_capture_on_commit_callbacks(execute=False):
            return event_publish(tenant=tenant or alice, event_type=event_type, data=data or {"n": 1})

    return publish_


def sent_requests(post_webhook) -> list[tuple[str, bytes, dict]]:
    return [(c.args[1], c.args[2], c.args[3]) for c in post_webhook.call_args_list]


def test_it_delivers_a_published_event_signed_and_records_it(post_webhook, alice, make_subscription, publish):
    subscription = make_subscription(alice, events=["invoice.*"])
    event = publish("invoice.paid", {"amount": 42})
    stats = engine.pump(budget_seconds=5)
    assert (stats.sent, stats.succeeded) == (1, 1)
    ((url, body, headers),) = sent_requests(post_webhook)
    assert url == subscription.url
    payload = Webhook(subscription.secret).verify(body, headers)
    assert payload["id"] == event.id and payload["type"] == "invoice.paid" and payload["data"] == {"amount": 42}
    delivery = Delivery.objects.get(event=event)
    assert headers["webhook-id"] == delivery.id
    assert (delivery.status, delivery.attempt_count, delivery.response_status_code) == ("succeeded", 1, 200)
    assert delivery.next_attempt_at is None
    attempt = delivery.attempts.get()
    assert (attempt.number, attempt.response_status_code, attempt.duration_ms, attempt.response_body) == (
        1,
        200,
        7,
        "thanks",
    )


def test_a_fan_out_encodes_its_event_once_and_signs_each_delivery_alone(
    post_webhook, alice, make_subscription, publish
):
    subscriptions = [
        make_subscription(alice, url=f"https://hooks{n}.example.com/asiri", events=["invoice.*"]) for n in range(3)
    ]
    event = publish("invoice.paid", {"amount": 42, "note": "café"})
    stats = engine.pump(budget_seconds=5)
    assert (stats.sent, stats.succeeded) == (3, 3)
    sent = sent_requests(post_webhook)
    bodies = [body for _, body, _ in sent]
    # One claim shares one Event instance, so every request carries the very same bytes.
    assert all(body is bodies[0] for body in bodies)
    secrets = {subscription.url: subscription.secret for subscription in subscriptions}
    for url, body, headers in sent:
        assert Webhook(secrets[url]).verify(body, headers)["data"] == {"amount": 42, "note": "café"}
    assert len({headers["webhook-id"] for _, _, headers in sent}) == 3
    assert '"note":"café"'.encode() in bodies[0] and event.id.encode() in bodies[0]


def test_the_attempt_is_logged_when_claimed_before_any_request(post_webhook, alice, make_subscription, publish):
    make_subscription(alice)
    publish()
    (claimed,) = engine.claim_due(limit=10)
    post_webhook.assert_not_called()
    assert list(claimed.delivery.attempts.values_list("number", "duration_ms", "error")) == [(1, None, "")]


def test_a_claim_returns_the_rows_as_the_orm_would_load_them(
    alice, make_subscription, publish, django_assert_num_queries
):
    """The claim builds its instances from one raw statement (deliveries.claims._start_attempts_at_once),
    each event and subscription once however many of its deliveries it claims: every field, JSON and
    times included, must read as a queryset would read it, and no relation may need a query later."""
    subscription = make_subscription(alice)
    other = make_subscription(alice)
    Subscription.objects.filter(pk=subscription.pk).update(headers={"x-team": "billing"}, metadata={"k": "v"})
    publish(data={"amount": 42, "nested": {"list": [1, "two"]}})  # to both subscriptions
    publish(data={"second": True})
    claimed = engine.claim_due(limit=10)
    assert len(claimed) == 4
    for item in claimed:
        loaded = Delivery.objects.select_related("event", "subscription").get(pk=item.delivery.pk)
        attempt = Attempt.objects.get(pk=item.attempt.pk)
        for got, want in (
            (item.delivery, loaded),
            (item.delivery.event, loaded.event),
            (item.delivery.subscription, loaded.subscription),
            (item.attempt, attempt),
        ):
            for field in type(want)._meta.concrete_fields:
                assert getattr(got, field.attname) == getattr(want, field.attname), field.name
            assert not got._state.adding
        assert item.attempt.number == 1
    with django_assert_num_queries(0):
        events = {item.delivery.event.data.get("amount", "second") for item in claimed}
        by_subscription = {item.delivery.subscription_id: item.delivery.subscription for item in claimed}
        assert all(item.attempt.delivery is item.delivery for item in claimed)
    assert events == {42, "second"}
    assert by_subscription[subscription.pk].headers == {"x-team": "billing"}
    assert set(by_subscription) == {subscription.pk, other.pk}
    # One instance per event and per subscription, shared by its deliveries in the claim.
    assert len({id(item.delivery.subscription) for item in claimed}) == 2
    assert len({id(item.delivery.event) for item in claimed}) == 2


def test_a_claimed_delivery_whose_event_is_gone_ends_unsent_and_the_rest_go(alice, make_subscription, publish, caplog):
    """The database does not check Delivery.event (deliveries/models.py says why): should a delivery ever
    lose its event, the claim ends it with the reason instead of failing every claim that takes it."""
    make_subscription(alice)
    lost, kept = publish(), publish()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM deliveries_event WHERE id = %s", [lost.id])
    with caplog.at_level(logging.ERROR, logger="deliveries.claims"):
        claimed = engine.claim_due(limit=10)
    assert [item.delivery.event_id for item in claimed] == [kept.id]
    orphan = Delivery.objects.get(event_id=lost.id)
    assert (orphan.status, orphan.next_attempt_at, orphan.failure_reason) == ("failed", None, claims.ORPHANED)
    assert list(orphan.attempts.values_list("number", "error")) == [(1, claims.ORPHANED)]
    assert orphan.id in caplog.text
    assert engine.claim_due(limit=10) == []


def test_a_pump_waits_for_what_falls_due_in_a_moment_rather_than_stop(post_webhook, alice, make_subscription, publish):
    make_subscription(alice)
    publish()
    Delivery.objects.update(next_attempt_at=timezone.now() + timedelta(seconds=0.6))
    # Longer than the pump lingers with nothing due: it stays because something falls due soon.
    stats = engine.pump(budget_seconds=5)
    assert stats.succeeded == 1 and post_webhook.call_count == 1
    Delivery.objects.update(status="pending", next_attempt_at=timezone.now() + timedelta(seconds=30))
    started = time.monotonic()
    assert engine.pump(budget_seconds=5).sent == 0  # not within LOOK_AHEAD: it stops, the dispatcher wakes one later
    assert time.monotonic() - started < 2


def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_ends(alice, make_subscription, publish, settings):
    make_subscription(alice)
    publish()
    (claimed,) = engine.claim_due(limit=10)
    assert engine.claim_due(limit=10) == []
    delivery = Delivery.objects.get(pk=claimed.delivery.pk)
    assert delivery.next_attempt_at >= claimed.claimed_at + timedelta(seconds=settings.ASIRI_DELIVERY_LEASE)
    make_due()  # the lease ran out: that worker is gone
    (again,) = engine.claim_due(limit=10)
    assert again.attempt.number == 2
    assert Attempt.objects.get(delivery=delivery, number=1).error == engine.LOST_ATTEMPT


def test_each_claim_after_a_lost_lease_marks_only_the_attempt_before_it(alice, make_subscription, publish):
    """Three claims, each lease running out: attempts 1 and 2 are cut short, 3 is open, and another
    delivery's open attempt is left alone (the lookup is by (delivery, number), not "any open attempt")."""
    make_subscription(alice)
    publish()
    (first,) = engine.claim_due(limit=10)
    publish()
    for _ in range(2):
        make_due([first.delivery.pk])
        (again,) = [c for c in engine.claim_due(limit=10) if c.delivery.pk == first.delivery.pk]
    errors = dict(Attempt.objects.filter(delivery_id=first.delivery.pk).values_list("number", "error"))
    assert errors == {1: engine.LOST_ATTEMPT, 2: engine.LOST_ATTEMPT, 3: ""} and again.attempt.number == 3
    (other,) = Attempt.objects.exclude(delivery_id=first.delivery.pk)
    assert other.error == "" and other.duration_ms is None


def test_a_claim_reads_the_oldest_due_rows_by_the_index_whatever_the_statistics(alice, make_subscription):
    """3,000 rows due at once in a table with no statistics yet (a new install, a burst before autovacuum
    has looked): the planner guesses a handful are due. The claim's candidate query must still walk
    delivery_due in order and stop at its limit, not read every due row and sort them, as the planner chose
    here and in bench scenario 1b (13 to 18 ms a claim there, growing with the backlog)."""
    subscription = make_subscription(alice)
    event = event_publish(tenant=alice, event_type="invoice.paid", data={})
    later = timezone.now() + timedelta(days=1)
    Delivery.objects.bulk_create(
        Delivery(tenant=alice, event=event, subscription=subscription, event_type="invoice.paid", next_attempt_at=later)
        for _ in range(3000)
    )
    make_due()
    plans = []

    def explain_the_candidates(execute, sql, params, many, context):
        if "FOR UPDATE" in sql and "SKIP LOCKED" in sql:
            plans.append(explain(context, sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain_the_candidates):
        claimed = engine.claim_due(limit=50)
    assert len(claimed) == 50 and len(plans) == 1
    assert "Index Scan using delivery_due on" in plans[0], plans[0]
    assert "Sort" not in plans[0] and "Bitmap" not in plans[0], plans[0]


def test_a_batch_of_successes_looks_its_rows_up_by_key_whatever_the_tables_size(alice, make_subscription, publish):
    """The planner takes any jsonb_to_recordset for a hundred rows: joined on that guess, the one-statement
    batch of successes read every attempt, for every batch, while the table held some thousands of rows
    (perf on a drain: a fifth of PostgreSQL's time, growing with the table)."""
    subscription = make_subscription(alice)
    history = Delivery.objects.create(tenant=alice, event=publish(), subscription=subscription, event_type="old")
    Attempt.objects.bulk_create(Attempt(delivery=history, number=n) for n in range(1, 3001))
    Delivery.objects.filter(pk=history.pk).update(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None)
    publish()
    claimed = engine.claim_due(limit=10)
    plans = []

    def explain_the_batch(execute, sql, params, many, context):
        if "jsonb_to_recordset" in sql:
            raw = context["cursor"].cursor  # psycopg's own: through Django's, this wrapper would run again
            raw.execute("EXPLAIN " + sql, params)
            plans.append("\n".join(row[0] for row in raw.fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain_the_batch):
        stats = engine.record_outcomes([(item, http.HttpResult(200, 5)) for item in claimed])
    assert stats.succeeded == len(claimed) == 2 and len(plans) == 1
    lines = plans[0].splitlines()
    for table in (Attempt._meta.db_table, Delivery._meta.db_table):
        # Each read of the table goes through an index on the batch's keys (the line after a scan is its
        # condition): neither a sequential scan, filtered or not, nor an index walked end to end.
        scans = [n for n, line in enumerate(lines) if re.search(rf"Scan (using \w+ )?on {table}\b", line)]
        assert scans and all("Seq Scan" not in lines[n] and "= ANY" in lines[n + 1] for n in scans), plans[0]


def test_it_claims_no_more_than_an_endpoints_share(alice, make_subscription, publish, settings):
    settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT = 3
    slow, fast = make_subscription(alice, events=["slow"]), make_subscription(alice, events=["fast"])
    for _ in range(5):
        publish("slow")
    for _ in range(2):
        publish("fast")
    claimed = engine.claim_due(limit=10, busy=Counter({slow.id: 1}))
    by_subscription = Counter(c.delivery.subscription_id for c in claimed)
    assert by_subscription == {slow.id: 2, fast.id: 2}


def test_a_stale_result_does_not_overwrite_a_newer_claim(alice, make_subscription, publish):
    make_subscription(alice)
    publish()
    (first,) = engine.claim_due(limit=1)
    make_due()
    (second,) = engine.claim_due(limit=1)
    engine.record_outcomes([(first, http.HttpResult(500, 5))])
    delivery = Delivery.objects.get(pk=first.delivery.pk)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempt_count == 2
    engine.record_outcomes([(second, http.HttpResult(200, 5))])
    assert Delivery.objects.get(pk=first.delivery.pk).status == DeliveryStatus.SUCCEEDED


def test_a_batch_of_successes_is_written_in_one_statement(alice, make_subscription, publish, django_assert_num_queries):
    """Every endpoint answered 2xx: attempts, deliveries and the failing-streak check go in one statement
    (outcomes._write_successes_at_once), and read as the general path writes them."""
    first, second = make_subscription(alice), make_subscription(alice)
    publish()
    publish()
    claimed = engine.claim_due(limit=10)
    assert len(claimed) == 4
    answers = [
        http.HttpResult(200 + n, 10 + n, body=f'ok {n}, "quoted" \\ é ☃ {{}}', headers={"x-request-id": f"r,{n}'"})
        for n in range(len(claimed))
    ]
    with django_assert_num_queries(1):
        stats = engine.record_outcomes(list(zip(claimed, answers, strict=True)))
    assert (stats.sent, stats.succeeded, stats.failed, stats.retrying) == (4, 4, 0, 0)
    for item, answer in zip(claimed, answers, strict=True):
        delivery = Delivery.objects.get(pk=item.delivery.pk)
        assert (delivery.status, delivery.response_status_code, delivery.next_attempt_at, delivery.failure_reason) == (
            DeliveryStatus.SUCCEEDED,
            answer.status_code,
            None,
            "",
        )
        attempt = Attempt.objects.get(pk=item.attempt.pk)
        assert (attempt.duration_ms, attempt.response_status_code, attempt.response_body, attempt.error) == (
            answer.duration_ms,
            answer.status_code,
            answer.body,
            "",
        )
        assert attempt.response_headers == answer.headers
    assert {item.delivery.subscription_id for item in claimed} == {first.pk, second.pk}


@pytest.mark.django_db(transaction=True)
def test_only_a_pumps_own_batch_of_successes_commits_without_waiting_for_the_disk(alice, make_subscription):
    """Its results can be lost only with PostgreSQL's host, and then the next claim marks the attempt cut short
    and sends again (outcomes._write_successes_at_once); the claim that wrote the attempt first, and anything
    published, wait for the disk as before."""
    make_subscription(alice)
    for n in range(2):
        with transaction.atomic():
            event_publish(tenant=alice, event_type="invoice.paid", data={"n": n})
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    (first,) = engine.claim_due(limit=1)
    with connection.execute_wrapper(record):
        engine.record_outcomes([(first, http.HttpResult(200, 5))])
    (statement,) = statements
    assert statement.startswith("SET LOCAL synchronous_commit = off; ")
    assert Delivery.objects.get(pk=first.delivery.pk).status == DeliveryStatus.SUCCEEDED
    assert Attempt.objects.get(pk=first.attempt.pk).response_status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    # Inside a caller's transaction the setting would outlive the statement: it is not used there.
    (second,) = engine.claim_due(limit=1)
    statements.clear()
    with transaction.atomic(), connection.execute_wrapper(record):
        engine.record_outcomes([(second, http.HttpResult(200, 5))])
    assert len(statements) == 1 and "synchronous_commit" not in statements[0]
    assert Delivery.objects.get(pk=second.delivery.pk).status == DeliveryStatus.SUCCEEDED


def test_a_success_ends_a_failing_streak_when_written_with_others(alice, make_subscription, publish):
    failing, healthy = make_subscription(alice), make_subscription(alice)
    Subscription.objects.filter(pk=failing.pk).update(failing_since=timezone.now() - timedelta(hours=1))
    publish()
    engine.record_outcomes([(item, http.HttpResult(200, 5)) for item in engine.claim_due(limit=10)])
    assert Subscription.objects.get(pk=failing.pk).failing_since is None
    assert Subscription.objects.get(pk=healthy.pk).failing_since is None
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SUCCEEDED}


def test_it_walks_the_default_schedule_then_fails(post_webhook, alice, make_subscription, publish, settings):
    settings.ASIRI_RETRY_SCHEDULE = DEFAULT_SCHEDULE
    make_subscription(alice)
    publish()
    post_webhook.return_value = http.HttpResult(500, 3, body="boom")
    delays = []
    for _ in range(8):
        engine.pump(budget_seconds=5)
        delivery = Delivery.objects.get()
        if delivery.next_attempt_at is not None:
            delays.append((delivery.next_attempt_at - delivery.last_attempt_at).total_seconds())
        make_due()
    for delay, scheduled in zip(delays, DEFAULT_SCHEDULE, strict=True):
        assert 0.8 * scheduled <= delay <= 1.2 * scheduled
    assert 0.8 * sum(DEFAULT_SCHEDULE) / 3600 <= sum(delays) / 3600 <= 1.2 * sum(DEFAULT_SCHEDULE) / 3600
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == ("failed", 8, None)
    assert delivery.failure_reason == "HTTP 500"
    assert list(delivery.attempts.values_list("number", flat=True)) == list(range(1, 9))
    assert post_webhook.call_count == 8
    assert engine.pump(budget_seconds=1).sent == 0


@pytest.mark.parametrize(
    ("code", "retry_after", "low", "high"), [(429, 7.0, 7, 7), (503, 3600.0, 10, 10), (429, 1.0, 4, 6)]
)
def test_retry_after_is_honoured_up_to_twice_the_schedule(
    post_webhook, alice, make_subscription, publish, settings, code, retry_after, low, high
):
    settings.ASIRI_RETRY_SCHEDULE = (5, 5)
    make_subscription(alice)
    publish()
    post_webhook.return_value = http.HttpResult(code, 3, retry_after=retry_after)
    before = engine.database_now()
    engine.pump(budget_seconds=5)
    after = engine.database_now()
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.RETRYING
    # Counted from when the outcome was written, which was during the pump.
    assert before + timedelta(seconds=low) <= delivery.next_attempt_at <= after + timedelta(seconds=high)


def test_410_disables_the_subscription_and_stops_its_pending_deliveries(
    post_webhook, alice, make_subscription, publish, django_capture_on_commit_callbacks
):
    subscription = make_subscription(alice)
    first = publish()
    post_webhook.return_value = http.HttpResult(410, 3)
    engine.pump(budget_seconds=5)
    subscription.refresh_from_db()
    assert not subscription.active and "410 Gone" in subscription.disabled_reason
    assert Delivery.objects.get(event=first).status == DeliveryStatus.FAILED
    # Anything published meanwhile to it is stopped, not sent; a test send still goes out.
    Delivery.objects.create(
        tenant=alice, event=first, subscription=subscription, event_type="invoice.paid", next_attempt_at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=False):
        test = delivery_send_test(subscription=subscription)
    post_webhook.reset_mock()
    post_webhook.return_value = http.HttpResult(200, 3)
    engine.pump(budget_seconds=5)
    assert [h["webhook-id"] for _, _, h in sent_requests(post_webhook)] == [test.id]
    stopped = Delivery.objects.exclude(pk=test.pk).filter(event=first).exclude(attempt_count=1).get()
    assert stopped.status == DeliveryStatus.FAILED and "disabled" in stopped.failure_reason


def test_it_disables_a_subscription_that_only_failed_for_too_long(
    post_webhook, alice, make_subscription, publish, settings
):
    settings.ASIRI_DISABLE_AFTER_HOURS = 120
    subscription = make_subscription(alice)
    publish()
    post_webhook.return_value = http.HttpResult(500, 3)
    engine.pump(budget_seconds=5)
    subscription.refresh_from_db()
    assert subscription.active and subscription.failing_since is not None
    Subscription.objects.filter(pk=subscription.pk).update(failing_since=timezone.now() - timedelta(hours=121))
    make_due()
    engine.pump(budget_seconds=5)
    subscription.refresh_from_db()
    assert not subscription.active and "120 hours" in subscription.disabled_reason
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


def test_one_success_resets_the_failure_clock(post_webhook, alice, make_subscription, publish):
    subscription = make_subscription(alice)
    publish()
    post_webhook.return_value = http.HttpResult(500, 3)
    engine.pump(budget_seconds=5)
    assert Subscription.objects.get(pk=subscription.pk).failing_since is not None
    post_webhook.return_value = http.HttpResult(200, 3)
    make_due()
    engine.pump(budget_seconds=5)
    assert Subscription.objects.get(pk=subscription.pk).failing_since is None


@pytest.mark.parametrize("change", ["paused", "deleted"])
def test_stopped_subscriptions_get_nothing_more(post_webhook, alice, make_subscription, publish, change):
    subscription = make_subscription(alice)
    publish()
    if change == "paused":
        Subscription.objects.filter(pk=subscription.pk).update(active=False)
    else:
        Subscription.objects.get(pk=subscription.pk).soft_delete()
    engine.pump(budget_seconds=5)
    post_webhook.assert_not_called()
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and "Stopped: the subscription" in delivery.failure_reason
    assert delivery.attempt_count == 0 and not delivery.attempts.exists()


def test_both_secrets_sign_while_a_rotation_overlaps(post_webhook, alice, make_subscription, publish):
    subscription = make_subscription(alice)
    old_secret = subscription.secret
    new_secret = subscription_rotate_secret(subscription=subscription)
    publish()
    engine.pump(budget_seconds=5)
    ((_, body, headers),) = sent_requests(post_webhook)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(body, headers)
    Webhook(new_secret).verify(body, headers)
    Subscription.objects.filter(pk=subscription.pk).update(previous_secret_expires_at=timezone.now())
    post_webhook.reset_mock()
    publish()
    engine.pump(budget_seconds=5)
    ((_, body, headers),) = sent_requests(post_webhook)
    Webhook(new_secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(body, headers)


def test_test_sends_do_not_change_a_subscriptions_health(
    post_webhook, alice, make_subscription, django_capture_on_commit_callbacks
):
    subscription = make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        delivery_send_test(subscription=subscription)
    post_webhook.return_value = http.HttpResult(410, 3)
    engine.pump(budget_seconds=5)
    subscription.refresh_from_db()
    assert subscription.active and subscription.failing_since is None


def test_a_busy_endpoints_backlog_does_not_hide_the_others(alice, make_subscription, publish, settings):
    settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT = 2
    busy_one, other = make_subscription(alice, events=["busy"]), make_subscription(alice, events=["other"])
    for _ in range(40):
        publish("busy")
    publish("other")
    claimed = engine.claim_due(limit=5, busy=Counter({busy_one.id: 2}))
    assert [c.delivery.subscription_id for c in claimed] == [other.id]


def test_beside_a_held_back_endpoint_a_claim_still_takes_only_an_ordering_keys_head(alice, make_subscription, settings):
    settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT = 2
    busy_one, ordered = make_subscription(alice, events=["busy"]), make_subscription(alice, events=["ordered"])
    event_publish_many(tenant=alice, events=[NewEvent("busy", {"n": n}) for n in range(5)])
    events = event_publish_many(
        tenant=alice, events=[NewEvent("ordered", {"n": n}, ordering_key=f"k{n // 3}") for n in range(6)]
    )
    claimed = engine.claim_due(limit=10, busy=Counter({busy_one.id: 2}))
    # Each key's first event only (the share, 2, is both heads), and the rows returned are whole.
    assert sorted(c.delivery.event_id for c in claimed) == sorted([events[0].id, events[3].id])
    assert {c.delivery.subscription.id for c in claimed} == {ordered.id}
    assert all(c.attempt.number == 1 and c.delivery.attempt_count == 1 for c in claimed)


def test_beside_a_held_back_endpoint_a_claim_locks_only_the_rows_each_endpoint_has_room_for(
    alice, make_subscription, publish, settings
):
    settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT = 5
    held, half_busy, idle = (make_subscription(alice, events=[name]) for name in ("held", "half", "idle"))
    for name in ("held", "half", "idle"):
        for _ in range(8):
            publish(name)
    with transaction.atomic():
        rows = claims._due_elsewhere(
            timezone.now(), [held.id], limit=100, room=claims._room(Counter({half_busy.id: 3, held.id: 5}), 5)
        )
    # It locks what triage would take and no more: locked rows are ones other workers skip.
    assert Counter(row[1] for row in rows) == {half_busy.id: 2, idle.id: 5}


@pytest.mark.django_db(transaction=True)
def test_claims_beside_a_held_back_backlog_take_turns_not_the_same_rows(alice, make_subscription, publish, settings):
    """Two workers claim at once while one endpoint is held back: the second takes the rows after the
    ones the first has locked, rather than the same oldest rows, which it would find taken."""
    settings.ASIRI_SEND_CONCURRENCY_PER_ENDPOINT = 3
    busy_one, other = make_subscription(alice, events=["busy"]), make_subscription(alice, events=["other"])
    for _ in range(20):
        publish("busy")
    for _ in range(6):
        publish("other")
    held = Counter({busy_one.id: 3})
    locked, release = threading.Event(), threading.Event()
    first: list = []

    def first_worker() -> None:
        try:
            with transaction.atomic():  # its locks are held until this commits
                first.extend(engine.claim_due(limit=1, busy=held))
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    worker = threading.Thread(target=first_worker)
    worker.start()
    try:
        assert locked.wait(10)
        second = engine.claim_due(limit=5, busy=held)
    finally:
        release.set()
        worker.join()
    assert len(first) == 1 and first[0].delivery.subscription_id == other.id
    # The first worker locked three of `other` (its share) and leased one: the other three are the second's.
    assert [c.delivery.subscription_id for c in second] == [other.id] * 3


def test_a_late_result_cannot_cancel_a_redelivery(
    alice, make_subscription, publish, django_capture_on_commit_callbacks
):
    from deliveries.services import delivery_redeliver

    make_subscription(alice)
    publish()
    (claimed,) = engine.claim_due(limit=1)
    Delivery.objects.stop_pending([claimed.delivery.subscription_id], "Stopped: paused")  # while the send is in flight
    with django_capture_on_commit_callbacks(execute=False):
        delivery_redeliver(delivery=Delivery.objects.get(pk=claimed.delivery.pk))
    engine.record_outcomes([(claimed, http.HttpResult(500, 3))])
    delivery = Delivery.objects.get(pk=claimed.delivery.pk)
    assert delivery.status == DeliveryStatus.PENDING and delivery.series_start == 1


def test_a_delivery_that_never_records_an_outcome_ends_failed(alice, make_subscription, publish, settings):
    settings.ASIRI_RETRY_SCHEDULE = (1,)
    make_subscription(alice)
    publish()
    engine.claim_due(limit=1)
    make_due()
    engine.claim_due(limit=1)  # two attempts, no outcome: the worker died both times
    make_due()
    assert engine.claim_due(limit=1) == []
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and "Gave up" in delivery.failure_reason


def test_a_delivery_past_a_shortened_retry_schedule_ends_saying_so_not_that_outcomes_were_lost(
    alice, make_subscription, publish, settings
):
    # Its attempts had recorded their 500s: "no outcome was recorded" sent support looking for a crash.
    settings.ASIRI_RETRY_SCHEDULE = (1, 1, 1)
    make_subscription(alice)
    publish()
    for _ in range(2):
        (claimed,) = engine.claim_due(limit=1)
        engine.record_outcomes([(claimed, http.HttpResult(500, 5, body="no"))])
        make_due()
    settings.ASIRI_RETRY_SCHEDULE = (1,)  # a deploy shortens it: two attempts in all
    assert engine.claim_due(limit=1) == []
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.failure_reason == (
        "Gave up: the 2 attempts the retry schedule allows were made (it was shortened after they were scheduled)."
    )


def test_test_sends_to_a_deleted_subscription_are_stopped(
    post_webhook, alice, make_subscription, django_capture_on_commit_callbacks
):
    subscription = make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        delivery_send_test(subscription=subscription)
    subscription.soft_delete()
    engine.pump(budget_seconds=2)
    post_webhook.assert_not_called()
    assert Delivery.objects.get().status == DeliveryStatus.FAILED


def test_send_now_sends_just_the_named_delivery_ahead_of_an_older_backlog(
    post_webhook, alice, make_subscription, publish
):
    make_subscription(alice, events=["bulk"])
    for _ in range(5):
        publish("bulk")
    with_backlog = make_subscription(alice, events=["nothing.matches"])
    test_send = delivery_send_test(subscription=with_backlog)
    stats = engine.send_now([test_send.id])
    assert (stats.sent, stats.succeeded) == (1, 1)
    assert [c.args[1] for c in post_webhook.call_args_list] == [with_backlog.url]
    assert Delivery.objects.filter(status=DeliveryStatus.PENDING, is_test=False).count() == 5
    assert engine.send_now([test_send.id]).sent == 0  # already done: nothing to claim


def test_the_services_own_headers_win_over_a_subscriptions(post_webhook, alice, make_subscription, publish):
    # Stored past the API's checks (say, by an older version): the service's headers are still the ones sent.
    make_subscription(alice, headers={"X-Tenant": "acme", "Webhook-Id": "forged", "User-Agent": "mine"})
    publish()
    engine.pump(budget_seconds=5)
    ((_, _, headers),) = sent_requests(post_webhook)
    assert headers["X-Tenant"] == "acme"
    assert {name.lower() for name in headers} == set(headers) - {"X-Tenant"} | {"x-tenant"}
    assert headers["webhook-id"].startswith("dlv_") and headers["user-agent"] != "mine"


@pytest.mark.django_db(transaction=True)
def test_a_claim_stopped_longer_than_half_a_lease_is_ended_and_its_rows_go_to_another_worker(
    alice, make_subscription, publish, settings, monkeypatch
):
    # A worker frozen mid-claim kept its rows locked past their lease, then leased them already expired.
    settings.ASIRI_DELIVERY_LEASE = 2
    make_subscription(alice)
    publish()
    original = claims.triage

    def frozen(*args, **kwargs):
        time.sleep(1.6)  # idle in the transaction, its candidates locked, past half the lease
        return original(*args, **kwargs)

    monkeypatch.setattr(claims, "triage", frozen)
    with pytest.raises(DatabaseError):
        engine.claim_due(limit=1)
    connection.close()
    monkeypatch.setattr(claims, "triage", original)
    (claimed,) = engine.claim_due(limit=1)  # not locked, not leased: another worker takes it at once
    assert claimed.attempt.number == 1
