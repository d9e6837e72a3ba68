"""Fixtures for fuzzing the API in process: high rate limits, keys of every scope, no task ever sent."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from django.conf import settings as django_settings
from hypothesis.configuration import set_hypothesis_home_dir

from tenants.models import Tenant

# Hypothesis keeps caches (and, were it on, its example database) in ./.hypothesis: put them with
# the rest of what runs leave behind, in the git-ignored data directory, not in the working tree.
set_hypothesis_home_dir(Path(django_settings.DATA_DIR) / "hypothesis")

SCOPES = ("webhooks:read", "webhooks:write", "audit:read", "events:write")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One id per operation: schemathesis names each item after its operation but gives them all the function's
    node id, and pytest-xdist, which schedules by node id, ran one operation of the 19 (`make test` runs two
    workers)."""
    from schemathesis.pytest.plugin import SchemathesisFunction

    for item in items:
        if isinstance(item, SchemathesisFunction) and not item.nodeid.endswith("]"):
            item._id = item.parent.id.child(item.name)


@pytest.fixture(autouse=True)
def _fuzz_settings(settings) -> None:
    """Limits far above what a fuzz run sends, so a 429 never hides an answer (429 stays documented).

    Every generated host name resolves to a public address: one that does not resolve is refused
    like a private one, which no document can state, and tests/webhooks covers.
    """
    settings.ASIRI_RATE_LIMIT = "1000000/sec"
    settings.ASIRI_TEST_RATE_LIMIT = "1000000/sec"
    settings.ASIRI_RESOLVER = "tests.support.resolver.public_resolve"


@pytest.fixture(autouse=True)
def sent_tasks(settings, monkeypatch) -> Iterator[list[tuple[Any, ...]]]:
    """Record every task the API tries to send instead of sending it.

    Each test runs inside a transaction that is rolled back, so on-commit wake-ups never fire;
    this makes sure that even if one did, no worker (here or anywhere) could pick it up, so no
    generated subscription URL is ever contacted.
    """
    assert not getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False)
    sent: list[tuple[Any, ...]] = []

    def refuse(self: Celery, name: str, *args: Any, **kwargs: Any) -> None:
        sent.append((name, args, kwargs))

    monkeypatch.setattr(Celery, "send_task", refuse)
    yield sent
    assert sent == [], "the fuzz must never hand anything to a worker"


@pytest.fixture
def scoped_keys(alice: Tenant, make_key: Callable[..., str]) -> dict[str, str]:
    """One key per scope, so each operation is called with exactly the scope its document names."""
    return {scope: make_key(alice, [scope]) for scope in SCOPES}


@pytest.fixture(autouse=True)
def _quiet_request_logs(caplog) -> None:
    """A line per request (thousands here) would bury the one that matters: errors still show."""
    for name in ("asiri.requests", "django.request"):
        caplog.set_level("ERROR", logger=name)


@pytest.fixture(scope="session", autouse=True)
def _every_local_module_imported() -> None:
    """Hypothesis draws constants from the project's modules as they appear in sys.modules: one first imported
    in the middle of a run (a lazy import in a view, a command) makes its generation look flaky. Import them all
    first, so every run of the fuzz sees the same pool whatever ran before it."""
    for package in ("core", "tenants", "webhooks", "deliveries", "asiri", "tests.support"):
        root = importlib.import_module(package)
        for module in pkgutil.walk_packages(root.__path__, f"{package}."):
            with contextlib.suppress(ImportError):  # asiri/gunicorn.conf.py is a file gunicorn reads, not a module
                importlib.import_module(module.name)
