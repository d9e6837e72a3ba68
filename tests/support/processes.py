"""Real service processes for integration tests: a Celery worker on the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def service_env(**extra: str) -> dict[str, str]:
    """The environment of a process that shares this test run's database and broker."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "ASIRI_RESOLVER": "tests.support.resolver.local_resolve",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


@contextmanager
def celery_worker(*, ready_timeout: float = 30.0, **extra_env: str) -> Iterator[subprocess.Popen]:
    """Start `celery worker` as the Procfile does and wait until it consumes."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "asiri",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        "2",
        "--without-mingle",
        "--without-gossip",
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=service_env(**extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in process.stdout:
            lines.append(line)
            if " ready." in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while not ready.is_set() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ready.is_set():
        process.kill()
        raise RuntimeError("Celery worker did not start:\n" + "".join(lines[-40:]))
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)
            process.wait()
        process.output = "".join(lines)  # type: ignore[attr-defined]


def wait_until(predicate, timeout: float):
    """Poll until predicate() is truthy or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()
