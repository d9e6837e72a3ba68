"""`/metrics`: who may read it, what it says, and that it adds up every process's counting."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from deliveries import engine, http
from deliveries.metrics import BacklogCollector
from deliveries.models import Attempt, Delivery, Event, Pulse
from deliveries.services import deliveries_dispatch, event_publish
from deliveries.tasks import dispatch
from tests.support.factories import add_deliveries
from tests.support.processes import celery_worker, free_port, gunicorn, stop, wait_until
from tests.support.receiver import Receiver, respond
from tests.support.settings import start

FAMILIES = {
    "asiri_deliveries": "counter",
    "asiri_attempts": "counter",
    "asiri_attempt_duration_seconds": "histogram",
    "asiri_dispatcher_runs": "counter",
    "asiri_deliveries_backlog": "gauge",
    "asiri_oldest_due_delivery_age_seconds": "gauge",
}
LABELS = {"outcome", "response_class", "state", "le"}
TOKEN = "metrics-token-for-tests-0123456789"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name → type, (sample name, labels) → value) of an exposition."""
    families, samples = {}, {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def scrape(client: Client | None = None, **headers: str) -> Samples:
    response = (client or Client()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return parse(response.content.decode())[1]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# --- who may read it ---------------------------------------------------------------------


@pytest.mark.django_db
def test_it_is_served_to_loopback_by_default_without_a_key_or_an_allowed_host():
    for address in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        response = Client(REMOTE_ADDR=address, HTTP_HOST="10.0.0.7:8000").get("/metrics")
        assert response.status_code == 200, address
        assert response["Content-Type"].startswith("text/plain; version=0.0.4")


@pytest.mark.django_db
def test_other_addresses_are_refused_without_the_token():
    response = Client(REMOTE_ADDR="10.0.0.7", HTTP_HOST="10.0.0.1:8000").get("/metrics")
    assert response.status_code == 403
    assert response.json() == {"detail": "Metrics are served to the allowed networks, or with the metrics token."}
    assert b"asiri_" not in response.content


@pytest.mark.django_db
def test_the_token_admits_any_address_and_nothing_else_does(settings):
    outsider = Client(REMOTE_ADDR="203.0.113.9")
    assert outsider.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 403  # no token configured
    settings.ASIRI_METRICS_TOKEN = TOKEN
    assert outsider.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert outsider.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN, "Bearer ñ"):
        assert outsider.get("/metrics", HTTP_AUTHORIZATION=wrong).status_code == 403, wrong
    assert outsider.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_only_the_listed_networks_are_admitted_by_address(settings):
    settings.ASIRI_METRICS_ALLOWED_NETWORKS = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="fd00::5").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="11.0.0.1").get("/metrics").status_code == 403
    settings.ASIRI_METRICS_ALLOWED_NETWORKS = ()
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403


FORWARDING_HEADERS = [
    "HTTP_X_FORWARDED_FOR",
    "HTTP_FORWARDED",
    "HTTP_X_REAL_IP",
    "HTTP_X_CLIENT_IP",
    "HTTP_TRUE_CLIENT_IP",
    "HTTP_CF_CONNECTING_IP",
]


@pytest.mark.django_db
@pytest.mark.parametrize("header", FORWARDING_HEADERS)
def test_a_request_through_a_proxy_is_admitted_by_the_token_only(settings, header):
    # A proxy on the same host that nobody listed makes every client look like 127.0.0.1.
    proxied = Client(REMOTE_ADDR="127.0.0.1", **{header: "203.0.113.9"})
    assert proxied.get("/metrics").status_code == 403
    settings.ASIRI_METRICS_TOKEN = TOKEN
    assert proxied.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("header", FORWARDING_HEADERS)
def test_no_forwarding_header_makes_an_outsider_look_local(settings, header):
    settings.ASIRI_TRUSTED_PROXIES = (ip_network("127.0.0.0/8"),)
    assert Client(REMOTE_ADDR="203.0.113.9", **{header: "127.0.0.1"}).get("/metrics").status_code == 403
    # Through the trusted proxy on this host, the client it forwarded for is judged, never what it wrote.
    headers = {header: "::1", "HTTP_X_FORWARDED_FOR": "127.0.0.1, 203.0.113.9"}
    through_proxy = Client(REMOTE_ADDR="127.0.0.1", **headers)
    assert through_proxy.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_behind_a_trusted_proxy_the_forwarded_client_is_judged_by_address(settings):
    settings.ASIRI_TRUSTED_PROXIES = (ip_network("127.0.0.0/8"),)
    settings.ASIRI_METRICS_ALLOWED_NETWORKS = (ip_network("10.0.0.0/8"),)
    assert Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.1.2.3, 11.0.0.1").get("/metrics").status_code == 403


def test_it_only_answers_get(client):
    response = client.post("/metrics")
    assert response.status_code == 405 and response["Allow"] == "GET"


@pytest.mark.django_db
def test_it_is_not_part_of_the_tenant_api_document(client):
    paths = client.get("/v1/openapi.json").json()["paths"]
    assert not [path for path in paths if "metrics" in path]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ASIRI_METRICS_ALLOWED_NETWORKS", "10.0.0.0/33"),
        ("ASIRI_METRICS_ALLOWED_NETWORKS", "everyone"),
        ("ASIRI_METRICS_TOKEN", "short"),
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/asiri-metrics"),
        ("ASIRI_WORKER_METRICS_ADDRESS", "127.0.0.1"),
        ("ASIRI_WORKER_METRICS_ADDRESS", "127.0.0.1:9108"),  # without PROMETHEUS_MULTIPROC_DIR
    ],
)
def test_a_bad_metrics_setting_fails_at_start_naming_the_variable(variable, value):
    result = start(**{variable: value})
    assert result.returncode != 0 and variable in result.stderr


def test_the_metrics_settings_default_to_loopback_only():
    result = start(
        "ASIRI_METRICS_ALLOWED_NETWORKS, repr(settings.ASIRI_METRICS_TOKEN), settings.ASIRI_WORKER_METRICS_ADDRESS"
    )
    assert result.stdout.strip() == "(IPv4Network('127.0.0.0/8'), IPv6Network('::1/128')) '' None"


# --- what it says ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_exposition_parses_and_has_every_family(client):
    response = client.get("/metrics")
    families, _ = parse(response.content.decode())
    assert {name: families.get(name) for name in FAMILIES} == FAMILIES


@pytest.mark.django_db
def test_recorded_outcomes_are_counted_by_outcome_and_response_class(client, alice, make_subscription):
    make_subscription(alice)
    for _ in range(5):
        event_publish(tenant=alice, event_type="invoice.paid", data={})
    results = [
        http.HttpResult(200, 120),
        http.HttpResult(503, 40),  # retried later
        http.HttpResult(410, 30),  # Gone: failed at once
        http.HttpResult(None, 15_000, error="Timed out after 15 s.", failure="timeout"),
        http.HttpResult(None, 2, error="Refused: …", failure="refused"),
    ]
    before = scrape(client)
    claimed = engine.claim_due(limit=5)
    engine.record_outcomes(list(zip(claimed, results, strict=True)))
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert {o: delta("asiri_deliveries_total", outcome=o) for o in ("succeeded", "retrying", "failed")} == {
        "succeeded": 1,
        "retrying": 3,
        "failed": 1,
    }
    classes = ("2xx", "4xx", "5xx", "timeout", "refused", "connection_error")
    assert {c: delta("asiri_attempts_total", response_class=c) for c in classes} == {
        "2xx": 1,
        "4xx": 1,
        "5xx": 1,
        "timeout": 1,
        "refused": 1,
        "connection_error": 0,
    }
    assert delta("asiri_attempt_duration_seconds_count") == 5
    assert delta("asiri_attempt_duration_seconds_sum") == pytest.approx(15.192)
    assert delta("asiri_attempt_duration_seconds_bucket", le="0.05") == 3
    assert delta("asiri_attempt_duration_seconds_bucket", le="15.0") == 5


@pytest.mark.django_db
def test_dispatcher_runs_are_counted(client):
    before = value(scrape(client), "asiri_dispatcher_runs_total")
    deliveries_dispatch()  # nothing due: no broker needed
    deliveries_dispatch()
    assert value(scrape(client), "asiri_dispatcher_runs_total") == before + 2


@pytest.mark.django_db
def test_the_backlog_and_the_oldest_due_age_are_read_from_the_database(client, alice, make_subscription):
    subscription = make_subscription(alice)
    samples = scrape(client)
    assert value(samples, "asiri_deliveries_backlog", state="due") == 0
    assert value(samples, "asiri_oldest_due_delivery_age_seconds") == 0
    add_deliveries(subscription, 3, status="pending", due=True)  # waiting five minutes
    add_deliveries(subscription, 2, status="retrying")
    Delivery.objects.filter(status="retrying").update(next_attempt_at=timezone.now() + timedelta(hours=1))
    add_deliveries(subscription, 4, status="succeeded")
    add_deliveries(subscription, 1, status="failed", due=True)  # finished: not backlog, however it looks
    add_deliveries(subscription, 1, status="retrying", due=True)
    Delivery.objects.filter(status="retrying", next_attempt_at__lte=timezone.now()).update(
        next_attempt_at=timezone.now() - timedelta(minutes=10)
    )
    samples = scrape(client)
    assert value(samples, "asiri_deliveries_backlog", state="due") == 4
    assert value(samples, "asiri_deliveries_backlog", state="scheduled") == 2
    assert 600 <= value(samples, "asiri_oldest_due_delivery_age_seconds") < 660


@pytest.mark.django_db
def test_the_backlog_is_one_query_the_due_index_can_answer():
    with CaptureQueriesContext(connection) as queries:
        list(BacklogCollector().collect())
    (query,) = [q for q in queries.captured_queries if "deliveries_delivery" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a few test rows would otherwise be read directly
        cursor.execute(f"EXPLAIN {query['sql']}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "delivery_due" in plan, plan


@pytest.mark.django_db
def test_the_dispatchers_pulse_is_the_time_since_it_last_ran(settings):
    def age() -> float:
        samples = {s.name: s.value for m in BacklogCollector().collect() for s in m.samples}
        return samples["asiri_dispatcher_last_run_age_seconds"]

    assert age() == float("inf")  # never ran: a dead beat on a fresh deploy must alert too
    deliveries_dispatch()
    assert 0 <= age() < 5
    Pulse.objects.update(at=F("at") - timedelta(minutes=2))
    assert 120 <= age() < 125


# --- every process's counting, added up ----------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_counters_add_up_what_other_processes_did(alice, make_subscription, empty_broker, tmp_path: Path):
    """Two Celery pool processes deliver to a receiver on 127.0.0.1; two gunicorn workers that sent
    nothing serve their counting, as does the worker's own metrics port, and keep serving it once
    the worker has stopped. Nothing in this pytest process counts into the directory."""
    counting = tmp_path / "prometheus"
    counting.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(counting),
        "ASIRI_ALLOW_PRIVATE_URLS": "1",
        "ASIRI_REQUIRE_HTTPS": "0",
        "ASIRI_RETRY_SCHEDULE": "3600",  # a failed attempt waits, scheduled, for the rest of the test
        "DJANGO_ALLOWED_HOSTS": "localhost",  # /metrics does not need the scraper's Host allowed
    }
    web_port, worker_port = free_port(), free_port()
    with (
        Receiver() as receiver,
        celery_worker(ASIRI_WORKER_METRICS_ADDRESS=f"127.0.0.1:{worker_port}", **env) as worker,
        gunicorn(web_port, workers=2, **env),
    ):
        ok = make_subscription(alice, url=receiver.on("/ok", respond(200)))
        failing = make_subscription(alice, url=receiver.on("/fail", respond(500)))
        events = [event_publish(tenant=alice, event_type="invoice.paid", data={"n": n}) for n in range(5)]
        dispatch.delay()
        assert len(receiver.wait_for(10, timeout=30)) == 10
        assert wait_until(lambda: Attempt.objects.filter(duration_ms__isnull=False).count() == 10, timeout=20)

        expected = {
            ("asiri_deliveries_total", "outcome", "succeeded"): 5,
            ("asiri_deliveries_total", "outcome", "retrying"): 5,
            ("asiri_deliveries_total", "outcome", "failed"): 0,
            ("asiri_attempts_total", "response_class", "2xx"): 5,
            ("asiri_attempts_total", "response_class", "5xx"): 5,
            ("asiri_deliveries_backlog", "state", "due"): 0,
            ("asiri_deliveries_backlog", "state", "scheduled"): 5,
        }

        def seen(samples: Samples) -> dict:
            return {key: value(samples, key[0], **{key[1]: key[2]}) for key in expected}

        web = f"http://127.0.0.1:{web_port}/metrics"
        assert wait_until(lambda: requests.get(web, timeout=10).status_code == 200, timeout=30)
        # New connections, so both gunicorn workers answer some of them.
        scrapes = [parse(requests.get(web, timeout=10, headers={"Connection": "close"}).text) for _ in range(8)]
        for families, samples in scrapes:
            assert {name: families.get(name) for name in FAMILIES} == FAMILIES
            assert seen(samples) == expected
            assert value(samples, "asiri_attempt_duration_seconds_count") == 10
            assert value(samples, "asiri_dispatcher_runs_total") >= 1

        _, from_worker = parse(requests.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).text)
        for key, count in expected.items():
            if key[0] != "asiri_deliveries_backlog":  # the database's gauges are the web's alone
                assert value(from_worker, key[0], **{key[1]: key[2]}) == count, key
        assert value(from_worker, "asiri_attempt_duration_seconds_count") == 10

        stop(worker)  # the counts of processes that have exited stay counted
        assert seen(parse(requests.get(web, timeout=10).text)[1]) == expected

    ids = {alice.id, alice.slug, ok.id, failing.id}
    ids |= {e.id for e in events} | set(Delivery.objects.values_list("id", flat=True))
    ids |= set(Event.objects.values_list("id", flat=True))
    for _, samples in [*scrapes, ("worker", from_worker)]:
        for _name, labels in samples:
            assert {label for label, _ in labels} <= LABELS
            assert not {label_value for _, label_value in labels} & ids
