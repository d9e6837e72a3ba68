"""nginx as a benchmark receiver: a private instance on 127.0.0.1 that answers every POST with 200.

The issue's ratio targets are against nginx, so the ratio scenarios send to it (and the bare client
too); the aiohttp receiver (bench/receiver.py) stays for the latency scenarios and for receivers that
must misbehave. Receipts are read from nginx's access log: one line per request with its `$msec`,
status, `webhook-id` and path, buffered and flushed every second. A receipt's time is the `$msec` in
its line, so the flush delays when the bench notices a receipt, never the time it records.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

POLICY_RC = Path("/usr/sbin/policy-rc.d")


def say(text: str) -> None:
    print(text, flush=True)


def binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def ensure_installed() -> str:
    """nginx's path, installed from Debian's packages first if it is missing (nginx-light, else nginx).

    The package would start its default site (port 80, every address) if it could: unless the machine
    already forbids that (Docker images ship a /usr/sbin/policy-rc.d that exits 101), one that does is
    put in place for the install and removed afterwards.
    """
    found = binary()
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("nginx is not installed and this is not root: `sudo apt-get install -y nginx-light` first")
    if shutil.which("apt-get") is None:
        raise SystemExit("nginx is not installed and there is no apt-get: install nginx and put it on PATH")
    say("  nginx is missing: installing it from Debian's packages (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    temporary_policy = not POLICY_RC.exists()
    if temporary_policy:
        POLICY_RC.write_text("#!/bin/sh\n# bench/nginx.py: no service starts while it installs nginx\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        for update in (False, True):
            if update:
                say("  apt-get install failed: apt-get update, then again")
                subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            for package in ("nginx-light", "nginx"):
                say(f"  apt-get install -y {package}")
                installed = subprocess.run(
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", package], env=env, check=False
                )
                if installed.returncode == 0 and binary():
                    say(f"  installed {package}: {binary()}")
                    return binary()
    finally:
        if temporary_policy:
            POLICY_RC.unlink(missing_ok=True)
    raise SystemExit("could not install nginx with apt-get (see its output above)")


CONFIG = """\
# bench/nginx.py: a private receiver, nothing but 127.0.0.1:{port}.
daemon off;
master_process on;
worker_processes 2;
{user}pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    log_format receipts '$msec $status $http_webhook_id $uri';
    access_log off;
    client_body_temp_path {workdir}/nginx-body;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        keepalive_requests 1000000;
        keepalive_timeout 75s;
        client_max_body_size 2m;
        access_log {log} receipts buffer=64k flush=1s;
        location / {{
            return 200 "ok\\n";
        }}
    }}
}}
"""


class Nginx:
    """One nginx master with 2 workers, in the foreground (`daemon off`), stopped by signalling it."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.log = workdir / "nginx-access.log"
        self.process: subprocess.Popen | None = None
        self.receipts = Receipts(self.log)

    def start(self, timeout: float = 15) -> None:
        path = ensure_installed()
        config = self.workdir / "nginx.conf"
        # As root, nginx's workers would drop to `nobody`, which cannot enter a mkdtemp() directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        config.write_text(CONFIG.format(port=self.port, workdir=self.workdir, log=self.log, user=user))
        self.log.touch()
        self.process = subprocess.Popen(
            [path, "-p", str(self.workdir), "-c", str(config), "-e", str(self.workdir / "nginx-error.log")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "nginx-stderr.log", "w"),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    errors = "".join(
                        (self.workdir / name).read_text()[-2000:]
                        for name in ("nginx-stderr.log", "nginx-error.log")
                        if (self.workdir / name).exists()
                    )
                    raise SystemExit(f"nginx did not start:\n{errors}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 10) -> None:
        """SIGQUIT: the workers finish what they hold and flush the log; SIGKILL if that takes too long."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Receipts:
    """What nginx answered 200, from its access log: per webhook-id, the first receipt's time and path."""

    def __init__(self, log: Path) -> None:
        self.log, self.offset, self.partial = log, 0, b""
        self.first: dict[str, tuple[float, str]] = {}

    def _read(self) -> None:
        with open(self.log, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()  # a line nginx has not finished writing
        for line in lines:
            msec, status, webhook_id, uri = line.decode().split(" ", 3)
            if status == "200" and webhook_id != "-" and webhook_id not in self.first:
                self.first[webhook_id] = (float(msec), uri)

    def times(self, prefix: str) -> dict[str, float]:
        """webhook-id → time of its first receipt, for paths starting with `prefix`."""
        self._read()
        return {webhook_id: t for webhook_id, (t, uri) in self.first.items() if uri.startswith(prefix)}

    def paths(self, prefix: str) -> set[str]:
        self._read()
        return {uri for _, uri in self.first.values() if uri.startswith(prefix)}

    def wait(self, prefix: str, count: int, timeout: float) -> float:
        """Until `count` distinct webhook-ids arrived under `prefix`; returns the last one's `$msec`."""
        deadline = time.monotonic() + timeout
        while True:
            times = self.times(prefix)
            if len(times) >= count:
                return max(times.values())
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(times)} of {count} deliveries reached nginx ({prefix}) in {timeout:.0f} s")
            time.sleep(0.2)
