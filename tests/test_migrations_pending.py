"""A process started before the release step ran `migrate` says so, once, and answers 503 rather than 500.

The field case, end to end (every Procfile process started against an empty database), is in test_deploy; these
take one migration away from the test database: its record, and the table it made.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from core import schema
from deliveries import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_checks() -> Iterator[None]:
    schema.forget_checks()
    yield
    schema.forget_checks()
    schema.MIGRATIONS.ended(logging.getLogger("tests"))  # each test's own outage, said from its start


@contextmanager
def unapplied(app: str, table: str | None = None) -> Iterator[None]:
    """The app's last migration recorded as not applied, and `table` as if that migration had made it."""
    recorder = MigrationRecorder(connection)
    last = recorder.Migration.objects.filter(app=app).order_by("-applied", "-id").first()
    last.delete()
    with connection.cursor() as cursor:
        if table:
            cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_away"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if table:
                cursor.execute(f'ALTER TABLE "{table}_away" RENAME TO "{table}"')
        recorder.Migration.objects.create(app=last.app, name=last.name, applied=last.applied)


def errors(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_readyz_is_not_ready_while_a_migration_is_pending_and_says_which_check(client, caplog):
    with unapplied("deliveries"):
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unavailable",
            "checks": {"database": "migrations pending", "broker": "ok"},
        }
        assert client.get("/readyz").status_code == 503
    said = errors(caplog)
    assert len(said) == 1, said  # one line for the outage, not one per probe
    assert said[0].startswith("readiness: the database lacks migrations this code needs: 1 not applied")
    assert "python manage.py migrate" in said[0]

    schema.forget_checks()  # looked at again every few seconds; now at once
    caplog.clear()
    assert client.get("/readyz").json()["status"] == "ok"
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "the database has the migrations this code needs now, after 0 s and 2 failures"
    ]


def test_the_api_answers_503_with_a_json_body_not_500_before_migrate(api, caplog):
    with unapplied("tenants", table="tenants_apikey"):
        first = api.get("/v1/webhooks/subscriptions")
        second = api.post("/v1/events", {"type": "invoice.paid", "data": {}}, format="json")
    for response in (first, second):
        assert response.status_code == 503, response.content
        assert response["Retry-After"] == "30"
        assert "lacks migrations" in response.json()["detail"]
    said = errors(caplog)
    assert len(said) == 1 and said[0].startswith("GET /v1/webhooks/subscriptions: the database lacks migrations"), said
    assert 'relation "tenants_apikey" does not exist' in said[0]
    assert not any(record.exc_info for record in caplog.records)  # no traceback: nothing here is a bug

    assert api.get("/v1/webhooks/subscriptions").status_code == 200  # the key works again, as does the table


def test_an_admin_page_answers_503_saying_why_not_a_500(admin_client, caplog):
    with unapplied("sessions", table="django_session"):
        page = admin_client.get("/admin/")
    assert page.status_code == 503 and page["Retry-After"] == "30"
    assert page["Content-Type"].startswith("text/plain") and "lacks migrations" in page.content.decode()
    said = errors(caplog)
    assert len(said) == 1 and said[0].startswith("GET /admin/: the database lacks migrations this code needs"), said
    assert admin_client.get("/admin/").status_code == 200


def test_the_dispatcher_says_it_once_a_minute_not_with_a_traceback_a_second(caplog):
    with unapplied("deliveries", table="deliveries_pulse"):
        said = [tasks.dispatch() for _ in range(3)]
    assert said == ["dispatch: the database lacks migrations"] * 3
    lines = errors(caplog)
    assert len(lines) == 1 and lines[0].startswith("dispatch: the database lacks migrations this code needs: 1 not")
    assert not any(record.exc_info for record in caplog.records)

    schema.forget_checks()
    assert tasks.dispatch().startswith("dispatcher:")
    assert any("has the migrations this code needs now" in record.getMessage() for record in caplog.records)


def test_a_pump_woken_before_migrate_says_it_once_too(caplog):
    with unapplied("deliveries", table="deliveries_delivery"):
        said = [tasks.deliver() for _ in range(2)]
    assert said == ["deliver: the database lacks migrations"] * 2
    lines = errors(caplog)
    assert len(lines) == 1 and lines[0].startswith("deliver: the database lacks migrations this code needs"), lines
    assert not any(record.exc_info for record in caplog.records)


def test_a_missing_table_with_every_migration_applied_is_still_a_bug_with_its_traceback(caplog):
    with connection.cursor() as cursor:
        cursor.execute('ALTER TABLE "deliveries_pulse" RENAME TO "deliveries_pulse_away"')
    try:
        with pytest.raises(Exception, match='relation "deliveries_pulse" does not exist'):
            tasks.dispatch()
    finally:
        with connection.cursor() as cursor:
            cursor.execute('ALTER TABLE "deliveries_pulse_away" RENAME TO "deliveries_pulse"')
    assert not any("lacks migrations" in record.getMessage() for record in caplog.records)
