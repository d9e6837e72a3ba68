from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.groups import support_group

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Playwright's sync API keeps an event loop running in this thread, which makes Django refuse
# ORM calls as "async"; they are plain synchronous calls here (the documented workaround).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if Path(CHROMIUM).exists():
        return
    skip = pytest.mark.skip(reason="browser tests need Chromium (apt-get install chromium); .ci/run installs it")
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def support_user(db):
    """`sam`, in the Support group."""
    from django.contrib.auth.models import User

    group = support_group()
    user = User.objects.create_user("sam", password="support-pass-123", is_staff=True)
    user.groups.add(group)
    return user
