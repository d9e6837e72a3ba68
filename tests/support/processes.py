"""Real service processes for integration tests: a Celery worker on the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

from tests.support.tls import Certificates

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
def _service(
    command: list[str], ready_marker: str, env: dict[str, str], ready_timeout: float
) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in process.stdout:
            lines.append(line)
            if ready_marker in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while not ready.is_set() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not ready.is_set():
        os.killpg(process.pid, signal.SIGKILL)
        raise RuntimeError(f"{command[3:5]} did not start:\n" + "".join(lines[-40:]))
    process.lines = lines  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a service and everything it started (Celery's pool children included)."""
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def celery_worker(*, concurrency: int = 2, queue: str | None = None, ready_timeout: float = 30.0, **extra_env: str):
    """`celery worker` as the Procfile starts it, on this test run's database: every queue, or only `queue`."""
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
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
    ]
    if queue:
        command += ["--queues", queue, "--hostname", f"{queue}@%h"]
    return _service(command, " ready.", service_env(**extra_env), ready_timeout)


def celery_beat(data_dir: Path, *, ready_timeout: float = 30.0, **extra_env: str):
    """`celery beat`: it runs the dispatcher every ASIRI_DISPATCH_INTERVAL seconds."""
    command = [sys.executable, "-m", "celery", "-A", "asiri", "beat", "--loglevel", "INFO"]
    env = service_env(ASIRI_DATA_DIR=str(data_dir), **extra_env)
    return _service(command, "beat: Starting", env, ready_timeout)


@contextmanager
def redis_server(data_dir: Path, tls: Certificates | None = None) -> Iterator[RedisProcess]:
    """A Redis of this test's own on a free loopback port, which the test may flush and restart; TLS only if given
    certificates."""
    port = free_port()
    server = RedisProcess(port, data_dir, tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisProcess:
    def __init__(self, port: int, data_dir: Path, tls: Certificates | None = None) -> None:
        self.port = port
        self.data_dir = data_dir
        self.tls = tls
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _cli(self, *args: str) -> list[str]:
        tls = ["--tls", "--cacert", str(self.tls.ca)] if self.tls else []
        return ["redis-cli", "-p", str(self.port), *tls, *args]

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls:  # TLS only, as a managed Redis offers it; clients are not asked for certificates
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.cert)]
            listen += ["--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca)]
            listen += ["--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            [
                "redis-server",
                *listen,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(
            lambda: subprocess.run(self._cli("ping"), capture_output=True, text=True).stdout.strip() == "PONG",
            timeout=10,
        )

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def shutdown(self) -> None:
        """As an operator stops it (`redis-cli shutdown nosave`): clients' connections closed by the server."""
        if self.process is not None:
            subprocess.run(self._cli("shutdown", "nosave"), capture_output=True)
            self.process.wait(timeout=10)
            self.process = None

    def flushall(self) -> None:
        subprocess.run(self._cli("FLUSHALL"), check=True, capture_output=True)


def serves_healthz(port: int) -> bool:
    """Whether a web process on 127.0.0.1:`port` answers its liveness probe yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(predicate, timeout: float):
    """Poll until predicate() is truthy or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn(port: int, *, workers: int = 2, ready_timeout: float = 30.0, **extra_env: str):
    """The Procfile's `web` on 127.0.0.1:`port` (access log included), on this test run's database; ready
    once it listens (wait for /healthz before counting on every worker)."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "asiri.wsgi",
        "-c",
        "asiri/gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--access-logfile",
        "-",
    ]
    return _service(command, "Listening at:", service_env(**extra_env), ready_timeout)
