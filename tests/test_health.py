from __future__ import annotations

import pytest
from django.test import Client


def test_healthz_answers_without_io(client):
    # No django_db mark: any database access here would raise instead of answering.
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_the_database_and_the_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_readyz_stays_ready_without_the_broker_and_says_it_is_degraded(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "checks": {"database": "ok", "broker": "unavailable"}}
    assert b"127.0.0.1" not in response.content and b"redis" not in response.content


def test_readyz_is_not_ready_without_the_database(client):
    # No django_db mark: pytest-django refuses the connection, as a database that is down would.
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable" and response.json()["checks"]["database"] == "unavailable"


@pytest.mark.django_db
def test_probes_need_no_key_and_no_allowed_host():
    probe = Client(HTTP_HOST="10.0.0.7:8000")  # a load balancer probing by address
    assert probe.get("/healthz").status_code == 200
    assert probe.get("/readyz").status_code == 200
