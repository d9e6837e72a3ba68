"""Per-key ordering: for one subscription, deliveries with the same ordering key are attempted strictly in
publish order, each only once the one before it succeeded or failed; nothing else waits."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

import pytest
from django.db import connection

from core.clock import database_now
from deliveries import engine, http
from deliveries.models import Delivery, DeliveryStatus, deliveries_release_stranded
from deliveries.services import NewEvent, delivery_redeliver, event_publish, event_publish_many
from tests.support import receiver as rx
from tests.support.factories import make_due
from tests.support.plans import explain, statement_of
from tests.support.processes import celery_beat, celery_worker, wait_until


@pytest.fixture
def publish(alice, django_capture_on_commit_callbacks):
    def publish_(n: int, key: str | None = None) -> str:
        with django_capture_on_commit_callbacks(execute=False):
            event = event_publish(tenant=alice, event_type="invoice.paid", data={"n": n}, ordering_key=key)
        return Delivery.objects.get(event=event).id

    return publish_


def claimed_ids(limit: int = 50) -> list[str]:
    return [c.delivery.id for c in engine.claim_due(limit=limit)]


def test_only_the_head_of_a_key_is_claimed_and_it_blocks_its_followers_through_retries(
    alice, make_subscription, publish, settings
):
    settings.ASIRI_RETRY_SCHEDULE = (5, 5)
    make_subscription(alice)
    first, second, third = (publish(n, key="order-42") for n in range(3))
    (head,) = engine.claim_due(limit=50)
    assert head.delivery.id == first
    engine.record_outcomes([(head, http.HttpResult(500, 3))])  # retrying: still the head
    make_due()
    assert claimed_ids() == [first]
    assert Delivery.objects.filter(pk__in=[second, third], attempt_count=0).count() == 2


def test_a_finished_head_releases_the_next_one_only(alice, make_subscription, publish):
    make_subscription(alice)
    _first, second, _third = (publish(n, key="k") for n in range(3))
    (head,) = engine.claim_due(limit=50)
    engine.record_outcomes([(head, http.HttpResult(200, 3))])
    assert claimed_ids() == [second]


def test_a_failed_head_releases_its_followers(alice, make_subscription, publish, settings):
    settings.ASIRI_RETRY_SCHEDULE = ()
    make_subscription(alice)
    first, second = publish(0, key="k"), publish(1, key="k")
    (head,) = engine.claim_due(limit=50)
    engine.record_outcomes([(head, http.HttpResult(500, 3))])
    assert Delivery.objects.get(pk=first).status == DeliveryStatus.FAILED
    assert claimed_ids() == [second]


def test_other_keys_and_unordered_deliveries_are_not_held_up(alice, make_subscription, publish):
    make_subscription(alice)
    a1, a2 = publish(0, key="a"), publish(1, key="a")
    b1 = publish(2, key="b")
    loose = [publish(n) for n in range(3, 6)]
    assert set(claimed_ids()) == {a1, b1, *loose}
    assert Delivery.objects.get(pk=a2).attempt_count == 0


def test_a_key_is_per_subscription(alice, make_subscription, django_capture_on_commit_callbacks):
    make_subscription(alice)
    make_subscription(alice, url="https://hooks.example.com/other")
    with django_capture_on_commit_callbacks(execute=False):
        first, _second = (
            event_publish(tenant=alice, event_type="invoice.paid", data={"n": n}, ordering_key="k") for n in range(2)
        )
    assert {c.delivery.event_id for c in engine.claim_due(limit=50)} == {first.id}  # each subscription's first


def test_a_redelivery_goes_to_the_end_of_its_key(alice, make_subscription, publish, django_capture_on_commit_callbacks):
    make_subscription(alice)
    first = publish(0, key="k")
    (head,) = engine.claim_due(limit=50)
    engine.record_outcomes([(head, http.HttpResult(200, 3))])
    second = publish(1, key="k")
    with django_capture_on_commit_callbacks(execute=False):
        delivery_redeliver(delivery=Delivery.objects.get(pk=first))
    assert Delivery.objects.get(pk=first).next_attempt_at is None  # it waits behind `second`
    assert claimed_ids() == [second]  # published before the redelivery: it goes first


def due_ids() -> set[str]:
    return set(Delivery.objects.due(database_now()).values_list("pk", flat=True))


def test_a_follower_waits_without_a_time_so_no_claim_reads_it(alice, make_subscription, publish, settings):
    settings.ASIRI_RETRY_SCHEDULE = (3600,)
    make_subscription(alice)
    first, second = publish(0, key="k"), publish(1, key="k")
    loose = publish(2)
    assert due_ids() == {first, loose}
    assert Delivery.objects.get(pk=second).next_attempt_at is None
    (head, other) = engine.claim_due(limit=50)
    engine.record_outcomes([(head, http.HttpResult(500, 3)), (other, http.HttpResult(200, 3))])
    # Behind a head waiting out its retry: published now, it waits too.
    third = publish(3, key="k")
    assert due_ids() == set() and Delivery.objects.filter(pk__in=[second, third], next_attempt_at=None).count() == 2
    assert Delivery.objects.backlog(database_now()) | {"oldest_due_seconds": None} == {
        "due": 0,
        "scheduled": 1,
        "waiting": 2,
        "oldest_due_seconds": None,
    }


@pytest.mark.parametrize("answer", [200, 500], ids=["succeeded", "failed"])
@pytest.mark.parametrize("batch", ["alone", "beside a failure"])
def test_a_head_that_ends_makes_the_next_one_due_and_only_it(
    alice, make_subscription, publish, settings, answer, batch
):
    """Alone, a success is written by the one-statement path; beside a failure, by the general one."""
    settings.ASIRI_RETRY_SCHEDULE = ()  # a failure ends the delivery
    make_subscription(alice)
    _first, second, third = (publish(n, key="k") for n in range(3))
    other = publish(3, key="other")
    head, *rest = sorted(engine.claim_due(limit=50), key=lambda c: c.delivery.id != _first)
    assert [c.delivery.id for c in rest] == [other]
    outcomes = [(head, http.HttpResult(answer, 3))]
    if batch == "beside a failure":
        outcomes.append((rest[0], http.HttpResult(503, 3)))
    engine.record_outcomes(outcomes)
    assert due_ids() == {second}
    assert Delivery.objects.get(pk=third).next_attempt_at is None


def test_a_head_ended_unsent_makes_the_next_one_due(alice, make_subscription, publish, settings):
    settings.ASIRI_RETRY_SCHEDULE = ()
    make_subscription(alice)
    first, second = publish(0, key="k"), publish(1, key="k")
    Delivery.objects.filter(pk=first).update(attempt_count=1)  # every attempt made, none recorded
    assert claimed_ids() == []
    assert Delivery.objects.get(pk=first).failure_reason.startswith("Gave up")
    assert claimed_ids() == [second]


def test_the_safety_net_makes_due_a_follower_whose_head_ended_unnoticed(alice, make_subscription, publish):
    make_subscription(alice)
    first, second, third = (publish(n, key="k") for n in range(3))
    other_first, other_second = publish(3, key="other"), publish(4, key="other")
    # As if the head ended between a publish's reading of the key and its commit: nothing released the next.
    Delivery.objects.filter(pk=first).update(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None)
    assert due_ids() == {other_first}
    assert deliveries_release_stranded(database_now()) == 1
    assert due_ids() == {second, other_first}
    assert Delivery.objects.filter(pk__in=[third, other_second], next_attempt_at=None).count() == 2


def test_every_lookup_of_a_keys_first_delivery_uses_the_ordered_index_whatever_the_statistics(
    alice, make_subscription, publish, django_capture_on_commit_callbacks
):
    """A backlog of 1,000 keys × 3 in a table no ANALYZE has seen yet (a new install, or a burst before
    autovacuum looks): finding a key's first delivery through any index on the subscription and a sort looks
    as cheap to the planner as delivery_ordered_in_flight. It is not: that read the subscription's whole
    backlog for every key (250 ms a claim, bench scenario 7 at a fourteenth of the unordered rate)."""
    subscription = make_subscription(alice)
    event_id = Delivery.objects.get(pk=publish(0)).event_id

    def backlog(keys: int, per_key: int, start: int) -> list[Delivery]:
        return Delivery.objects.bulk_create(
            Delivery(
                tenant=alice,
                event_id=event_id,
                subscription=subscription,
                event_type="invoice.paid",
                ordering_key=f"key-{n % keys}",
                position=start + n,
                next_attempt_at=database_now() if n < keys else None,  # each key's first due, the rest waiting
            )
            for n in range(keys * per_key)
        )

    # Sent earlier: no VACUUM has taken their entries out of the in-flight indexes yet.
    Delivery.objects.filter(pk__in=[d.pk for d in backlog(1000, 20, 1)]).update(status=DeliveryStatus.SUCCEEDED)
    backlog(1000, 3, 100_000)
    table = Delivery._meta.db_table
    with connection.cursor() as cursor:  # as if never analysed; undone with the test's transaction
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = %s::regclass", [table])
        cursor.execute("UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid = %s::regclass", [table])
        indexes = "SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass"
        cursor.execute(f"UPDATE pg_class SET reltuples = 0, relpages = 1 WHERE oid IN ({indexes})", [table])  # noqa: S608
    plans = []

    def explain_lookups(execute, sql, params, many, context):
        statement = statement_of(sql)
        if "ordering_key" in statement and not statement.lstrip().startswith("INSERT"):
            plans.append((statement, explain(context, sql, params)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain_lookups):
        claimed = engine.claim_due(limit=50)  # the candidates: each one's first of its key
        engine.record_outcomes([(c, http.HttpResult(200, 3)) for c in claimed])  # the next of each key
        mixed = [(c, http.HttpResult(500 if n else 200, 3)) for n, c in enumerate(engine.claim_due(limit=5))]
        engine.record_outcomes(mixed)  # the general path
        with django_capture_on_commit_callbacks(execute=False):
            event_publish(tenant=alice, event_type="invoice.paid", data={}, ordering_key="key-7")  # a key in flight?
    assert len(claimed) == 50
    lookups = [plan for sql, plan in plans if "ordering_key" in plan]
    assert len(lookups) >= 4, [sql for sql, _ in plans]
    for plan in lookups:
        assert "delivery_ordered_in_flight" in plan and "delivery_due_by_subscription" not in plan, plan
        assert "Sort" not in plan, plan  # each key's first row read in the index's order, not found and sorted
    releases = [plan for sql, plan in plans if "-infinity" in sql]
    assert releases and all("deliveries_delivery_pkey" in plan for plan in releases), releases


def test_the_log_says_what_an_ordered_delivery_waits_on(api, alice, make_subscription, publish):
    subscription = make_subscription(alice)
    first, second = publish(0, key="k"), publish(1, key="k")
    unordered = publish(2)
    rows = {r["id"]: r for r in api.get(f"/v1/webhooks/subscriptions/{subscription.id}/deliveries").json()["results"]}
    assert rows[second]["waiting_on"] == first and rows[second]["ordering_key"] == "k"
    assert rows[first]["waiting_on"] is None and rows[unordered]["waiting_on"] is None
    detail = api.get(f"/v1/webhooks/subscriptions/{subscription.id}/deliveries/{second}").json()
    assert detail["waiting_on"] == first


@pytest.mark.parametrize(
    ("ordering_key", "field_error"),
    [("x" * 201, "no more than 200"), (5, "valid string"), ("", "blank")],
)
def test_publishing_refuses_a_bad_ordering_key(alice, client_for, ordering_key, field_error):
    body = {"type": "invoice.paid", "data": {}, "ordering_key": ordering_key}
    response = client_for(alice, ["events:write"]).post("/v1/events", body, format="json")
    assert response.status_code == 400 and field_error in str(response.json()["ordering_key"])


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_workers_deliver_each_of_1000_keys_in_publish_order_though_each_first_attempt_fails(
    alice, make_subscription, empty_broker, tmp_path
):
    keys, per_key = 1000, 3
    seen: Counter = Counter()
    lock = threading.Lock()

    def fail_first_attempt(handler, index) -> None:
        with lock:
            seen[handler.headers["webhook-id"]] += 1
            first = seen[handler.headers["webhook-id"]] == 1
        rx.respond(500 if first else 200)(handler, index)

    env = {
        "ASIRI_ALLOW_PRIVATE_URLS": "1",
        "ASIRI_REQUIRE_HTTPS": "0",
        "ASIRI_RETRY_SCHEDULE": "0.2,0.2",
        "ASIRI_DISPATCH_INTERVAL": "0.2",
    }
    with rx.Receiver() as receiver, celery_beat(tmp_path, **env), celery_worker(**env), celery_worker(**env):
        make_subscription(alice, url=receiver.on("/ordered", fail_first_attempt))
        published = defaultdict(list)
        # Round-robin over the keys, 100 per call, while the workers already send: every key's followers
        # are published after their heads may have been claimed.
        wanted = [(k, n) for n in range(per_key) for k in range(keys)]
        for first in range(0, len(wanted), 100):
            chunk = wanted[first : first + 100]
            events = event_publish_many(
                tenant=alice,
                events=[NewEvent("invoice.paid", {"k": k, "n": n}, ordering_key=f"k{k}") for k, n in chunk],
            )
            ids = dict(Delivery.objects.filter(event__in=events).values_list("event_id", "id"))
            for (k, _), event in zip(chunk, events, strict=True):
                published[f"k{k}"].append(ids[event.id])
        total = keys * per_key
        assert wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == total, timeout=180), (
            Delivery.objects.filter(status="succeeded").count()
        )
    by_id = {d: key for key, ids in published.items() for d in ids}
    received = defaultdict(list)
    for request in receiver.requests:
        received[by_id[request.headers["webhook-id"]]].append(request.headers["webhook-id"])
    for key, ids in published.items():
        # Each delivery twice (a failure, then its retry), and never one before the one ahead of it succeeded.
        assert received[key] == [d for d in ids for _ in range(2)], key
