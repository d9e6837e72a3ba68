"""`make run`'s mode: web, worker and beat on SQLite and the filesystem broker, no server at all.

This is the one place the suite runs on SQLite, because the embedded default is what it tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from tests.support.processes import ROOT, free_port, wait_until
from tests.support.receiver import Receiver, respond

pytestmark = pytest.mark.integration


def call(method: str, url: str, key: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def metric(base: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = (sample for family in text_string_to_metric_families(text) for sample in family.samples)
    return next((s.value for s in samples if s.name == name and s.labels == labels), 0.0)


def test_a_test_send_arrives_through_web_worker_and_beat(tmp_path: Path):
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ASIRI_", "DATABASE_", "CELERY_"))}
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        DJANGO_DEBUG="1",
        ASIRI_ALLOW_PRIVATE_URLS="1",
        ASIRI_REQUIRE_HTTPS="0",
        ASIRI_DATA_DIR=str(tmp_path / "var"),
        HOST="127.0.0.1",
        PORT=str(port),
        PYTHONUNBUFFERED="1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),  # as make run sets it
        # One send in flight per endpoint: the second claim already holds an endpoint back (below).
        ASIRI_SEND_CONCURRENCY_PER_ENDPOINT="1",
    )
    (tmp_path / "prometheus").mkdir()
    for command in (["migrate", "--noinput", "-v0"], ["demo_setup"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
        )
    key = (tmp_path / "var" / "demo-api-key.txt").read_text().strip()
    log = open(tmp_path / "honcho.log", "w")
    honcho = subprocess.Popen(
        [str(bin_dir / "honcho"), "start", "web", "worker", "priority", "beat"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/v1/openapi.json", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "honcho.log").read_text()[-3000:]
                time.sleep(0.2)
        with Receiver() as receiver:
            created = call("POST", f"{base}/v1/webhooks/subscriptions", key, {"url": receiver.url()})
            # Let the worker finish starting before timing one send.
            worker_ready = wait_until(lambda: "ready." in (tmp_path / "honcho.log").read_text(), timeout=60)
            assert worker_ready, (tmp_path / "honcho.log").read_text()[-3000:]
            sent_at = time.monotonic()
            queued = call("POST", f"{base}/v1/webhooks/subscriptions/{created['id']}/test", key)
            (request,) = receiver.wait_for(1, timeout=30)
            latency = time.monotonic() - sent_at
            # A backlog on two endpoints, each at its share: the claims that hold one back while the other
            # flows (on PostgreSQL, claims._due_elsewhere's SQL) must work on SQLite too.
            slow = receiver.on("/slow", respond(200, delay=0.3))
            call("POST", f"{base}/v1/webhooks/subscriptions", key, {"url": slow})
            for n in range(6):
                call("POST", f"{base}/v1/events", key, {"type": "invoice.paid", "data": {"n": n}})
            assert receiver.wait_for(13, timeout=30), (tmp_path / "honcho.log").read_text()[-3000:]
            assert sorted(receiver.ids().values()) == [1] * 13
        Webhook(created["secret"]).verify(request.body, request.headers)
        assert request.headers["webhook-id"] == queued["id"]
        print(f"embedded mode: test send received {latency * 1000:.0f} ms after the API call")
        delivery_log = f"{base}/v1/webhooks/subscriptions/{created['id']}/deliveries"
        assert wait_until(lambda: call("GET", delivery_log, key)["results"][0]["status"] == "succeeded", timeout=10)
        beat_log = (tmp_path / "honcho.log").read_text()
        assert "beat: Starting" in beat_log
        # No pump stopped on an error (a claim that raised, say) on the way.
        assert "raised unexpected" not in beat_log and "the pump stopped" not in beat_log, beat_log[-3000:]
        # The worker's counting, served by the web process (make run's metrics, on SQLite).
        assert wait_until(lambda: metric(base, "asiri_deliveries_total", outcome="succeeded") == 13, timeout=10)
        assert metric(base, "asiri_attempts_total", response_class="2xx") == 13
        # Beat's first dispatch may still be on its way to the worker: the test send did not need it.
        dispatched = wait_until(lambda: metric(base, "asiri_dispatcher_runs_total") >= 1, timeout=20)
        assert dispatched, (tmp_path / "honcho.log").read_text()[-3000:]
        assert metric(base, "asiri_deliveries_backlog", state="due") == 0
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        try:
            honcho.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
        log.close()
    assert not list(ROOT.glob("celerybeat-schedule*")), "beat must keep its schedule under the data folder"
