"""A broker behind TLS (`rediss://`, as managed Redis offers it) is used with its certificate checked.

kombu took a rediss:// URL that does not say `ssl_cert_reqs` for "do not check the certificate", and warned so at
every connection, while redis-py checked it (core.env.env_redis_url). The server here has a certificate from a
CA of the test's own: trusted when the URL names that CA, refused otherwise.
"""

from __future__ import annotations

import logging

import pytest

from asiri.health import broker_ready
from core.env import env_redis_url
from deliveries.services import event_publish
from tests.support.processes import celery_beat, celery_worker, redis_server, wait_until
from tests.support.receiver import Receiver
from tests.support.tls import loopback_certificates

pytestmark = [pytest.mark.integration]


@pytest.fixture
def tls_redis(tmp_path):
    with redis_server(tmp_path, tls=loopback_certificates(tmp_path / "tls")) as server:
        yield server


def test_a_rediss_url_checks_the_certificate_unless_it_says_otherwise(tls_redis, monkeypatch, settings, caplog):
    def ready_with(url: str) -> bool:
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        settings.CELERY_BROKER_URL = env_redis_url("CELERY_BROKER_URL")
        return broker_ready()

    assert not ready_with(tls_redis.url)  # a CA no system trusts: refused
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert ready_with(f"{tls_redis.url}?ssl_ca_certs={tls_redis.tls.ca}")
    assert ready_with(f"{tls_redis.url}?ssl_cert_reqs=CERT_NONE")  # the explicit opt-out, in Celery's spelling
    assert not [r for r in caplog.records if r.levelno == logging.WARNING and "insecure" in r.getMessage()]


@pytest.mark.django_db(transaction=True)
def test_beat_and_a_worker_deliver_through_a_broker_behind_tls(tls_redis, alice, make_subscription, tmp_path):
    url = f"{tls_redis.url}?ssl_ca_certs={tls_redis.tls.ca}"
    flags = {"ASIRI_ALLOW_PRIVATE_URLS": "1", "ASIRI_REQUIRE_HTTPS": "0"}
    with (
        Receiver() as receiver,
        celery_worker(concurrency=1, CELERY_BROKER_URL=url, **flags) as worker,
        celery_beat(tmp_path, CELERY_BROKER_URL=url) as beat,
    ):
        make_subscription(alice, url=receiver.url())
        # Its own wake-up goes to the test run's broker, where no worker listens: beat's dispatcher, over TLS, wakes
        # the worker, over TLS.
        event_publish(tenant=alice, event_type="invoice.paid", data={"n": 1})
        assert receiver.wait_for(1, timeout=30)
        assert wait_until(lambda: "Connected to rediss://" in "".join(worker.lines), timeout=5)
    logs = "".join(worker.lines) + "".join(beat.lines)
    assert "insecure SSL" not in logs and "Traceback" not in logs, logs
