"""A deployment as an operator makes one: a `git clone` of the repository into an empty directory, the
Procfile's `release` run once, then every other Procfile line as a process of its own, with production
settings (plus the opt-in flags a loopback receiver needs) against the test database and a Redis
server of the deployment's own."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.processes import ROOT, RedisProcess, free_port, redis_server, service_env, stop, wait_until

READY = {"web": "Listening at:", "worker": " ready.", "priority": " ready.", "beat": "beat: Starting"}


def procfile(app: Path) -> dict[str, str]:
    lines = (line.split(":", 1) for line in app.joinpath("Procfile").read_text().splitlines() if ":" in line)
    return {name.strip(): command.strip() for name, command in lines if not name.startswith("#")}


@dataclass
class Deployment:
    app: Path
    port: int
    redis: RedisProcess
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, name: str) -> str:
        return self.app.joinpath(f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in self.processes)

    def alive(self) -> dict[str, bool]:
        return {name: process.poll() is None for name, process in self.processes.items()}

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.base + path, timeout=10, **kwargs)

    def release(self) -> None:
        """The Procfile's `release` line, run once, as a platform runs it before (or here, after) the others."""
        done = subprocess.run(
            ["bash", "-c", procfile(self.app)["release"]],
            cwd=self.app,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _clean_env(**settings: str) -> dict[str, str]:
    """Only what the README documents, and PATH to the project's interpreter: nothing from this shell."""
    test_env = service_env()
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "DATABASE_URL": test_env["DATABASE_URL"],
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "HOST": "127.0.0.1",
        # The receivers are on loopback: the documented opt-in flags for that, nothing else.
        "ASIRI_ALLOW_PRIVATE_URLS": "1",
        "ASIRI_REQUIRE_HTTPS": "0",
        "ASIRI_RESOLVER": "tests.support.resolver.local_resolve",  # no real DNS, ever
        "WEB_CONCURRENCY": "2",
        "WORKER_CONCURRENCY": "1",
        "PRIORITY_CONCURRENCY": "1",
        **settings,
    }


@contextmanager
def deployment(tmp_path: Path, *, released: bool = True, **settings: str) -> Iterator[Deployment]:
    """Started as documented; with `released=False`, every process starts before the release step has run."""
    app = tmp_path / "app"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(app)], check=True, timeout=60)
    assert not (app / "var").exists()
    with redis_server(tmp_path) as redis:
        env = _clean_env(CELERY_BROKER_URL=redis.url, PORT=str(free_port()), **settings)
        deployed = Deployment(app, int(env["PORT"]), redis, env)
        commands = procfile(app)
        del commands["release"]
        if released:
            deployed.release()
        try:
            for name, command in commands.items():
                with app.joinpath(f"{name}.log").open("w") as log:
                    deployed.processes[name] = subprocess.Popen(
                        ["bash", "-c", f"exec {command}"],  # as a Procfile runner starts each line
                        cwd=app,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            for name, marker in READY.items():
                started = wait_until(lambda n=name, m=marker: m in deployed.log(n) or not deployed.alive()[n], 60)
                assert started and deployed.alive()[name], f"{name} did not start:\n{deployed.logs()}"
            if released:
                assert wait_until(lambda: _answers(deployed, "/readyz"), timeout=30), deployed.logs()
            yield deployed
        finally:
            for process in deployed.processes.values():
                stop(process, signal.SIGTERM)


def _answers(deployed: Deployment, path: str) -> bool:
    try:
        return deployed.get(path).status_code == 200
    except requests.ConnectionError:
        return False


def static_links(html: str) -> list[str]:
    return sorted(set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html)))
