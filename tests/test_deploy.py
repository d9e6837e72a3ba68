"""The field, in the suite: deploy from a fresh clone with the Procfile and production settings, then take
Redis away. Every process is real: gunicorn, two Celery workers, beat, PostgreSQL, a private Redis and a
receiver on 127.0.0.1."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from django.db import connection

from deliveries.models import Delivery
from tenants.models import ApiKey, Tenant
from tests.support import receiver as rx
from tests.support.deploy import deployment, static_links
from tests.support.processes import service_env, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SUBSCRIPTIONS = "/v1/webhooks/subscriptions"
# Production's retry schedule is minutes long; the same code with seconds.
FAST_RETRIES = {"ASIRI_RETRY_SCHEDULE": "1,1,1"}


class Api:
    def __init__(self, base: str) -> None:
        tenant = Tenant.objects.create(slug="field", name="Field Inc.")
        scopes = ["webhooks:read", "webhooks:write", "audit:read", "events:write"]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {ApiKey.issue(tenant=tenant, scopes=scopes)[1]}"
        self.base = base

    def __call__(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        return self.session.request(method, self.base + path, json=body, timeout=10)

    def subscribe(self, url: str, events: list[str]) -> str:
        response = self("POST", SUBSCRIPTIONS, {"url": url, "events": events})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def publish(self, event_type: str, data: dict) -> requests.Response:
        return self("POST", "/v1/events", {"type": event_type, "data": data})


def test_a_fresh_clone_deployed_from_the_procfile_delivers_retries_and_serves_its_pages(tmp_path):
    with rx.Receiver() as receiver, deployment(tmp_path, **FAST_RETRIES) as deployed:
        api = Api(deployed.base)
        hook = api.subscribe(receiver.url("/hook"), ["invoice.*"])
        flaky = api.subscribe(receiver.on("/flaky", rx.fail_then(2, rx.respond(200))), ["flaky.*"])

        test_send = api("POST", f"{SUBSCRIPTIONS}/{hook}/test")
        assert test_send.status_code == 202, test_send.text
        assert wait_until(lambda: receiver.ids()[test_send.json()["id"]] == 1, timeout=30), deployed.logs()

        assert api.publish("flaky.thing", {"n": 1}).status_code == 202
        # Two failures, then success: only beat's dispatcher can make the retries.
        assert wait_until(lambda: receiver.per_path["/flaky"] >= 3, timeout=45), deployed.logs()
        delivery = wait_until(lambda: Delivery.objects.filter(subscription_id=flaky, status="succeeded").first(), 15)
        assert delivery is not None and delivery.attempts.count() == 3
        assert receiver.per_path["/flaky"] == 3

        for page in ("/docs", "/admin/login/"):
            html = deployed.get(page).text
            assets = static_links(html)
            assert len(assets) >= 2, (page, html[:500])
            for asset in assets:
                assert deployed.get(asset).status_code == 200, (page, asset)

        # Beat's dispatcher runs and leaves its pulse. The one pool process runs it once its pump, which made the
        # retries itself as they fell due, has stopped: with workers that start in a moment (no mingle), not always
        # before this line.
        def pulse() -> float:
            metrics = deployed.get("/metrics").text
            return float(re.search(r"^asiri_dispatcher_last_run_age_seconds (\S+)$", metrics, re.M).group(1))

        assert wait_until(lambda: pulse() < 5, timeout=10), (pulse(), deployed.logs())
        assert all(deployed.alive().values()), deployed.logs()
        logs = deployed.logs()
        assert "Traceback" not in logs and '"level": "ERROR"' not in logs, logs


def test_a_redis_outage_keeps_the_api_answering_and_loses_no_event(tmp_path):
    with rx.Receiver() as receiver, deployment(tmp_path) as deployed:
        api = Api(deployed.base)
        api.subscribe(receiver.url("/main"), ["invoice.*"])
        side = api.subscribe(receiver.url("/side"), ["side.*"])
        for n in range(10):
            assert api.publish("invoice.paid", {"n": n}).status_code == 202
        assert api.publish("side.thing", {}).status_code == 202
        main_ids = lambda: [r.headers["webhook-id"] for r in receiver.requests if r.path == "/main"]  # noqa: E731
        assert wait_until(lambda: len(main_ids()) == 10 and receiver.per_path["/side"] == 1, 30), deployed.logs()
        side_delivery = Delivery.objects.get(subscription_id=side).id

        deployed.redis.stop()
        statuses: dict[str, list[int]] = {}

        def call(name: str, method: str, path: str, body: dict | None = None) -> requests.Response:
            response = api(method, path, body)
            statuses.setdefault(name, []).append(response.status_code)
            return response

        published, started = 0, time.monotonic()
        while time.monotonic() - started < 5 or published < 20:
            if published < 20:
                published += (
                    call(
                        "publish", "POST", "/v1/events", {"type": "invoice.paid", "data": {"n": 10 + published}}
                    ).status_code
                    == 202
                )
            call("list", "GET", SUBSCRIPTIONS)
            created = call("create", "POST", SUBSCRIPTIONS, {"url": receiver.url("/other"), "events": ["other.*"]})
            if created.status_code == 201:
                other = created.json()["id"]
                call("update", "PATCH", f"{SUBSCRIPTIONS}/{other}", {"description": "made during the outage"})
                call("delete", "DELETE", f"{SUBSCRIPTIONS}/{other}")
            call("get", "GET", f"{SUBSCRIPTIONS}/{side}")
            call("log", "GET", f"{SUBSCRIPTIONS}/{side}/deliveries")
            call("delivery", "GET", f"{SUBSCRIPTIONS}/{side}/deliveries/{side_delivery}")
            call("test", "POST", f"{SUBSCRIPTIONS}/{side}/test")
            call("redeliver", "POST", f"{SUBSCRIPTIONS}/{side}/deliveries/{side_delivery}/redeliver")
            call("rotate", "POST", f"{SUBSCRIPTIONS}/{side}/rotate-secret")
            statuses.setdefault("readyz", []).append(deployed.get("/readyz").status_code)
        assert deployed.get("/readyz").json() == {
            "status": "degraded",
            "checks": {"database": "ok", "broker": "unavailable"},
        }
        deployed.redis.start()  # on the same port, and empty

        server_errors = {name: [s for s in codes if s >= 500] for name, codes in statuses.items()}
        assert not any(server_errors.values()), statuses
        assert published == 20 and {201, 200, 204, 202} <= {s for codes in statuses.values() for s in codes}
        invoices = Delivery.objects.filter(event_type="invoice.paid")
        # Once every delivery is final, nothing more is on its way: a duplicate would have arrived by then.
        assert wait_until(lambda: invoices.filter(status="succeeded").count() == 30, 90), deployed.logs()
        ids = main_ids()
        assert len(ids) == len(set(ids)) == 30
        assert set(ids) == set(invoices.values_list("id", flat=True))
        assert all(deployed.alive().values()), deployed.logs()
        # Said once, not a stack for every task beat could not send; and seen to end (core.outages).
        assert wait_until(lambda: "the broker answers again" in deployed.log("beat"), 30), deployed.log("beat")
        beat = deployed.log("beat")
        assert "Message Error" not in beat and "Trying again" not in beat, beat
        assert beat.count("beat: the broker cannot be reached") == 1 and "Error 111 connecting" in beat, beat
        for name in ("worker", "priority"):
            log = deployed.log(name)
            assert "Connection to broker lost" in log, log  # the outage reached it
            assert "Traceback" not in log and "CPendingDeprecationWarning" not in log, log


@contextmanager
def empty_database() -> Iterator[str]:
    """A database of its own with nothing in it, as on a first deploy; its URL."""
    name = f"asiri_empty_{secrets.token_hex(4)}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield re.sub(r"/[^/]*$", f"/{name}", service_env()["DATABASE_URL"])
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_processes_started_before_the_release_step_wait_for_it_and_say_so_once(tmp_path):
    with empty_database() as url, deployment(tmp_path, released=False, DATABASE_URL=url) as deployed:
        # Beat's dispatcher runs every second: several times before migrate.
        assert wait_until(lambda: "dispatch: the database lacks migrations" in deployed.log("worker"), 30), (
            deployed.logs()
        )
        ready = deployed.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "checks": {"database": "migrations pending", "broker": "ok"}}
        well_formed_key = f"asiri_{'a' * 12}_{'b' * 40}"  # looked up in the database, unlike a malformed one
        headers = {"Authorization": f"Bearer {well_formed_key}"}
        call = requests.get(f"{deployed.base}{SUBSCRIPTIONS}", headers=headers, timeout=10)
        assert call.status_code == 503 and "lacks migrations" in call.json()["detail"], call.text
        time.sleep(3)

        deployed.release()
        # Looked at again every few seconds (core.schema.CHECK_EVERY): ready without a restart.
        assert wait_until(lambda: deployed.get("/readyz").status_code == 200, timeout=15), deployed.logs()
        assert wait_until(lambda: "has the migrations this code needs now" in deployed.log("worker"), 15), (
            deployed.logs()
        )
        assert all(deployed.alive().values()), deployed.logs()
        worker = deployed.log("worker")
        assert worker.count("the database lacks migrations this code needs") == 1, worker  # not once a second
        assert "Traceback" not in worker and "python manage.py migrate" in worker, worker
        web = deployed.log("web")
        assert "Traceback" not in web and " 500 " not in web, web
