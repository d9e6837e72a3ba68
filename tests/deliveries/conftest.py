from __future__ import annotations

from unittest import mock

import pytest

from deliveries import http


@pytest.fixture
def post_webhook():
    """Unit tests only: the one outbound HTTP function, answering 200 unless a test says otherwise."""
    with mock.patch("deliveries.http.post_webhook", autospec=True) as patched:
        patched.return_value = http.HttpResult(200, 7, body="thanks")
        yield patched
