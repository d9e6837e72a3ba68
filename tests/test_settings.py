"""Configuration comes from the environment, and a bad value stops the process at start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, free_port
from tests.support.settings import GOOD_KEY, start


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DJANGO_DEBUG", "yes"),
        ("ASIRI_ALLOW_PRIVATE_URLS", "2"),
        ("ASIRI_REQUIRE_HTTPS", "on"),
        ("ASIRI_DELIVERY_TIMEOUT", "soon"),
        ("ASIRI_DELIVERY_TIMEOUT", "-1"),
        ("ASIRI_RETRY_SCHEDULE", "5,ten,60"),
        ("ASIRI_RETRY_SCHEDULE", "5,-1"),
        ("ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT", "many"),
        ("ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT", "0"),
    ],
)
def test_a_bad_value_fails_at_start_naming_the_variable(variable, value):
    result = start(**{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr


@pytest.mark.parametrize(
    ("value", "expected"), [("1", "True"), ("TRUE", "True"), ("0", "False"), ("False", "False"), ("", "False")]
)
def test_booleans_read_any_case_and_empty_means_default(value, expected):
    result = start("ASIRI_ALLOW_PRIVATE_URLS", ASIRI_ALLOW_PRIVATE_URLS=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_the_subscription_limit_defaults_to_500_and_is_read_as_a_number():
    assert start("ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT").stdout.strip() == "500"
    read = start("ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT", ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT="25")
    assert read.stdout.strip() == "25"


def test_the_retry_schedule_is_read_as_seconds():
    result = start("ASIRI_RETRY_SCHEDULE", ASIRI_RETRY_SCHEDULE="1, 2,3.5")
    assert result.stdout.strip() == "(1.0, 2.0, 3.5)"


def test_it_refuses_to_start_in_production_without_a_secret_key():
    result = start(DJANGO_SECRET_KEY="", DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


@pytest.mark.parametrize(
    "key",
    [
        "x",
        "test-only-secret-key",
        "a" * 49,
        "abcd" * 20,
        "django-insecure-" + "k3y-th4t-l00ks-r4nd0m-but-1s-th3-d3f4ult-pl4c3h0ld3r",
    ],
)
def test_it_refuses_to_start_in_production_with_a_weak_secret_key(key):
    result = start(DJANGO_SECRET_KEY=key, DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr and repr(key) not in result.stderr  # never echoed


def test_a_strong_secret_key_starts_and_debug_takes_any_key():
    assert start("SECRET_KEY", DJANGO_SECRET_KEY=GOOD_KEY, DJANGO_DEBUG="0").stdout.strip() == GOOD_KEY
    assert start("SECRET_KEY", DJANGO_SECRET_KEY="x", DJANGO_DEBUG="1").stdout.strip() == "x"


def test_production_defaults_are_the_safe_ones():
    result = start("ASIRI_REQUIRE_HTTPS, settings.ASIRI_ALLOW_PRIVATE_URLS, settings.DEBUG")
    assert result.stdout.strip() == "True False False"


def test_each_backend_falls_back_to_the_embedded_default_on_its_own(tmp_path):
    setting = "DATABASES['default']['ENGINE'], settings.CELERY_BROKER_URL"
    only_broker = start(
        setting, ASIRI_DATA_DIR=str(tmp_path), CELERY_BROKER_URL="redis://127.0.0.1:6379/15", DATABASE_URL=""
    )
    assert only_broker.stdout.strip() == "django.db.backends.sqlite3 redis://127.0.0.1:6379/15"
    only_db = start(
        setting, ASIRI_DATA_DIR=str(tmp_path), DATABASE_URL="postgres://postgres@127.0.0.1/x", CELERY_BROKER_URL=""
    )
    assert only_db.stdout.strip() == "django.db.backends.postgresql filesystem://localhost//"


@pytest.mark.parametrize("value", ["600", "600/fortnight", "0/min", "x/min"])
def test_a_bad_rate_limit_fails_at_start(value):
    result = start(ASIRI_RATE_LIMIT=value)
    assert result.returncode != 0 and "ASIRI_RATE_LIMIT" in result.stderr


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
        ("rediss://:pw@cache.example.com:6380/0", "rediss://:pw@cache.example.com:6380/0?ssl_cert_reqs=required"),
        (
            "rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem",
            "rediss://h:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
        ),
        ("rediss://h:6380/0?ssl_cert_reqs=CERT_NONE", "rediss://h:6380/0?ssl_cert_reqs=none"),
        ("rediss://h:6380/0?ssl_cert_reqs=optional", "rediss://h:6380/0?ssl_cert_reqs=optional"),
    ],
)
def test_a_tls_broker_url_checks_the_certificate_unless_it_says_otherwise(given, read):
    result = start("CELERY_BROKER_URL, settings.ASIRI_RATE_LIMIT_REDIS_URL", CELERY_BROKER_URL=given)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [read, read]


def test_a_tls_broker_url_with_an_unknown_certificate_requirement_fails_at_start():
    result = start(CELERY_BROKER_URL="rediss://h:6380/0?ssl_cert_reqs=maybe")
    assert (
        result.returncode != 0
        and "CELERY_BROKER_URL" in result.stderr
        and "required, optional or none" in result.stderr
    )


def test_a_production_web_process_refuses_to_start_without_allowed_hosts():
    # Not a setting every process needs (a worker serves no Host), so the web alone checks it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ASIRI_"))}
    env.update(DJANGO_SECRET_KEY=GOOD_KEY, DJANGO_DEBUG="0")
    command = [sys.executable, "-m", "gunicorn", "asiri.wsgi", "-c", "asiri/gunicorn.conf.py", "--workers", "1"]
    command += ["--bind", f"127.0.0.1:{free_port()}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS must name the host names" in result.stderr
