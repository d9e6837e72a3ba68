"""Logs are JSON lines with the ids that tie a request to a delivery, and never a secret."""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from asiri.logs import JsonFormatter
from deliveries.models import Delivery, Event
from deliveries.tasks import dispatch, purge_expired
from tenants.models import ApiKey
from tests.support.processes import celery_worker, free_port, gunicorn, wait_until
from tests.support.receiver import Receiver


def test_each_api_request_is_one_json_line_with_its_ids(api, alice, make_subscription, caplog):
    subscription = make_subscription(alice)
    with caplog.at_level(logging.INFO, logger="asiri.requests"):
        response = api.get(f"/v1/webhooks/subscriptions/{subscription.id}", HTTP_X_REQUEST_ID="req-123")
    assert response["X-Request-ID"] == "req-123"
    (record,) = [r for r in caplog.records if r.name == "asiri.requests"]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-123" and line["status"] == 200 and line["tenant_id"] == alice.id
    assert line["subscription_id"] == subscription.id and line["method"] == "GET" and "duration_ms" in line


def test_an_unusable_request_id_is_replaced(api):
    response = api.get("/v1/webhooks/subscriptions", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert response["X-Request-ID"] != "bad id\nwith newline" and len(response["X-Request-ID"]) == 32


@pytest.mark.parametrize("level", ["ERROR", "WARNING", "info", "DEBUG"])
def test_workers_and_beat_log_at_asiri_log_level_whatever_celerys_loglevel(level):
    # What `celery worker --loglevel INFO` (the Procfile) and `celery beat` do to logging as they start; then
    # the lines Celery and beat write through the root handler: one per task received or succeeded, and per
    # task beat sends, only at DEBUG; beat's start and the tasks' own summaries wherever INFO is; the pool's
    # errors always, as JSON like the rest.
    script = """
import logging
from asiri.celery import app
app.log.setup(loglevel="INFO")
root = logging.getLogger()
print(logging.getLevelName(root.level), type(root.handlers[0].formatter).__name__)
logging.getLogger("celery.worker.strategy").info("Task deliveries.tasks.dispatch[1] received")
logging.getLogger("celery.app.trace").info("Task deliveries.tasks.dispatch[1] succeeded")
logging.getLogger("celery.app.trace").error("Task deliveries.tasks.deliver[2] raised")
logging.getLogger("celery.app.trace").warning("Soft time limit exceeded")
logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)", "dispatch", "deliveries.tasks.dispatch")
logging.getLogger("celery.beat").info("beat: Starting...")
logging.getLogger("deliveries.tasks").info("pump: sent 1")
from billiard.util import get_logger
get_logger().warning("Pool process warning")
get_logger().error("Pool process error")
"""
    env = {**os.environ, "ASIRI_LOG_LEVEL": level, "ASIRI_LOG_FORMAT": "json"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [level.upper(), "JsonFormatter"]
    written = [json.loads(line)["message"] for line in result.stderr.splitlines() if line.startswith("{")]
    chatter = [
        "Task deliveries.tasks.dispatch[1] received",
        "Task deliveries.tasks.dispatch[1] succeeded",
        "Scheduler: Sending due task dispatch (deliveries.tasks.dispatch)",
    ]
    raised, warned = "Task deliveries.tasks.deliver[2] raised", "Soft time limit exceeded"
    expected = {
        "ERROR": [raised],
        "WARNING": [raised, warned],
        "INFO": [raised, warned, "beat: Starting...", "pump: sent 1"],
        "DEBUG": [*chatter[:2], raised, warned, chatter[2], "beat: Starting...", "pump: sent 1"],
    }[level.upper()]
    expected += ["Pool process error"] if level == "ERROR" else ["Pool process warning", "Pool process error"]
    shown = [
        *chatter,
        raised,
        warned,
        "beat: Starting...",
        "pump: sent 1",
        "Pool process warning",
        "Pool process error",
    ]
    assert [line for line in written if line in shown] == expected


def test_an_unknown_log_level_fails_at_start_naming_the_variable():
    env = {**os.environ, "ASIRI_LOG_LEVEL": "LOUD", "DJANGO_SETTINGS_MODULE": "asiri.settings"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "ASIRI_LOG_LEVEL must be one of" in result.stderr


@pytest.mark.parametrize("debug", ["0", "1"])
def test_a_request_warning_is_written_once_as_json_in_debug_mode_too(debug):
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('django.request').warning('Too Many Requests: %s', '/v1/webhooks/subscriptions')"
    )
    env = {**os.environ, "DJANGO_DEBUG": debug, "ASIRI_LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "asiri.settings"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    written = [line for line in result.stderr.splitlines() if "Too Many Requests" in line]
    assert len(written) == 1 and json.loads(written[0])["logger"] == "django.request", result.stderr[-2000:]


def test_a_task_logs_what_it_did_and_nothing_when_it_did_nothing(alice, make_subscription, settings, caplog):
    settings.ASIRI_RETENTION_DAYS = 30
    with caplog.at_level(logging.INFO, logger="deliveries.tasks"):
        assert purge_expired() == "deliveries removed past the retention period: 0"
        assert dispatch() == "dispatcher: 0 due"  # every second, from beat: silent
        assert [r for r in caplog.records if r.name == "deliveries.tasks"] == []
        subscription = make_subscription(alice)
        long_ago = timezone.now() - timedelta(days=31)
        event = Event.objects.create(tenant=alice, type="a.b", data={}, created_at=long_ago)
        expired = Delivery.objects.create(
            tenant=alice, event=event, subscription=subscription, event_type="a.b", created_at=long_ago
        )
        purge_expired()
    assert not Delivery.objects.filter(pk=expired.pk).exists()
    assert [r.getMessage() for r in caplog.records if r.name == "deliveries.tasks"] == [
        "deliveries removed past the retention period: 1"
    ]


def send_keys_every_way(port: int, key: str) -> list[int]:
    """A key as a client might send it through gunicorn, right or wrong: Basic auth, the query string,
    a Referer, a request line gunicorn cannot parse. The statuses, in order."""
    url = f"http://127.0.0.1:{port}/v1/webhooks/subscriptions"
    statuses = [
        requests.get(url, auth=(key, ""), timeout=10).status_code,  # curl -u "$KEY:"
        requests.get(url, auth=(key, key), timeout=10).status_code,
        requests.get(url, params={"api_key": key}, timeout=10).status_code,
        requests.get(url, params={"access_token": key, "limit": "5"}, timeout=10).status_code,
        requests.get(f"http://127.0.0.1:{port}/v1/nowhere?token={key}", timeout=10).status_code,
        requests.get(
            url,
            params={"api_key": key},
            headers={"Authorization": f"Bearer {key}", "Referer": f"https://app.example/?access_token={key}"},
            timeout=10,
        ).status_code,
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET v1/webhooks/subscriptions?api_key={key} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        statuses.append(int(sock.recv(65536).split()[1]))
    return statuses


# A subscription's write-only header values are secrets like any other: sent, never logged.
HEADER_SECRETS = ["Basic aGVhZGVyLXNlY3JldA==", "hdr-key-0123456789", "session=hdr-cookie-0123", "hdr-token-0123"]
SECRET_HEADERS = {"Authorization": HEADER_SECRETS[0], "X-Api-Key": HEADER_SECRETS[1], "X-Tenant": "acme"}
KEPT_HEADERS = {"Authorization": None, "X-Api-Key": None, "Cookie": HEADER_SECRETS[2]}
REFUSED_HEADERS = {"X-Token": HEADER_SECRETS[3], "Host": "x"}  # a 400 must not echo the values either


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_full_run_logs_no_secret(alice, client_for, make_key, settings, caplog, empty_broker):
    settings.ASIRI_ALLOW_PRIVATE_URLS = True
    settings.ASIRI_REQUIRE_HTTPS = False
    plain_keys = [make_key(alice), make_key(alice, ["events:write"])]
    api, publisher = client_for(alice), client_for(alice, ["events:write"])
    port = free_port()
    with caplog.at_level(logging.DEBUG), Receiver() as receiver:
        with (
            celery_worker(ASIRI_ALLOW_PRIVATE_URLS="1", ASIRI_LOG_FORMAT="json") as worker,
            gunicorn(port, workers=1, ASIRI_LOG_FORMAT="json", ASIRI_LOG_LEVEL="DEBUG") as web,
        ):
            created = api.post(
                "/v1/webhooks/subscriptions", {"url": receiver.url(), "headers": SECRET_HEADERS}, format="json"
            ).json()
            api.patch(f"/v1/webhooks/subscriptions/{created['id']}", {"headers": KEPT_HEADERS}, format="json")
            api.post("/v1/webhooks/subscriptions", {"url": receiver.url(), "headers": REFUSED_HEADERS}, format="json")
            rotated = api.post(f"/v1/webhooks/subscriptions/{created['id']}/rotate-secret").json()
            api.post(f"/v1/webhooks/subscriptions/{created['id']}/test")
            publisher.post("/v1/events", {"type": "invoice.paid", "data": {"n": 1}}, format="json")
            api.get("/v1/webhooks/subscriptions", HTTP_AUTHORIZATION="Bearer asiri_AAAAAAAAAAAA_" + "B" * 40)
            assert wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 2, timeout=20)
            statuses = send_keys_every_way(port, plain_keys[0])
            metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        worker_output, web_output = "".join(worker.lines), "".join(web.lines)
    assert all(r.headers["x-api-key"] == SECRET_HEADERS["X-Api-Key"] for r in receiver.requests)  # sent, kept
    assert statuses == [401, 401, 401, 401, 404, 200, 400]
    service_records = [r for r in caplog.records if not r.name.startswith("urllib3")]  # the test's own client
    logged = worker_output + web_output + metrics + "\n".join(JsonFormatter().format(r) for r in service_records)
    secrets = [created["secret"], rotated["secret"], *plain_keys, "asiri_AAAAAAAAAAAA_" + "B" * 40]
    secrets += [base64.b64encode(f"{plain_keys[0]}:".encode()).decode()]
    secrets += [k.digest for k in ApiKey.objects.all()]
    secrets += [s.split("_", 1)[1] for s in secrets if s.startswith("whsec_")]  # the base64 part alone
    secrets += HEADER_SECRETS
    assert [s for s in secrets if s in logged] == []
    assert "Authorization" not in logged and "Bearer" not in logged
    # The ways in were logged, by gunicorn's access log and by Django, just without the key.
    assert web_output.count('"GET /v1/webhooks/subscriptions HTTP/1.1" 401') == 4
    assert "Unauthorized: /v1/webhooks/subscriptions" in web_output and "Invalid request from ip=" in web_output
    attempts = [json.loads(line) for line in worker_output.splitlines() if line.startswith("{") and '"attempt"' in line]
    assert len(attempts) == 2
    assert all(
        {"tenant_id", "subscription_id", "event_id", "delivery_id", "attempt", "outcome", "duration_ms"} <= set(line)
        for line in attempts
    )
