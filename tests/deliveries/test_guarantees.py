"""The delivery guarantees, each proved with real processes: a Celery worker and beat,
Redis, PostgreSQL, and receivers on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import Counter

import psycopg
import pytest
import redis as redis_client
from celery import current_app
from django.conf import settings
from django.db import connection, transaction

from deliveries.models import Attempt, Delivery, Event
from deliveries.services import delivery_send_test, event_publish
from deliveries.wakeups import DELIVER_NOW
from tests.support import receiver as rx
from tests.support.canary import Canary
from tests.support.processes import celery_beat, celery_worker, redis_server, stop, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Short enough that every test ends within a minute, with the same code paths as production.
FAST = {
    "ASIRI_ALLOW_PRIVATE_URLS": "1",
    "ASIRI_REQUIRE_HTTPS": "0",
    "ASIRI_RETRY_SCHEDULE": "0.3,0.3,0.3",
    "ASIRI_DELIVERY_TIMEOUT": "1",
    "ASIRI_DELIVERY_LEASE": "3",
    "ASIRI_DISPATCH_INTERVAL": "0.2",
    "ASIRI_PUMP_SECONDS": "5",
}


def publish_many(tenant, count: int, event_type: str = "invoice.paid") -> list[Event]:
    return [event_publish(tenant=tenant, event_type=event_type, data={"n": n}) for n in range(count)]


def all_final(count: int) -> bool:
    return Delivery.objects.filter(status__in=["succeeded", "failed"]).count() >= count


def test_sigkill_of_the_whole_worker_loses_nothing(alice, make_subscription, empty_broker, tmp_path):
    with rx.Receiver(delay=0.02) as receiver, celery_beat(tmp_path, **FAST):
        make_subscription(alice, url=receiver.url())
        with celery_worker(**FAST) as worker:
            publish_many(alice, 200)
            assert receiver.wait_for(60, timeout=30, predicate=lambda reqs: len(reqs) >= 60)
            stop(worker, 9)  # SIGKILL the main process and its pool children at once
        in_flight_at_kill = Attempt.objects.filter(duration_ms__isnull=True, error="").count()
        with celery_worker(**FAST):
            assert wait_until(lambda: len(receiver.ids()) >= 200, timeout=45), len(receiver.ids())
            assert wait_until(lambda: all_final(200), timeout=20)
    ids = receiver.ids()
    assert set(ids) == set(Delivery.objects.values_list("id", flat=True))
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates <= in_flight_at_kill, (duplicates, in_flight_at_kill)
    assert Delivery.objects.filter(status="succeeded").count() == 200
    lost = Attempt.objects.filter(error__startswith="No result recorded").count()
    assert lost <= in_flight_at_kill


def test_a_flushed_and_restarted_broker_loses_nothing(alice, make_subscription, empty_broker, tmp_path):
    with redis_server(tmp_path) as redis, rx.Receiver() as receiver:
        env = {**FAST, "CELERY_BROKER_URL": redis.url}
        make_subscription(alice, url=receiver.url())
        with celery_beat(tmp_path, **env), celery_worker(**env):
            # Published through the suite's broker, which no worker here reads: every wake-up is
            # lost, so only the database and the dispatcher can get these delivered.
            publish_many(alice, 500)
            assert receiver.wait_for(100, timeout=30, predicate=lambda reqs: len(reqs) >= 100)
            redis.flushall()
            redis.stop()
            time.sleep(0.5)
            redis.start()
            assert wait_until(lambda: len(receiver.ids()) >= 500, timeout=60), len(receiver.ids())
            assert wait_until(lambda: all_final(500), timeout=20)
    assert Delivery.objects.filter(status="succeeded").count() == 500


def test_beat_started_while_the_broker_is_away_sends_within_a_second_or_two_of_its_return(tmp_path):
    with redis_server(tmp_path) as redis:
        redis.stop()
        with celery_beat(tmp_path, **FAST, CELERY_BROKER_URL=redis.url) as beat:
            # Celery's own scheduler tries again 2, 6, 12 and 20 s after its first: at 15 s, its next try is 5 s away.
            time.sleep(15)
            redis.start()
            queued = lambda: redis_client.Redis(port=redis.port).llen(settings.CELERY_TASK_DEFAULT_QUEUE)  # noqa: E731
            assert wait_until(lambda: queued() > 0, timeout=4), "".join(beat.lines)[-3000:]
            assert wait_until(lambda: "the broker answers again" in "".join(beat.lines), timeout=5)
    log = "".join(beat.lines)
    assert log.count("the broker cannot be reached") == 1 and "Trying again" not in log, log[-3000:]
    assert f"Error 111 connecting to 127.0.0.1:{redis.port}" in log, log[-3000:]


def test_a_worker_survives_its_broker_going_mid_send_and_delivers_a_second_after_it_returns(
    alice, make_subscription, empty_broker, tmp_path
):
    with redis_server(tmp_path) as redis, rx.Receiver(delay=2.0) as receiver:
        env = {**FAST, "CELERY_BROKER_URL": redis.url, "ASIRI_DELIVERY_TIMEOUT": "5"}
        make_subscription(alice, url=receiver.url())
        with celery_beat(tmp_path, **env), celery_worker(**env) as worker:
            # Published through the suite's broker, which no worker here reads: only the dispatcher sends them.
            publish_many(alice, 5)
            assert receiver.wait_for(1, timeout=20)
            redis.stop()  # with a pump's requests in flight, its task unacknowledged
            publish_many(alice, 1)
            # Celery's consumer tries again 2, 6, 12 and 20 s after the loss: at 13 s, its next try is 7 s away.
            time.sleep(13)
            assert worker.poll() is None, "".join(worker.lines)[-3000:]
            redis.start()
            assert len(receiver.wait_for(6, timeout=6)) >= 6, "".join(worker.lines)[-3000:]
            assert wait_until(lambda: "the broker answers again" in "".join(worker.lines), timeout=5)
    assert sorted(receiver.ids().values()) == [1] * 6
    log = "".join(worker.lines)
    assert "Unrecoverable error" not in log, log[-3000:]
    assert log.count("the broker cannot be reached") == 1 and "Trying again in" not in log, log[-3000:]
    assert "CPendingDeprecationWarning" not in log, log[-3000:]


@pytest.mark.parametrize("worker_kind", ["pumps", "priority"])
def test_a_task_that_ends_after_a_broker_blip_does_not_stop_its_worker(
    alice, make_subscription, empty_broker, tmp_path, worker_kind
):
    # Its late acknowledgement went through the channel of the connection lost meanwhile: kombu raised
    # AttributeError, and Celery stopped the worker ("Unrecoverable error") for good.
    with redis_server(tmp_path) as redis, rx.Receiver(delay=4.0) as receiver:
        env = {**FAST, "CELERY_BROKER_URL": redis.url, "ASIRI_DELIVERY_TIMEOUT": "8", "ASIRI_DELIVERY_LEASE": "12"}
        subscription = make_subscription(alice, url=receiver.url())
        priority = f"{settings.CELERY_TASK_DEFAULT_QUEUE}.priority"

        def send() -> None:
            if worker_kind == "pumps":
                publish_many(alice, 1)  # the dispatcher wakes a pump for it
            else:
                with transaction.atomic():
                    # its own wake-up goes to the suite's broker, which no worker here reads
                    delivery = delivery_send_test(subscription=subscription)
                with current_app.connection_for_write(redis.url) as connection:  # this test's broker
                    current_app.send_task(DELIVER_NOW, args=[[delivery.id]], connection=connection)

        with (
            celery_beat(tmp_path, **env),
            celery_worker(queue=None if worker_kind == "pumps" else priority, **env) as worker,
        ):
            send()
            assert receiver.wait_for(1, timeout=20), "".join(worker.lines)[-3000:]
            redis.shutdown()  # the request is in flight, its task unacknowledged
            time.sleep(1.5)
            redis.start()  # back (and reconnected) before the request ends, 4 s after it started
            assert wait_until(lambda: "the broker answers again" in "".join(worker.lines), timeout=10)
            assert wait_until(lambda: all_final(1), timeout=15), "".join(worker.lines)[-3000:]
            time.sleep(3)  # the task has ended and acknowledged its message
            assert worker.poll() is None, "".join(worker.lines)[-3000:]
            send()
            assert len(receiver.wait_for(2, timeout=15)) == 2, "".join(worker.lines)[-3000:]
    log = "".join(worker.lines)
    assert "Unrecoverable error" not in log, log[-3000:]


def test_an_event_published_in_a_rolled_back_transaction_is_never_sent(alice, make_subscription, empty_broker):
    with rx.Receiver() as receiver, celery_worker(**FAST):
        make_subscription(alice, url=receiver.url())
        with pytest.raises(RuntimeError), transaction.atomic():
            event_publish(tenant=alice, event_type="invoice.paid", data={"rolled": "back"})
            raise RuntimeError("the caller's transaction fails")
        barrier = event_publish(tenant=alice, event_type="invoice.paid", data={"barrier": True})
        # The rolled-back event left no row, so nothing could ever send it: once the barrier's delivery is
        # final, the worker has sent everything it will.
        assert wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 1, timeout=20)
    assert Event.objects.count() == 1 and Delivery.objects.count() == 1
    assert [r.body for r in receiver.requests] == [receiver.requests[0].body]
    assert barrier.id.encode() in receiver.requests[0].body


REDIRECT_TARGET = "http://169.254.169.254/latest/meta-data/"
# case: (behaviour, attempts, end status, error text in every failed attempt)
FAULTS = {
    "refused": (None, 4, "failed", "Connection failed"),
    "hang": (rx.hang(1.5), 4, "failed", "Timed out"),
    "http500": (rx.respond(500), 4, "failed", "HTTP 500"),
    "http503": (rx.respond(503, {"Retry-After": "1"}), 4, "failed", "HTTP 503"),
    "http429": (rx.respond(429, {"Retry-After": "1"}), 4, "failed", "HTTP 429"),
    "reset": (rx.reset_mid_body(), 4, "failed", "Connection broken"),
    "r301": (rx.respond(301, {"Location": REDIRECT_TARGET}), 4, "failed", "HTTP 301: redirect not followed"),
    "r302": (rx.respond(302, {"Location": REDIRECT_TARGET}), 4, "failed", "HTTP 302: redirect not followed"),
    "r307": (rx.respond(307, {"Location": REDIRECT_TARGET}), 4, "failed", "HTTP 307: redirect not followed"),
    "r308": (rx.respond(308, {"Location": REDIRECT_TARGET}), 4, "failed", "HTTP 308: redirect not followed"),
    "recovers": (rx.fail_then(2, rx.respond(204)), 3, "succeeded", "HTTP 500"),
    "gone": (rx.respond(410), 1, "failed", "HTTP 410 Gone"),
}


@pytest.mark.parametrize("outage", [0, 3], ids=["connections-cut", "down-3s"])
def test_a_database_restart_mid_send_costs_no_second_send(alice, make_subscription, empty_broker, tmp_path, outage):
    # Long leases: a delivery whose outcome was not recorded would stay in flight for the rest of the test.
    env = {**FAST, "ASIRI_DELIVERY_LEASE": "120", "ASIRI_DELIVERY_TIMEOUT": "5"}
    with rx.Receiver(delay=1.0) as receiver, celery_beat(tmp_path, **env), celery_worker(**env) as worker:
        make_subscription(alice, url=receiver.url())
        publish_many(alice, 20)
        assert receiver.wait_for(5, timeout=30)
        # As a restart or a failover does to the worker while its sends wait: every connection of its cut, and no
        # new one taken for `outage` seconds (only this test run's database refuses them; this test keeps its own).
        with connection.cursor() as cursor:
            try:
                if outage:
                    allow_connections(False)
                assert cut_connections(cursor) >= 1
                time.sleep(outage)
            finally:
                allow_connections(True)
        assert wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 20, timeout=40), Counter(
            Delivery.objects.values_list("status", flat=True)
        )
    assert sorted(receiver.ids().values()) == [1] * 20
    assert not Attempt.objects.exclude(error="").exists()
    # The cut reached a pump with sends out: its batch write waited for the database, or it stopped and finished
    # them (which one depends on whether a claim or a write came first).
    log = "".join(worker.lines)
    assert "holding" in log or "the pump stopped; finishing" in log, log[-3000:]
    # Said, not a traceback from every task that met it (core.outages): at most once in each pool process.
    assert "Traceback" not in log and "raised unexpected" not in log, log[-3000:]
    assert log.count("the database cannot be reached:") <= 2, log[-3000:]


def test_a_database_outage_is_said_when_it_starts_and_when_it_ends_not_by_every_task(
    alice, make_subscription, empty_broker, tmp_path
):
    # The dispatcher runs five times a second here: before, each run wrote a traceback for as long as it lasted.
    with rx.Receiver() as receiver, celery_beat(tmp_path, **FAST), celery_worker(concurrency=1, **FAST) as worker:
        make_subscription(alice, url=receiver.url())
        try:
            allow_connections(False)
            with connection.cursor() as cursor:
                cut_connections(cursor)
            assert wait_until(lambda: "the database cannot be reached" in "".join(worker.lines), timeout=10)
            time.sleep(3)
        finally:
            allow_connections(True)
        assert wait_until(lambda: "the database answers again" in "".join(worker.lines), timeout=10)
        publish_many(alice, 1)
        assert receiver.wait_for(1, timeout=10)
    log = "".join(worker.lines)
    assert log.count("the database cannot be reached") == 1, log[-3000:]
    # What PostgreSQL or psycopg answered, on one line: a cut connection's, a closed one's or a refused one's,
    # whichever the worker met first.
    [said] = [json.loads(line)["message"] for line in worker.lines if "the database cannot be reached" in line]
    answer = said.split("the database cannot be reached: ", 1)[1]
    assert len(answer) > 20 and "\n" not in answer, said
    ended = re.search(r"the database answers again, after (\d+) s and (\d+) failures", log)
    assert ended and int(ended[1]) >= 3 and int(ended[2]) >= 10, log[-3000:]
    assert "Traceback" not in log and "raised unexpected" not in log, log[-3000:]


def cut_connections(cursor) -> int:
    """End every other session on this test run's database, as a restart or a failover does; how many."""
    cursor.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return cursor.fetchone()[0]


def allow_connections(allowed: bool) -> None:
    """Let this test run's database take new connections, or not; said from another database, as PostgreSQL
    requires."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(
            f"ALTER DATABASE {connection.ops.quote_name(db['NAME'])} ALLOW_CONNECTIONS {str(allowed).lower()}"
        )


def test_the_fault_matrix(alice, make_subscription, empty_broker, tmp_path):
    closed = Canary()  # a port nobody accepts on: bound, never listening
    with rx.Receiver() as receiver, celery_beat(tmp_path, **FAST), celery_worker(**FAST):
        subscriptions = {}
        for case, (behaviour, *_rest) in FAULTS.items():
            url = f"http://127.0.0.1:{closed.port}/" if behaviour is None else receiver.on(f"/{case}", behaviour)
            subscriptions[case] = make_subscription(alice, url=url, events=[f"fault.{case}"])
        for case in FAULTS:
            event_publish(tenant=alice, event_type=f"fault.{case}", data={})
        assert wait_until(lambda: all_final(len(FAULTS)), timeout=50)
    for listener in closed.listeners:
        listener.close()
    for case, (behaviour, attempts, end, error) in FAULTS.items():
        delivery = Delivery.objects.get(subscription=subscriptions[case])
        log = list(delivery.attempts.order_by("number"))
        assert (delivery.status, len(log), delivery.attempt_count) == (end, attempts, attempts), case
        assert delivery.next_attempt_at is None, case
        failed_attempts = log if end == "failed" else log[:-1]
        assert all(error in a.error for a in failed_attempts), (case, [a.error for a in log])
        if behaviour is not None:
            assert receiver.per_path[f"/{case}"] == attempts, case  # one request per logged attempt
        if case.startswith("r3"):
            assert REDIRECT_TARGET in log[0].error
        gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(log)]
        if case in ("http503", "http429"):
            assert all(gap >= 0.6 for gap in gaps), (case, gaps)  # Retry-After 1 s, capped at 2 x 0.3 s
        elif gaps:
            assert all(gap >= 0.24 for gap in gaps), (case, gaps)  # 0.3 s - 20 % jitter
    gone = subscriptions["gone"]
    gone.refresh_from_db()
    assert not gone.active and "410" in gone.disabled_reason


def ssrf_targets(port: int) -> list[str]:
    hosts = [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f000001",
        "0x7f.0.0.1",
        "0x7f.1",
        "0177.0.0.1",
        "0177.1",
        "017700000001",
        "127.000.000.001",
        "127.0.0.2",
        "127.1.2.3",
        "127.255.255.254",
        "0.0.0.0",
        "0",
        "0x0",
        "127.0.0.1.",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[::]",
        "localhost",
        "LOCALHOST",
        "localhost.",
        "app.localhost",
        "localhost.localdomain",
        "loopback.test",
        "loopback6.test",
        "zero.test",
        "mapped.test",
        "mixed-loopback.test",
    ]
    urls = [f"http://{host}:{port}/hook" for host in hosts]
    urls += [
        f"https://{host}:{port}/hook"
        for host in ("127.0.0.1", "localhost", "[::1]", "2130706433", "mixed-loopback.test", "127.1")
    ]
    return urls


def test_private_targets_are_refused_at_create_and_at_send(api, alice, make_subscription, empty_broker, settings):
    settings.ASIRI_REQUIRE_HTTPS = False
    with Canary() as canary:
        targets = ssrf_targets(canary.port)
        assert len(targets) >= 40
        for url in targets:
            response = api.post("/v1/webhooks/subscriptions", {"url": url}, format="json")
            assert response.status_code == 400, url
        # Stored behind the API's back (as if DNS changed after creation), then sent.
        for n, url in enumerate(targets):
            make_subscription(alice, url=url, events=[f"ssrf.t{n}"])
        with celery_worker(**{**FAST, "ASIRI_ALLOW_PRIVATE_URLS": "0", "ASIRI_RETRY_SCHEDULE": "600"}):
            for n in range(len(targets)):
                event_publish(tenant=alice, event_type=f"ssrf.t{n}", data={})
            assert wait_until(lambda: Attempt.objects.exclude(duration_ms=None).count() >= len(targets), 30)
    errors = {a.delivery.subscription.url: a.error for a in Attempt.objects.select_related("delivery__subscription")}
    assert len(errors) == len(targets)
    assert all(error.startswith("Refused:") for error in errors.values()), errors
    assert canary.connections == 0


def test_a_slow_endpoint_holds_only_its_share_while_others_flow(alice, make_subscription, empty_broker):
    per_endpoint = 20
    env = {
        **FAST,
        "ASIRI_DELIVERY_TIMEOUT": "5",
        "ASIRI_SEND_CONCURRENCY": "100",
        "ASIRI_SEND_CONCURRENCY_PER_ENDPOINT": str(per_endpoint),
    }
    slow = [rx.Receiver(delay=1.5) for _ in range(3)]
    with slow[0], slow[1], slow[2], rx.Receiver() as fast, celery_worker(concurrency=1, **env):  # one process
        for receiver in slow:
            make_subscription(alice, url=receiver.url(), events=["slow"])
        make_subscription(alice, url=fast.url(), events=["fast"])
        for _ in range(30):
            event_publish(tenant=alice, event_type="slow", data={})
        for _ in range(30):
            event_publish(tenant=alice, event_type="fast", data={})
        assert fast.wait_for(30, timeout=10)
        slow_received_by_then = [len(receiver.requests) for receiver in slow]
        assert wait_until(lambda: all_final(120), timeout=30)
    slow_requests = [r for receiver in slow for r in receiver.requests]
    assert rx.max_concurrency(slow_requests) >= 50, rx.max_concurrency(slow_requests)
    assert all(receiver.max_in_flight <= per_endpoint for receiver in slow), [r.max_in_flight for r in slow]
    # The fast endpoint got all 30 before a single slow request had finished: it never waited.
    assert max(r.received_at for r in fast.requests) < min(r.finished_at for r in slow_requests)
    assert all(n <= per_endpoint for n in slow_received_by_then), slow_received_by_then


def test_two_workers_and_two_dispatchers_deliver_each_exactly_once(alice, make_subscription, empty_broker, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with rx.Receiver() as receiver:
        for n in range(4):
            make_subscription(alice, url=receiver.url(f"/endpoint-{n}"))
        with (
            celery_beat(tmp_path / "a", **FAST),
            celery_beat(tmp_path / "b", **FAST),
            celery_worker(**FAST),
            celery_worker(**FAST),
        ):
            publish_many(alice, 250)  # x 4 subscriptions = 1,000 deliveries
            assert wait_until(lambda: all_final(1000), timeout=60)
    ids = receiver.ids()
    assert len(ids) == 1000 and set(ids.values()) == {1}, Counter(ids.values())
    assert Delivery.objects.filter(status="succeeded").count() == 1000
    assert Attempt.objects.count() == 1000


def test_a_rate_limited_endpoint_gets_no_more_than_its_rate_and_slows_no_one_else(
    alice, make_subscription, empty_broker
):
    rate = 5
    with (
        rx.Receiver() as limited,
        rx.Receiver() as other,
        celery_worker(concurrency=1, **FAST),
        celery_worker(concurrency=1, **FAST),  # two workers: the window must be shared
    ):
        make_subscription(alice, url=limited.url(), events=["limited"], rate_limit=rate)
        make_subscription(alice, url=other.url(), events=["other"])
        publish_many(alice, 30, event_type="limited")
        publish_many(alice, 200, event_type="other")
        assert other.wait_for(200, timeout=20)
        limited_by_then = len(limited.requests)
        assert wait_until(lambda: all_final(230), timeout=30)
    arrivals = sorted(r.received_at for r in limited.requests)
    assert len(arrivals) == 30
    # At most `rate` in any one second, counted where the limit applies: when the workers took each send (the
    # attempt's start, on the database's clock). Arrivals lag their sends by a few milliseconds, or by hundreds
    # on a loaded machine (the suite runs two pytest workers beside these), and bunched up past the rate while
    # the sends had not. A claim reads its clock a moment before Redis grants its sends, so the window checked
    # is a little shorter than a second.
    starts = sorted(Attempt.objects.filter(delivery__event_type="limited").values_list("started_at", flat=True))
    seconds = [(t - starts[0]).total_seconds() for t in starts]
    assert len(seconds) == 30
    busiest = max(sum(1 for t in seconds[i:] if t - seconds[i] < 0.9) for i in range(len(seconds)))
    assert busiest <= rate, (busiest, seconds)
    assert seconds[-1] >= (30 / rate - 1) * 0.95 and arrivals[-1] - arrivals[0] >= (30 / rate - 1) * 0.9
    # The other endpoint's 200 all arrived while the limited one was still being held back.
    assert limited_by_then < 30, limited_by_then
    assert Delivery.objects.filter(status="succeeded").count() == 230


def test_a_test_send_is_not_queued_behind_a_backlog(alice, make_subscription, empty_broker, settings):
    env = {
        **FAST,
        "ASIRI_DELIVERY_TIMEOUT": "5",
        "ASIRI_SEND_CONCURRENCY": "10",
        "ASIRI_SEND_CONCURRENCY_PER_ENDPOINT": "10",
        "ASIRI_PUMP_SECONDS": "30",  # the backlog's pump holds its process until the backlog is gone
    }
    with (
        rx.Receiver(delay=0.3) as busy,
        rx.Receiver() as waiting,
        celery_worker(concurrency=1, **env),  # one process, kept busy by the backlog
        celery_worker(concurrency=1, queue=settings.ASIRI_PRIORITY_QUEUE, **env),  # the Procfile's `priority`
    ):
        make_subscription(alice, url=busy.url(), events=["bulk"])
        target = make_subscription(alice, url=waiting.url(), events=["nothing.matches"])
        publish_many(alice, 200, event_type="bulk")  # 200 x 0.3 s, 10 at a time: about 6 s of backlog
        assert busy.wait_for(20, timeout=20)
        delivery_send_test(subscription=target)
        assert waiting.wait_for(1, timeout=10)
        backlog_sent_by_then = len(busy.requests)
        assert wait_until(lambda: all_final(201), timeout=30)
    # Behind the backlog it would have been claimed after all 200: it arrived long before.
    assert backlog_sent_by_then < 150, backlog_sent_by_then
