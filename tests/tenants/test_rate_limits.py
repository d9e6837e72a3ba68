"""Per-key rate limits: shared by every web process, one key never slows another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.processes import ROOT, free_port, service_env, wait_until


def test_a_key_over_its_limit_gets_429_with_retry_after(api, alice, client_for, settings, empty_broker):
    settings.ASIRI_RATE_LIMIT = "3/min"
    codes = [api.get("/v1/webhooks/subscriptions").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    refused = api.get("/v1/webhooks/subscriptions")
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert "throttled" in refused.json()["detail"]
    assert client_for(alice).get("/v1/webhooks/subscriptions").status_code == 200  # another key


def test_the_test_operation_has_its_own_lower_limit(
    api, alice, make_subscription, settings, empty_broker, django_capture_on_commit_callbacks
):
    settings.ASIRI_TEST_RATE_LIMIT = "2/min"
    subscription = make_subscription(alice)
    with django_capture_on_commit_callbacks(execute=False):
        codes = [api.post(f"/v1/webhooks/subscriptions/{subscription.id}/test").status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    assert api.get("/v1/webhooks/subscriptions").status_code == 200  # the general limit is separate


def test_redeliveries_share_the_test_operations_limit(
    api, alice, make_subscription, make_failed_delivery, settings, empty_broker, django_capture_on_commit_callbacks
):
    settings.ASIRI_TEST_RATE_LIMIT = "2/min"
    subscription = make_subscription(alice)
    deliveries = [make_failed_delivery(subscription) for _ in range(2)]
    base = f"/v1/webhooks/subscriptions/{subscription.id}"
    with django_capture_on_commit_callbacks(execute=False):
        codes = [
            api.post(f"{base}/test").status_code,
            api.post(f"{base}/deliveries/{deliveries[0].id}/redeliver").status_code,
            api.post(f"{base}/deliveries/{deliveries[1].id}/redeliver").status_code,
        ]
    assert codes == [202, 202, 429]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_200_concurrent_requests_through_two_gunicorn_workers(alice, make_key, empty_broker):
    key, other_key = make_key(alice), make_key(alice)
    port = free_port()
    env = service_env(ASIRI_RATE_LIMIT="60/min", DJANGO_ALLOWED_HOSTS="127.0.0.1")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "asiri.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "8",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1/webhooks/subscriptions"
    try:
        assert wait_until(lambda: _up(f"http://127.0.0.1:{port}/healthz"), timeout=30)

        def call(api_key: str) -> int:
            return requests.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30).status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(call, [key] * 200))
        started = time.monotonic()
        other = call(other_key)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    assert set(codes) == {200, 429}, set(codes)
    assert codes.count(200) <= 66, codes.count(200)
    assert codes.count(200) >= 55  # the bucket starts full: the limit is usable, not just enforced
    assert other == 200 and time.monotonic() - started < 5


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_without_redis_each_process_limits_keys_on_its_own_and_warns_once(api, settings, caplog):
    settings.ASIRI_RATE_LIMIT = "3/min"
    settings.ASIRI_RATE_LIMIT_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    codes = [api.get("/v1/webhooks/subscriptions").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]  # still limited: by this process's own bucket
    warnings = [r for r in caplog.records if "Redis is unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "API rate limits" in warnings[0].getMessage()
