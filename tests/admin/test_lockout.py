"""Admin logins: 10 failures lock out the user and the client address for 15 minutes (django-axes)."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import ip_network

import pytest
from django.contrib.auth.models import User
from django.test import Client

LOGIN = "/admin/login/"


@pytest.fixture
def staff(db) -> dict[str, str]:
    """Two logins, user name → password."""
    User.objects.create_user("sam", password="support-pass-123", is_staff=True)
    User.objects.create_superuser("root", password="root-pass-456")
    return {"sam": "support-pass-123", "root": "root-pass-456"}


def log_in(username: str, password: str, address: str, **headers: str) -> int:
    """The status of one login form post; 302 is a login (and then the admin index opens)."""
    client = Client(REMOTE_ADDR=address, **headers)
    response = client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})
    if response.status_code == 302:
        assert client.get("/admin/").status_code == 200
    else:
        assert client.get("/admin/").status_code == 302  # still at the login page
    return response.status_code


def test_ten_wrong_passwords_lock_out_the_user_and_the_address(staff):
    statuses = [log_in("sam", "wrong", "198.51.100.1") for _ in range(10)]
    assert statuses == [200] * 9 + [429]
    assert log_in("sam", staff["sam"], "198.51.100.1") == 429  # the right password is refused too
    assert log_in("sam", staff["sam"], "198.51.100.2") == 429  # the user, from anywhere
    assert log_in("root", staff["root"], "198.51.100.1") == 429  # anyone, from that address
    assert log_in("root", staff["root"], "198.51.100.2") == 302  # another user elsewhere is unaffected


def test_nine_failures_do_not_lock_and_the_lockout_ends_after_fifteen_minutes(staff):
    from axes.models import AccessAttempt

    for _ in range(9):
        log_in("sam", "wrong", "198.51.100.1")
    assert log_in("sam", staff["sam"], "198.51.100.1") == 302
    log_in("sam", "wrong", "198.51.100.1")
    assert log_in("sam", staff["sam"], "198.51.100.1") == 429
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    assert log_in("sam", staff["sam"], "198.51.100.1") == 302


def test_a_forged_forwarded_for_does_not_escape_the_address_lockout(staff, settings):
    from axes.models import AccessAttempt

    settings.ASIRI_TRUSTED_PROXIES = (ip_network("10.0.0.0/24"),)
    # Password spraying: a new user name and a new X-Forwarded-For each time, from one untrusted peer.
    for n in range(10):
        log_in(f"guess{n}", "wrong", "203.0.113.9", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
    assert log_in("root", staff["root"], "203.0.113.9", HTTP_X_FORWARDED_FOR="192.0.2.77") == 429
    # Through the trusted proxy each client is its own address.
    for n in range(10):
        log_in(f"guess{n}", "wrong", "10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert log_in("root", staff["root"], "10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.7") == 429
    assert log_in("root", staff["root"], "10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.8") == 302
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.9", "198.51.100.7"}


@pytest.mark.parametrize("username", ["u" * 256, "u" * 5000])
def test_a_user_name_no_user_can_have_is_a_failed_login_that_still_counts(staff, username):
    # Axes recorded it as posted: longer than its column, a 500.
    statuses = [log_in(username, "wrong", "203.0.113.7") for _ in range(10)]
    assert statuses == [200] * 9 + [429]
    assert log_in("sam", staff["sam"], "203.0.113.7") == 429  # the address is locked out all the same
