from __future__ import annotations

from unittest import mock

import pytest

from deliveries import http, ratelimit


@pytest.fixture
def post_webhook():
    """Unit tests only: the one outbound HTTP function, answering 200 unless a test says otherwise."""
    with mock.patch("deliveries.http.post_webhook", autospec=True) as patched:
        patched.return_value = http.HttpResult(200, 7, body="thanks")
        yield patched


@pytest.fixture(autouse=True)
def _send_rates_reachable(monkeypatch) -> None:
    """A test that made Redis look down must not hold the next test's rate-limited endpoints back."""
    monkeypatch.setattr(ratelimit, "_unavailable_until", 0.0)
