"""Replay docs/security.md's attack list against a production-mode stack on loopback and count what held.

    .venv/bin/python scripts/attack_replay.py [--keep-db]

Starts gunicorn (DJANGO_DEBUG=0, a long random DJANGO_SECRET_KEY, https required, private targets refused) and,
for the send-time vectors only, one Celery worker, on a database of its own (created and dropped) and Redis
database 1. Prints one row per category (tried, blocked, and every vector that was not) and exits 1 if any
vector was not blocked.

Safety: every connection goes to 127.0.0.1 or ::1. Create and PATCH vectors are only validated (the web
process resolves names with the test resolver's table and never connects). Send-time vectors are stored
behind the API's back with loopback targets only, each with a canary listener of its own; the worker
resolves through `tests.support.resolver.loopback_resolve`, which answers for no name with an address off
this machine, and starts only after every subscription whose URL is not a send-time vector is paused and its
deliveries removed.
"""

from __future__ import annotations

import argparse
import base64
import http.cookies
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG = "postgres://postgres@127.0.0.1:5432"
DB_NAME = "asiri_h10sec_replay"
REDIS = "redis://127.0.0.1:6379/1"
SECRET_KEY = secrets.token_urlsafe(60)
ALL_SCOPES = ["webhooks:read", "webhooks:write", "audit:read", "events:write"]
MARKUP = ("<script>alert(", "<img src=x onerror", "<svg onload", "javascript:alert")
XSS = {
    "script": "<script>alert('asiri-xss')</script>",
    "img": '"><img src=x onerror=alert(1)>',
    "svg": "'><svg onload=alert(1)>",
}
ONCE = "https://hooks.example.com/never-sent"  # public by the test table: these subscriptions are never sent


# ---------------------------------------------------------------- the stack


def stack_env(**extra: str) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"{PG}/{DB_NAME}",
        "CELERY_BROKER_URL": REDIS,
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "ASIRI_REQUIRE_HTTPS": "1",
        "ASIRI_ALLOW_PRIVATE_URLS": "0",
        "ASIRI_RESOLVER": "tests.support.resolver.local_resolve",  # no real DNS, ever
        # So that a vector is judged by its control, never by a 429 (a 429 is not counted as blocked).
        "ASIRI_RATE_LIMIT": "100000/min",
        "ASIRI_TEST_RATE_LIMIT": "100000/min",
        # 127.0.0.1 is outside it: a forged header claiming 192.0.2.10 must not open /metrics.
        "ASIRI_METRICS_ALLOWED_NETWORKS": "192.0.2.0/24",
        "ASIRI_RETRY_SCHEDULE": "600",
        "ASIRI_DISPATCH_INTERVAL": "1",
        **extra,
    }


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as connection:
        connection.execute(sql)


@contextmanager
def process(command: list[str], log: Path, marker: str, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while marker not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[2]} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------- counting


@dataclass
class Category:
    name: str
    original: str = ""
    tried: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, vector: str, blocked: bool, detail: str = "") -> None:
        self.tried += 1
        if not blocked:
            self.failures.append(f"{vector} {detail}".strip())


CATEGORIES: dict[str, Category] = {}


def category(name: str, original: str = "") -> Category:
    return CATEGORIES.setdefault(name, Category(name, original))


# ---------------------------------------------------------------- clients


class Api:
    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def __call__(self, method: str, path: str, body=None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        if body is not None:
            kwargs["json"] = body
        return requests.request(method, self.base + path, headers=headers, timeout=60, **kwargs)


class Browser:
    """An admin session over plain http: production marks its cookies Secure, so requests would not send them."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []

    def request(self, method: str, path: str, data=None) -> requests.Response:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if method == "POST":
            headers["X-CSRFToken"] = self.cookies.get("csrftoken", "")
        response = requests.request(
            method, self.base + path, data=data, headers=headers, allow_redirects=False, timeout=60
        )
        for raw in response.raw.headers.getlist("Set-Cookie"):
            self.set_cookies.append(raw)
            jar = http.cookies.SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value
        return response

    def get(self, path: str) -> requests.Response:
        return self.request("GET", path)

    def post(self, path: str, data: dict) -> requests.Response:
        return self.request("POST", path, data)

    def login(self, username: str, password: str) -> requests.Response:
        self.get("/admin/login/")
        return self.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})


# ---------------------------------------------------------------- vectors: SSRF


def ssrf_hosts() -> list[str]:
    ipv4 = [
        "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "0x7f.1", "0177.0.0.1",
        "0177.1", "017700000001", "127.000.000.001", "127.255.255.254", "0.0.0.0", "0", "0x0", "00", "0.0",
        "10.0.0.1", "10.1", "167772161", "012.0.0.1", "0xa.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.0.1",
        "192.168.1", "3232235777", "0xc0a80001", "169.254.169.254", "2852039166", "0xa9fea9fe", "0251.0376.0251.0376",
        "169.254.43518", "169.254.0.1", "100.64.0.1", "100.127.255.254", "192.0.0.8", "192.0.2.1", "198.51.100.7",
        "203.0.113.9", "198.18.0.1", "198.19.255.255", "192.88.99.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
        "255.255.255.255", "0.1.2.3",
    ]  # fmt: skip
    ipv6 = [
        "::1", "0:0:0:0:0:0:0:1", "::", "::ffff:127.0.0.1", "::ffff:7f00:1", "0:0:0:0:0:ffff:127.0.0.1",
        "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:0:127.0.0.1", "::ffff:0:7f00:1", "::ffff:0:a9fe:a9fe",
        "::127.0.0.1", "::7f00:1", "::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b::127.0.0.1", "64:ff9b::a9fe:a9fe",
        "64:ff9b::a00:1", "64:ff9b:1::7f00:1", "64:ff9b:1::a9fe:a9fe", "64:ff9b:1::808:808", "2002:7f00:1::",
        "2002:a9fe:a9fe::1", "2002:c0a8:101::1", "2001:0:4136:e378:8000:63bf:80ff:fffe",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7", "2001:0:4136:e378:8000:63bf:56ff:feff", "fe80::1", "fe80::1%25eth0",
        "febf::1", "fec0::1", "fc00::1", "fd12:3456::1", "fdff:ffff::1", "2001:db8::1", "3fff::1", "ff02::1",
        "ff05::2", "100::1", "2001:2::1", "2001:10::1", "::ffff:8.8.8.8",
    ]  # fmt: skip
    names = [
        "localhost", "LOCALHOST", "localhost.", "app.localhost", "localhost.localdomain", "loopback.test",
        "loopback6.test", "zero.test", "mapped.test", "mixed.test", "mixed-loopback.test", "metadata.internal.test",
        "intranet.test", "INTRANET.TEST.", "unresolvable.invalid", "nonexistent.test",
    ]  # fmt: skip
    unicode = [
        "１２７.０.０.１", "127。0。0。1", "127．0．0．1", "１２７.１", "𝟏𝟐𝟕.𝟎.𝟎.𝟏", "①②⑦.⓪.⓪.①", "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ",
        "localhost。",
        "127.0.0.1.", "127.1.", "2130706433.", "0x7f000001.",
    ]  # fmt: skip
    return ipv4 + [f"[{h}]" for h in ipv6] + names + unicode


def embedded_ipv4_forms() -> list[str]:
    """Each private IPv4 address in every IPv6 form that carries one."""
    import ipaddress

    forms = []
    for text in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "192.168.1.1", "100.64.0.1"):
        v4 = int(ipaddress.IPv4Address(text))
        for prefix, shift, mask in (
            ("::ffff:0:0", 0, 0),  # mapped
            ("::ffff:0:0:0", 0, 0),  # translated
            ("::", 0, 0),  # compatible
            ("64:ff9b::", 0, 0),  # NAT64
            ("64:ff9b:1::", 0, 0),  # local-use NAT64
            ("2002::", 80, 0),  # 6to4
            ("2001:0:4136:e378:8000:63bf::", 0, 0xFFFFFFFF),  # Teredo, client inverted
        ):
            forms.append(str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(prefix)) | ((v4 ^ mask) << shift))))
    return sorted(set(forms), key=forms.index)


def ssrf_urls() -> list[str]:
    urls = [f"https://{host}/hook" for host in ssrf_hosts()]
    urls += [f"https://[{form}]/hook" for form in embedded_ipv4_forms() if f"[{form}]" not in ssrf_hosts()]
    tricks = [
        "https://hooks.example.com@127.0.0.1/hook",
        "https://hooks.example.com:443@169.254.169.254/",
        "https://user:pass@localhost/hook",
        "https://127.0.0.1#@hooks.example.com/",
        "https://127.0.0.1?@hooks.example.com/",
        "https://hooks.example.com\\@127.0.0.1/",
        "https://127.0.0.1\\hooks.example.com/",
        "https://127.0.0.1\\.hooks.example.com/",
        "https:\\\\127.0.0.1/hook",
        "https:/127.0.0.1/hook",
        "https:127.0.0.1/hook",
        "https:///127.0.0.1/hook",
        "https://%31%32%37.0.0.1/hook",
        "https://127%2E0%2E0%2E1/hook",
        "https://%6c%6f%63%61%6c%68%6f%73%74/hook",
        "https://loc%00alhost/hook",
        "https://127.0.0.1%0d%0a.hooks.example.com/",
        "https://127.0.0.1 .hooks.example.com/",
        "https://[::1]:443/hook",
        "https://127.0.0.1:443/hook",
        "https://127.0.0.1:80/hook",
        "https://127.0.0.1:22/",
        "https://127.0.0.1:5432/",
        "https://127.0.0.1:6379/",
        "https://169.254.169.254:80/latest/meta-data/",
        "https://localhost:0/",
        "https://127.0.0.1:65536/",
        "https://[::ffff:127.0.0.1]:8443/",
        "https://metadata.internal.test:443/",
        "HTTPS://127.0.0.1/hook",
        "https://xn--127-0.0.1/hook",
        "https://xn--nxa/hook",
        "http://hooks.example.com/plain-http",
        "http://127.0.0.1/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://2130706433/hook",
        "HTTP://hooks.example.com/",
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "dict://127.0.0.1:6379/INFO",
        "javascript:alert(1)",
        "data:text/plain,hi",
        "//127.0.0.1/hook",
        "127.0.0.1/hook",
        "https://",
        "https://:443/",
    ]
    return urls + tricks


def send_urls(port: int) -> list[str]:
    """Send-time targets: every one connects to this machine if the guard fails (the canary counts it)."""
    hosts = [
        "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "0x7f.1", "0177.0.0.1", "0177.1",
        "017700000001", "127.000.000.001", "127.0.0.2", "127.1.2.3", "127.255.255.254", "0.0.0.0", "0", "0x0",
        "127.0.0.1.", "[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]", "[::]", "localhost", "LOCALHOST", "localhost.", "app.localhost",
        "localhost.localdomain", "loopback.test", "loopback6.test", "zero.test", "mapped.test", "loopback-range.test",
        "both-loopbacks.test",
    ]  # fmt: skip
    urls = [f"http://{host}:{port}/hook" for host in hosts]
    urls += [f"https://{h}:{port}/hook" for h in ("127.0.0.1", "localhost", "[::1]", "2130706433", "127.1")]
    return urls


# ---------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-db", action="store_true", help="leave the database for inspection")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="attack-replay-"))
    env = stack_env(ASIRI_DATA_DIR=str(work / "var"))
    os.environ.update({k: v for k, v in env.items() if k not in ("PATH", "HOME")})
    os.environ["DJANGO_SETTINGS_MODULE"] = "asiri.settings"
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    pg(f"DROP DATABASE IF EXISTS {DB_NAME}")
    pg(f"CREATE DATABASE {DB_NAME}")
    try:
        for command in (["migrate", "--noinput", "-v0"], ["collectstatic", "--noinput", "-v0"]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)
        import django

        django.setup()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gunicorn = [
            sys.executable, "-m", "gunicorn", "asiri.wsgi", "-c", "asiri/gunicorn.conf.py", "--bind",
            f"127.0.0.1:{port}", "--workers", "2", "--access-logfile", "-",
        ]  # fmt: skip
        with process(gunicorn, work / "web.log", "Listening at:", env):
            wait_ready(base)
            world = setup(base)
            attack_ssrf_create(world)
            attack_isolation(world)
            attack_cursors(world)
            attack_scopes(world)
            attack_xss(world)
            attack_support(world)
            attack_findings(world, work, env)
            attack_send(world, work, env)
            attack_lockout(world)  # last: it locks the loopback address out of the admin for 15 minutes
        check_logs(world, work)
        print("Stored-XSS payloads stored in:", ", ".join(world.xss_fields))
    finally:
        redis.Redis.from_url(REDIS).flushdb()
        if not args.keep_db:
            from django.db import connections

            connections.close_all()
            pg(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    return report(work)


def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/readyz", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn never became ready")


@dataclass
class World:
    base: str
    keys: dict[tuple[str, frozenset], str]
    alice: object
    charlie: object
    root_password: str
    support_password: str
    every_key: list[str] = field(default_factory=list)
    every_secret: list[str] = field(default_factory=list)
    log_probes: list[str] = field(default_factory=list)
    logged_key: str = ""
    xss_fields: list[str] = field(default_factory=list)

    def api(self, tenant: str, *scopes: str) -> Api:
        return Api(self.base, self.keys[(tenant, frozenset(scopes or ALL_SCOPES))])


def setup(base: str) -> World:
    from itertools import combinations

    from django.contrib.auth.models import Group, User

    from tenants.models import ApiKey, Tenant

    alice = Tenant.objects.create(slug="alice", name="Alice")
    charlie = Tenant.objects.create(slug="charlie", name="Charlie")
    keys = {}
    for tenant in (alice, charlie):
        for n in range(len(ALL_SCOPES) + 1):
            for scopes in combinations(ALL_SCOPES, n):
                _, plain = ApiKey.issue(tenant=tenant, scopes=list(scopes), name="+".join(scopes) or "none")
                keys[(tenant.slug, frozenset(scopes))] = plain
    root_password, support_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    User.objects.create_superuser("root", password=root_password)
    sam = User.objects.create_user("sam", password=support_password, is_staff=True)
    sam.groups.add(Group.objects.get(name="Support"))
    User.objects.create_user("locked", password=support_password, is_staff=True)
    world = World(base, keys, alice, charlie, root_password, support_password)
    world.every_key = list(keys.values())
    return world


def subscription(tenant, url: str, **fields):
    from webhooks.models import Subscription

    return Subscription.objects.create(tenant=tenant, url=url, **fields)


def with_deliveries(sub, count: int = 3, status: str = "failed", event_type: str = "invoice.paid") -> list:
    from datetime import timedelta

    from django.utils import timezone

    from deliveries.models import Delivery, Event

    rows = []
    for n in range(count):
        event = Event.objects.create(tenant=sub.tenant, type=event_type, data={"n": n})
        rows.append(
            Delivery.objects.create(
                tenant=sub.tenant,
                event=event,
                subscription=sub,
                event_type=event_type,
                status=status,
                attempt_count=1,
                created_at=timezone.now() - timedelta(minutes=10 - n),
            )
        )
    return rows


def snapshot() -> tuple:
    from deliveries.models import Attempt, Delivery, Event
    from tenants.models import ApiKey, Tenant
    from webhooks.models import Subscription

    return (
        list(Subscription.objects.order_by("id").values()),
        list(Delivery.objects.order_by("id").values("id", "status", "series_start", "next_attempt_at")),
        Event.objects.count(),
        Attempt.objects.count(),
        list(
            ApiKey.objects.order_by("pk").values(
                *(f.attname for f in ApiKey._meta.concrete_fields if f.name != "last_used_at")
            )
        ),
        list(Tenant.objects.order_by("pk").values()),
    )


def attack_ssrf_create(world: World) -> None:
    create = category("SSRF URL forms at create", "183")
    patch = category("SSRF URL forms at PATCH", "")
    api = world.api("alice")
    target = subscription(world.alice, ONCE, events=["never.sent"])
    for url in ssrf_urls():
        response = api("POST", "/v1/webhooks/subscriptions", {"url": url, "events": ["never.sent"]})
        create.check(url, response.status_code == 400 and "url" in response.json(), f"-> {response.status_code}")
        response = api("PATCH", f"/v1/webhooks/subscriptions/{target.id}", {"url": url})
        target.refresh_from_db()
        type(target).objects.filter(pk=target.pk).update(url=ONCE)  # each vector judged on its own
        ok = response.status_code == 400 and "url" in response.json() and target.url == ONCE
        patch.check(url, ok, f"-> {response.status_code}")
    # Mapping the internal DNS: a name that does not resolve and one that resolves privately, byte for byte.
    dns = category("Issue 10 #6: unresolvable vs private name, byte-identical")
    for method, path in (("POST", "/v1/webhooks/subscriptions"), ("PATCH", f"/v1/webhooks/subscriptions/{target.id}")):
        answers = {}
        for host in ("unresolvable.invalid", "intranet.test", "metadata.internal.test", "mixed.test", "localhost"):
            response = api(method, path, {"url": f"https://{host}/hook"})
            answers[host] = (response.status_code, response.content)
        reference = answers.pop("unresolvable.invalid")
        for host, answer in answers.items():
            dns.check(f"{method} {host} vs unresolvable.invalid", answer == reference, f"-> {answer} vs {reference}")


OBJECT_OPS = [
    ("GET", "/v1/webhooks/subscriptions/{id}", None),
    ("PATCH", "/v1/webhooks/subscriptions/{id}", {"description": "pwned"}),
    ("PUT", "/v1/webhooks/subscriptions/{id}", {"url": ONCE, "description": "pwned"}),
    ("DELETE", "/v1/webhooks/subscriptions/{id}", None),
    ("POST", "/v1/webhooks/subscriptions/{id}", {"description": "pwned"}),
    ("GET", "/v1/webhooks/subscriptions/{id}/deliveries", None),
    ("POST", "/v1/webhooks/subscriptions/{id}/test", None),
    ("GET", "/v1/webhooks/subscriptions/{id}/test", None),
    ("POST", "/v1/webhooks/subscriptions/{id}/rotate-secret", None),
    ("GET", "/v1/webhooks/subscriptions/{id}/deliveries/{delivery}", None),
    ("DELETE", "/v1/webhooks/subscriptions/{id}/deliveries/{delivery}", None),
    ("POST", "/v1/webhooks/subscriptions/{id}/deliveries/{delivery}/redeliver", None),
    ("GET", "/v1/webhooks/subscriptions/{id}/deliveries/{delivery}/redeliver", None),
]


def attack_isolation(world: World) -> None:
    cat = category("Tenant isolation", "31")
    victim = subscription(world.alice, ONCE, events=["never.sent"], description="alice's")
    alice_delivery = with_deliveries(victim)[0]
    own = subscription(world.charlie, ONCE, events=["never.sent"])
    own_delivery = with_deliveries(own, 1)[0]
    charlie = world.api("charlie")
    unknown_sub, unknown_delivery = "sub_Unknown000000000000000", "dlv_Unknown000000000000000"
    for method, path, body in OBJECT_OPS:
        cases = [(victim.id, alice_delivery.id, "alice's subscription")]
        if "{delivery}" in path:
            cases.append((own.id, alice_delivery.id, "charlie's subscription, alice's delivery"))
        for sub_id, delivery_id, what in cases:
            before = snapshot()
            attack = charlie(method, path.format(id=sub_id, delivery=delivery_id), body)
            after = snapshot()
            unknown_id = sub_id if sub_id == own.id else unknown_sub
            reference = charlie(method, path.format(id=unknown_id, delivery=unknown_delivery), body)
            same = (attack.status_code, attack.content) == (reference.status_code, reference.content)
            ok = same and before == after and attack.status_code in (404, 405) and b"alice" not in attack.content
            cat.check(
                f"{method} {path} on {what}", ok, f"-> {attack.status_code} (unknown id: {reference.status_code})"
            )
    # The id in other spellings, and the methods no handler names.
    for spelling in (victim.id.upper(), victim.id.lower(), f"{victim.id}%20", f"%20{victim.id}", victim.id[:-1]):
        response = charlie("GET", f"/v1/webhooks/subscriptions/{spelling}")
        cat.check(f"GET alice's id spelled {spelling!r}", response.status_code == 404, f"-> {response.status_code}")
    for method in ("HEAD", "OPTIONS"):
        for path in (f"/v1/webhooks/subscriptions/{victim.id}", f"/v1/webhooks/subscriptions/{victim.id}/deliveries"):
            response = charlie(method, path)
            ok = response.status_code in (404, 405) and victim.id.encode() not in response.content
            cat.check(
                f"{method} {path.replace(victim.id, '{id}')} on alice's subscription", ok, f"-> {response.status_code}"
            )
    before = snapshot()
    response = charlie("POST", "/v1/webhooks/subscriptions", {"url": ONCE, "id": victim.id, "tenant": "alice"})
    created = response.json().get("id") if response.status_code == 201 else None
    from webhooks.models import Subscription

    ok = created != victim.id and Subscription.objects.get(pk=victim.id).description == "alice's"
    ok = (
        ok and not Subscription.objects.filter(tenant=world.alice).exclude(pk__in=[r["id"] for r in before[0]]).exists()
    )
    cat.check("create with alice's subscription id and tenant in the body", ok, f"-> {response.status_code}")
    response = charlie("PATCH", f"/v1/webhooks/subscriptions/{own.id}", {"id": victim.id, "tenant": "alice"})
    own.refresh_from_db()
    cat.check(
        "PATCH own subscription to alice's id and tenant",
        own.tenant_id == world.charlie.pk and Subscription.objects.get(pk=victim.id).tenant_id == world.alice.pk,
        f"-> {response.status_code}",
    )
    listing = charlie("GET", "/v1/webhooks/subscriptions?limit=100")
    cat.check("list never shows alice's subscription", victim.id not in listing.text, f"-> {listing.status_code}")
    from deliveries.models import Delivery

    before = Delivery.objects.filter(tenant=world.alice).count()
    charlie("POST", "/v1/events", {"type": "never.sent", "data": {}})
    after = Delivery.objects.filter(tenant=world.alice).count()
    cat.check("charlie's event makes no delivery for alice", after == before, f"-> {before} then {after}")
    charlie("POST", "/v1/events", {"type": "never.sent", "data": {}, "tenant": "alice", "tenant_id": world.alice.pk})
    after = Delivery.objects.filter(tenant=world.alice).count()
    cat.check("charlie's event naming alice as its tenant", after == before, f"-> {before} then {after}")
    # Charlie's own delivery is reachable (the vectors above are not refused for a reason that hides a bug).
    assert charlie("GET", f"/v1/webhooks/subscriptions/{own.id}/deliveries/{own_delivery.id}").status_code == 200


def cursor_of(response: requests.Response, link: str = "next") -> str:
    return parse_qs(urlsplit(response.json()[link]).query)["cursor"][0]


def attack_cursors(world: World) -> None:
    from django.core import signing

    cat = category("Cursor forgeries", "15")
    alice = world.api("alice")
    a = subscription(world.alice, ONCE, events=["never.sent"])
    b = subscription(world.alice, ONCE, events=["never.sent"])
    rows_a = with_deliveries(a, 4, "failed") + with_deliveries(a, 4, "succeeded", "customer.created")
    with_deliveries(b, 4)
    c = subscription(world.charlie, ONCE, events=["never.sent"])
    with_deliveries(c, 4)
    ids_a = {r.id for r in rows_a}
    log = f"/v1/webhooks/subscriptions/{a.id}/deliveries"
    cursor = cursor_of(alice("GET", log + "?limit=1"))
    cursor_b = cursor_of(alice("GET", f"/v1/webhooks/subscriptions/{b.id}/deliveries?limit=1"))
    charlie = world.api("charlie")
    cursor_c = cursor_of(charlie("GET", f"/v1/webhooks/subscriptions/{c.id}/deliveries?limit=1"))
    failed_cursor = cursor_of(alice("GET", log + "?limit=1&status=failed"))
    payload, signature = cursor.split(":", 1)
    raw = base64.urlsafe_b64decode(payload.lstrip(".") + "==")
    raw = zlib.decompress(raw) if payload.startswith(".") else raw
    other_row = json.loads(raw)
    other_row[1] = "dlv_" + "A" * 22
    recompressed = "." + base64.urlsafe_b64encode(zlib.compress(json.dumps(other_row).encode())).decode().rstrip("=")
    must_400 = {
        "payload tampered, signature kept": recompressed + ":" + signature,
        "signature tampered": cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB"),
        "truncated to half": cursor[: len(cursor) // 2],
        "truncated by one character": cursor[:-1],
        "signature removed": payload,
        "unsigned JSON": base64.urlsafe_b64encode(raw).decode(),
        "signed with another key": signing.dumps(other_row, key="not-the-key" * 6, salt="asiri.api.cursor"),
        "signed with another salt": signing.dumps(other_row, salt="django.contrib.sessions"),
        "SQL in the row id (unsigned)": cursor.replace(payload, base64.urlsafe_b64encode(b"' OR 1=1 --").decode()),
        "NUL byte": cursor + "\x00",
        "10 kB of garbage": "A" * 10_000,
    }
    for what, forged in must_400.items():
        response = alice("GET", log, params={"cursor": forged})
        # 414: gunicorn refuses a request line over 4 KB before Django sees it.
        ok = (response.status_code == 400 and "cursor" in response.json()) or response.status_code == 414
        cat.check(f"{what}", ok, f"-> {response.status_code}")

    def only(response, allowed: set[str]) -> bool:
        if response.status_code == 400:
            return True
        return response.status_code == 200 and {r["id"] for r in response.json()["results"]} <= allowed

    response = alice("GET", log, params={"cursor": cursor_b})
    cat.check("another subscription's cursor", only(response, ids_a), f"-> {response.status_code}")
    response = alice("GET", log, params={"cursor": cursor_c})
    cat.check("another tenant's cursor", only(response, ids_a), f"-> {response.status_code}")
    response = charlie("GET", log, params={"cursor": cursor})
    cat.check(
        "alice's cursor used by charlie on alice's log", response.status_code == 404, f"-> {response.status_code}"
    )
    response = alice("GET", log, params={"cursor": failed_cursor, "status": "succeeded"})
    succeeded = {r.id for r in rows_a if r.status == "succeeded"}
    cat.check("cursor replayed across status filters", only(response, succeeded), f"-> {response.status_code}")
    response = alice("GET", log, params={"cursor": failed_cursor, "event_type": "customer.created"})
    cat.check("cursor replayed across event_type filters", only(response, succeeded), f"-> {response.status_code}")
    back = alice("GET", log, params={"cursor": cursor})
    prev = cursor_of(back, "previous")
    response = alice("GET", f"/v1/webhooks/subscriptions/{b.id}/deliveries", params={"cursor": prev})
    ids_b = {r["id"] for r in alice("GET", f"/v1/webhooks/subscriptions/{b.id}/deliveries").json()["results"]}
    cat.check(
        "a backwards cursor replayed on another subscription", only(response, ids_b), f"-> {response.status_code}"
    )


OPERATIONS = [
    ("list", "GET", "/v1/webhooks/subscriptions", None, "webhooks:read"),
    ("create", "POST", "/v1/webhooks/subscriptions", {"url": ONCE, "events": ["never.sent"]}, "webhooks:write"),
    ("fetch", "GET", "/v1/webhooks/subscriptions/{id}", None, "webhooks:read"),
    ("patch", "PATCH", "/v1/webhooks/subscriptions/{id}", {"description": "changed"}, "webhooks:write"),
    ("delete", "DELETE", "/v1/webhooks/subscriptions/{id}", None, "webhooks:write"),
    ("log", "GET", "/v1/webhooks/subscriptions/{id}/deliveries", None, "audit:read"),
    ("test", "POST", "/v1/webhooks/subscriptions/{id}/test", None, "webhooks:write"),
    ("rotate", "POST", "/v1/webhooks/subscriptions/{id}/rotate-secret", None, "webhooks:write"),
    ("delivery", "GET", "/v1/webhooks/subscriptions/{id}/deliveries/{delivery}", None, "audit:read"),
    ("redeliver", "POST", "/v1/webhooks/subscriptions/{id}/deliveries/{delivery}/redeliver", None, "webhooks:write"),
    ("publish", "POST", "/v1/events", {"type": "never.sent", "data": {}}, "events:write"),
]


def attack_scopes(world: World) -> None:
    cat = category("Scope bypasses (operation x key without its scope)", "39")
    sub = subscription(world.alice, ONCE, events=["never.sent"])
    delivery = with_deliveries(sub, 1)[0]
    for name, method, path, body, scope in OPERATIONS:
        for scopes, key in ((s, k) for (t, s), k in world.keys.items() if t == "alice" and scope not in s):
            before = snapshot()
            response = Api(world.base, key)(method, path.format(id=sub.id, delivery=delivery.id), body)
            ok = response.status_code == 403 and scope in response.text and snapshot() == before
            cat.check(f"{name} with [{','.join(sorted(scopes)) or 'no scope'}]", ok, f"-> {response.status_code}")


def attack_xss(world: World) -> None:
    from datetime import timedelta

    from django.contrib.admin.utils import quote
    from django.utils import timezone

    from deliveries.models import Attempt, Delivery

    cat = category("Stored XSS (field x admin page)", "28")
    alice = world.api("alice")
    stored: list[tuple[str, str]] = []  # (field, payload name) the API accepted
    subs = []
    for name, payload in XSS.items():
        body = {
            "url": ONCE + "/" + payload.replace(" ", "%20"),
            "events": ["xss.*"],
            "description": payload,
            "metadata": {payload: payload},
        }
        response = alice("POST", "/v1/webhooks/subscriptions", body)
        if response.status_code != 201:  # the URL with markup may be refused: store the rest
            body["url"] = f"{ONCE}/x?{name}=" + payload.replace(" ", "%20")
            response = alice("POST", "/v1/webhooks/subscriptions", body)
        if response.status_code != 201:
            body["url"] = ONCE
            response = alice("POST", "/v1/webhooks/subscriptions", body)
        assert response.status_code == 201, response.text
        subs.append(response.json()["id"])
        stored += [("description", name), ("metadata key", name), ("metadata value", name)]
        if body["url"] != ONCE:
            stored.append(("url", name))
        published = alice(
            "POST",
            "/v1/events",
            {"type": "xss.payload", "data": {payload: payload, "nested": [payload]}, "idempotency_key": payload},
        )
        if published.status_code != 202:
            published = alice("POST", "/v1/events", {"type": "xss.payload", "data": {payload: payload}})
        else:
            stored.append(("idempotency key", name))
        assert published.status_code == 202, published.text
        stored += [("event data key", name), ("event data value", name)]
    # An endpoint owner controls what its endpoint answers: a reply body and a redirect's Location, as stored.
    for n, delivery in enumerate(Delivery.objects.filter(subscription_id__in=subs)[: len(XSS)]):
        name, payload = list(XSS.items())[n]
        Attempt.objects.create(
            delivery=delivery,
            number=1,
            duration_ms=5,
            response_status_code=302,
            response_body=payload,
            error=f"Redirect not followed: Location {payload}",
            started_at=timezone.now() - timedelta(minutes=1),
        )
        Delivery.objects.filter(pk=delivery.pk).update(status="failed", failure_reason=payload, attempt_count=1)
        stored += [("endpoint reply body", name), ("redirect Location", name)]
    deliveries = list(Delivery.objects.filter(subscription_id__in=subs))
    delivery = deliveries[0]
    pages = [
        "/admin/", "/admin/dashboard/", "/admin/tenants/tenant/", f"/admin/tenants/tenant/{world.alice.pk}/change/",
        "/admin/webhooks/subscription/", "/admin/webhooks/subscription/?q=alert",
        *(f"/admin/webhooks/subscription/{quote(s)}/change/" for s in subs),
        "/admin/deliveries/delivery/", "/admin/deliveries/delivery/?q=alert",
        "/admin/deliveries/delivery/?status__exact=failed",
        *(f"/admin/deliveries/delivery/{quote(d.pk)}/change/" for d in deliveries),
        "/admin/deliveries/event/", "/admin/deliveries/event/?q=xss",
        *(f"/admin/deliveries/event/{quote(d.event_id)}/change/" for d in deliveries),
    ]  # fmt: skip
    for who, user, password in (("superuser", "root", world.root_password), ("support", "sam", world.support_password)):
        browser = Browser(world.base)
        assert browser.login(user, password).status_code == 302
        confirm = browser.post("/admin/deliveries/delivery/", {"action": "redeliver", "_selected_action": delivery.pk})
        htmls = {page: browser.get(page) for page in pages}
        htmls["redeliver confirmation"] = confirm
        for page, response in htmls.items():
            text = response.text
            raw = [m for m in MARKUP if m in text]
            ok = response.status_code == 200 and not raw
            cat.check(f"{who} {page}", ok, f"-> {response.status_code}, raw markup {raw}")
    world.xss_fields = sorted({f for f, _ in stored})


def attack_support(world: World) -> None:
    from django.contrib.auth.models import Group, User

    from tenants.models import ApiKey
    from webhooks.models import Subscription

    cat = category("Support-group escalations", "31")
    browser = Browser(world.base)
    assert browser.login("sam", world.support_password).status_code == 302
    sub = subscription(world.alice, ONCE, events=["never.sent"])
    delivery = with_deliveries(sub, 1)[0]
    key = ApiKey.objects.filter(tenant=world.alice).first()
    root, sam = User.objects.get(username="root"), User.objects.get(username="sam")
    support = Group.objects.get(name="Support")
    t, s, d, e = world.alice.pk, sub.pk, delivery.pk, delivery.event_id

    def state() -> tuple:
        return (
            snapshot(),
            list(User.objects.order_by("pk").values()),
            sorted(support.permissions.values_list("codename", flat=True)),
            list(Group.objects.order_by("pk").values()),
            [list(u.groups.values_list("pk", flat=True)) for u in User.objects.order_by("pk")],
        )

    def action(path: str, name: str, pk) -> tuple[str, str, dict]:
        return ("POST", path, {"action": name, "_selected_action": pk, "post": "yes", "confirmed": "yes"})

    vectors = [
        ("GET", "/admin/tenants/apikey/add/", None),
        ("POST", "/admin/tenants/apikey/add/", {"tenant": t, "name": "x", "scopes": ALL_SCOPES}),
        action("/admin/tenants/apikey/", "revoke", key.pk),
        action("/admin/tenants/apikey/", "delete_selected", key.pk),
        ("POST", f"/admin/tenants/apikey/{key.pk}/change/", {"name": "x", "scopes": ALL_SCOPES}),
        ("POST", f"/admin/tenants/apikey/{key.pk}/delete/", {"post": "yes"}),
        ("GET", "/admin/tenants/tenant/add/", None),
        ("POST", "/admin/tenants/tenant/add/", {"slug": "evil", "name": "Evil", "is_active": "on"}),
        ("POST", f"/admin/tenants/tenant/{t}/change/", {"slug": "alice", "name": "x", "max_subscriptions": 99999}),
        ("POST", f"/admin/tenants/tenant/{t}/delete/", {"post": "yes"}),
        action("/admin/tenants/tenant/", "delete_selected", t),
        action("/admin/webhooks/subscription/", "rotate_secret", s),
        action("/admin/webhooks/subscription/", "delete_selected", s),
        ("GET", "/admin/webhooks/subscription/add/", None),
        ("POST", f"/admin/webhooks/subscription/{s}/change/", {"url": "https://127.0.0.1/", "events": '["*"]'}),
        ("POST", f"/admin/webhooks/subscription/{s}/delete/", {"post": "yes"}),
        ("POST", f"/admin/deliveries/delivery/{d}/change/", {"status": "succeeded"}),
        ("POST", f"/admin/deliveries/delivery/{d}/delete/", {"post": "yes"}),
        action("/admin/deliveries/delivery/", "delete_selected", d),
        ("GET", "/admin/deliveries/event/add/", None),
        ("POST", f"/admin/deliveries/event/{e}/change/", {"type": "x", "data": "{}"}),
        ("POST", f"/admin/deliveries/event/{e}/delete/", {"post": "yes"}),
        ("GET", "/admin/auth/user/", None),
        ("GET", "/admin/auth/user/add/", None),
        (
            "POST",
            "/admin/auth/user/add/",
            {"username": "evil", "password1": "Xx-12345678!", "password2": "Xx-12345678!"},
        ),
        (
            "POST",
            f"/admin/auth/user/{sam.pk}/change/",
            {
                "username": "sam",
                "is_staff": "on",
                "is_superuser": "on",
                "is_active": "on",
                "date_joined_0": "2026-01-01",
                "date_joined_1": "00:00:00",
            },
        ),
        ("POST", f"/admin/auth/user/{root.pk}/password/", {"password1": "Xx-12345678!", "password2": "Xx-12345678!"}),
        ("POST", f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}),
        ("GET", "/admin/auth/group/", None),
        ("POST", "/admin/auth/group/add/", {"name": "evil"}),
        ("POST", f"/admin/auth/group/{support.pk}/change/", {"name": "Support", "permissions": list(range(1, 120))}),
        ("POST", f"/admin/auth/group/{support.pk}/delete/", {"post": "yes"}),
        ("GET", "/admin/axes/accessattempt/", None),
        ("POST", "/admin/axes/accessattempt/add/", {"username": "x"}),
        ("GET", "/admin/admin/logentry/", None),
    ]
    for method, path, data in vectors:
        before = state()
        response = browser.request(method, path, data)
        after = state()
        unchanged = before == after and Subscription.objects.get(pk=s).secret == sub.secret
        if method == "GET":
            ok = response.status_code in (403, 404) or (
                response.status_code == 302 and "login" in response.headers.get("Location", "")
            )
        else:
            ok = unchanged and "whsec_" not in response.text
        label = f"{method} {path}" + (f" action={data['action']}" if data and "action" in data else "")
        cat.check(label, ok, f"-> {response.status_code}{'' if unchanged else ', state changed'}")


def attack_findings(world: World, work: Path, env: dict[str, str]) -> None:
    from tests.support.nesting import nested
    from webhooks.models import Subscription

    alice = world.api("alice")
    # 1: keys through Basic auth and the query string (the log is read at the end, in check_logs).
    keys = category("Issue 10 #1: key via Basic / query string never logged")
    key = world.keys[("charlie", frozenset(ALL_SCOPES))]
    ways = {
        "Basic user": {"auth": (key, "")},
        "Basic password": {"auth": ("", key)},
        "?api_key=": {"params": {"api_key": key}},
        "?access_token=": {"params": {"access_token": key}},
        "?token=": {"params": {"token": key}},
        "Referer": {"headers": {"Referer": f"https://example.com/?key={key}"}},
    }
    for way, kwargs in ways.items():
        requests.get(world.base + "/v1/webhooks/subscriptions", timeout=10, **kwargs)
        requests.post(world.base + "/v1/events", timeout=10, json={}, **kwargs)
        world.log_probes.append(way)
    keys.tried = 0  # counted in check_logs, once the lines are written
    world.logged_key = key
    # 2: nesting.
    deep = category("Issue 10 #2: deeply nested JSON -> 400, never 500")
    for depth in (65, 312, 936, 5000):
        for kind in ("dict", "list"):
            body = (
                '{"type": "invoice.paid", "data": '
                + (nested(kind, depth) if kind == "dict" else '{"k": ' + nested(kind, depth - 1) + "}")
                + "}"
            )
            response = requests.post(
                world.base + "/v1/events",
                data=body,
                headers={"Authorization": f"Bearer {alice.key}", "Content-Type": "application/json"},
                timeout=30,
            )
            deep.check(f"event data, {kind}s {depth} deep", response.status_code == 400, f"-> {response.status_code}")
        body = '{"url": "' + ONCE + '", "metadata": {"k": ' + nested("dict", depth) + "}}"
        response = requests.post(
            world.base + "/v1/webhooks/subscriptions",
            data=body,
            headers={"Authorization": f"Bearer {alice.key}", "Content-Type": "application/json"},
            timeout=30,
        )
        deep.check(f"metadata, dicts {depth} deep", response.status_code == 400, f"-> {response.status_code}")
    # 3: bodies.
    big = category("Issue 10 #3: oversized and chunked bodies -> JSON 413")
    headers = {"Authorization": f"Bearer {alice.key}", "Content-Type": "application/json"}
    for label, size in (("1.5 MB", 1_500_000), ("3 MB", 3_000_000), ("20 MB", 20_000_000)):
        for path in ("/v1/events", "/v1/webhooks/subscriptions"):
            body = b'{"type": "x", "data": {"k": "' + b"a" * size + b'"}}'
            response = requests.post(world.base + path, data=body, headers=headers, timeout=60)
            ok = response.status_code == 413 and response.headers.get("Content-Type", "").startswith("application/json")
            big.check(f"{label} to {path}", ok, f"-> {response.status_code}")

    def chunks() -> Iterator[bytes]:
        yield b'{"type": "x", "data": {"k": "'
        for _ in range(30):
            yield b"a" * 100_000
        yield b'"}}'

    response = requests.post(world.base + "/v1/events", data=chunks(), headers=headers, timeout=60)
    ok = response.status_code == 413 and response.headers.get("Content-Type", "").startswith("application/json")
    big.check("3 MB chunked to /v1/events", ok, f"-> {response.status_code}")
    # 4: show-once secrets never in a cookie.
    cookie = category("Issue 10 #4: no show-once secret in any Set-Cookie")
    browser = Browser(world.base)
    assert browser.login("root", world.root_password).status_code == 302
    start = len(browser.set_cookies)
    response = browser.post(
        "/admin/tenants/apikey/add/", {"tenant": world.alice.pk, "name": "admin-made", "scopes": ["webhooks:read"]}
    )
    shown = browser.get(response.headers.get("Location", "/admin/tenants/apikey/"))
    made = re.findall(r"asiri_[A-Za-z0-9]+_[A-Za-z0-9_-]+", shown.text)
    sub = subscription(world.alice, ONCE, events=["never.sent"])
    browser.post("/admin/webhooks/subscription/", {"action": "rotate_secret", "_selected_action": sub.pk})
    rotated = browser.get("/admin/webhooks/subscription/")
    sub.refresh_from_db()
    decoded = " ".join(browser.set_cookies[start:])
    for raw in browser.set_cookies[start:]:
        value = raw.split(";", 1)[0].split("=", 1)[-1].strip('"')
        for part in value.split(":")[:1]:
            try:
                blob = base64.urlsafe_b64decode(part.lstrip(".") + "==")
                decoded += " " + (zlib.decompress(blob) if part.startswith(".") else blob).decode(errors="replace")
            except Exception:  # noqa: S112 (not every cookie is base64)
                continue
    cookie.check("new API key shown once in the admin", bool(made) and not any(k in decoded for k in made))
    cookie.check("rotated whsec_ secret", sub.secret in rotated.text and sub.secret not in decoded)
    world.every_key += made
    world.every_secret.append(sub.secret)
    # 8: forged proxy headers.
    proxy = category("Issue 10 #8: forged proxy headers from an untrusted peer")
    for header in ("X-Forwarded-For", "X-Real-IP", "True-Client-IP", "CF-Connecting-IP", "X-Client-IP", "Forwarded"):
        value = "for=192.0.2.10" if header == "Forwarded" else "192.0.2.10"
        response = requests.get(world.base + "/metrics", headers={header: value}, timeout=10)
        proxy.check(f"/metrics with {header}: {value}", response.status_code == 403, f"-> {response.status_code}")
    response = requests.get(world.base + "/metrics", headers={"X-Forwarded-For": "192.0.2.10, 192.0.2.11"}, timeout=10)
    proxy.check("/metrics with a two-hop X-Forwarded-For", response.status_code == 403, f"-> {response.status_code}")
    # Taken for https, a request would get HSTS on the admin and https:// paging links under /v1.
    plain = requests.get(world.base + "/admin/login/", timeout=10)
    assert "Strict-Transport-Security" not in plain.headers
    schemes = {
        "X-Forwarded-Proto: https": {"X-Forwarded-Proto": "https"},
        "X-Forwarded-Protocol: ssl": {"X-Forwarded-Protocol": "ssl"},
        "X-Forwarded-Ssl: on": {"X-Forwarded-Ssl": "on"},
        "Forwarded: proto=https": {"Forwarded": "for=192.0.2.10;proto=https"},
        "X-Url-Scheme: https": {"X-Url-Scheme": "https"},
    }
    for label, forged in schemes.items():
        admin = requests.get(world.base + "/admin/login/", headers=forged, timeout=10)
        proxy.check(f"{label}, admin page", "Strict-Transport-Security" not in admin.headers, "-> answered with HSTS")
        page = alice("GET", "/v1/webhooks/subscriptions?limit=1", headers=forged).json()
        proxy.check(f"{label}, /v1 paging link", (page["next"] or "http:").startswith("http:"), f"-> {page['next']}")
    # 9: weak secret keys.
    weak = category("Issue 10 #9: weak DJANGO_SECRET_KEY refuses to start")
    for label, value in (("x", "x"), ("49 characters", "k" * 24 + "q" * 25), ("4 distinct characters", "abcd" * 20),
                         ("django-insecure- placeholder", "django-insecure-" + secrets.token_urlsafe(50))):  # fmt: skip
        started = subprocess.run(
            [sys.executable, "manage.py", "check"], cwd=ROOT, env={**env, "DJANGO_SECRET_KEY": value},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        said = started.stdout + started.stderr
        ok = started.returncode != 0 and "DJANGO_SECRET_KEY" in said and (len(value) < 5 or value not in said)
        weak.check(f"DJANGO_SECRET_KEY={label}", ok, f"-> exit {started.returncode}")
    # 10: the subscription cap.
    cap = category("Issue 10 #10: subscription cap -> 409")
    type(world.charlie).objects.filter(pk=world.charlie.pk).update(max_subscriptions=3)
    charlie = world.api("charlie")
    live = Subscription.objects.filter(tenant=world.charlie, deleted_at=None).count()
    answers = [
        charlie("POST", "/v1/webhooks/subscriptions", {"url": ONCE, "events": ["never.sent"]}).status_code
        for _ in range(max(0, 4 - live))
    ]
    over = charlie("POST", "/v1/webhooks/subscriptions", {"url": ONCE, "events": ["never.sent"]})
    cap.check(
        "create over the tenant's limit of 3",
        over.status_code == 409 and "3" in over.text,
        f"-> {answers} then {over.status_code}",
    )


def attack_send(world: World, work: Path, env: dict[str, str]) -> None:
    """Send-time vectors, stored behind the API's back (as if DNS changed after creation), then published."""
    import redis

    from deliveries.models import Attempt, Delivery
    from tests.support.canary import Canary
    from webhooks.models import Subscription

    cat = category("SSRF at send (canary on 127.0.0.1/::1)", "40")
    with ExitStack() as stack:
        probe = stack.enter_context(Canary())
        urls = send_urls(probe.port)
        canaries = [probe] + [stack.enter_context(Canary()) for _ in urls[1:]]
        targets = [url.replace(str(probe.port), str(c.port)) for url, c in zip(urls, canaries, strict=True)]
        # Nothing but these targets may be sent: pause everything else and drop what was queued for it.
        Subscription.objects.update(active=False)
        Delivery.objects.all().delete()
        redis.Redis.from_url(REDIS).flushdb()
        subs = [subscription(world.alice, url, events=[f"ssrf.t{n}"]) for n, url in enumerate(targets)]
        assert set(Subscription.objects.filter(active=True).values_list("url", flat=True)) == set(targets)
        worker_env = {**env, "ASIRI_RESOLVER": "tests.support.resolver.loopback_resolve"}
        worker = [sys.executable, "-m", "celery", "-A", "asiri", "worker", "--loglevel", "INFO", "--concurrency", "1",
                  "--without-mingle", "--without-gossip"]  # fmt: skip
        with process(worker, work / "worker.log", " ready.", worker_env):
            api = world.api("alice")
            for n in range(len(targets)):
                assert api("POST", "/v1/events", {"type": f"ssrf.t{n}", "data": {}}).status_code == 202
            for sub in subs[:5]:  # and the test operation, which takes the priority queue
                assert api("POST", f"/v1/webhooks/subscriptions/{sub.id}/test").status_code == 202
            deadline = time.monotonic() + 60
            while Attempt.objects.exclude(duration_ms=None).count() < len(targets) + 5:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        for sub, url, canary in zip(subs, urls, canaries, strict=True):
            errors = list(Attempt.objects.filter(delivery__subscription=sub).values_list("error", flat=True))
            ok = bool(errors) and all(e.startswith("Refused:") for e in errors) and canary.connections == 0
            cat.check(url.replace(f":{probe.port}", ":<canary>"), ok, f"-> {errors}, {canary.connections} connections")


def attack_lockout(world: World) -> None:
    cat = category("Issue 10 #7: 11 wrong admin passwords -> locked out")
    browser = Browser(world.base)
    answers = [browser.login("locked", "wrong-" + str(n)).status_code for n in range(11)]
    right = browser.login("locked", world.support_password)
    cat.check(
        "the right password after 11 wrong ones", right.status_code == 429, f"-> {answers} then {right.status_code}"
    )
    other = Browser(world.base).login("sam", world.support_password)
    cat.check("another user from the locked-out address", other.status_code == 429, f"-> {other.status_code}")


def check_logs(world: World, work: Path) -> None:
    cat = category("Issue 10 #1: key via Basic / query string never logged")
    logs = "".join(p.read_text(errors="replace") for p in work.glob("*.log"))
    key = world.logged_key
    for way in world.log_probes:
        cat.check(f"key as {way}", key not in logs and key.rsplit("_", 1)[1] not in logs)
    cat.check("requests were logged at all", "/v1/events" in logs)
    leaked = [k[:12] for k in world.every_key + world.every_secret if k in logs]
    cat.check("no key or secret made in the run appears in any log", not leaked, f"{leaked}")


def report(work: Path) -> int:
    rows = [("category", "tried", "blocked", "not blocked", "issue #10 tried")]
    failed = 0
    for cat in CATEGORIES.values():
        rows.append(
            (cat.name, str(cat.tried), str(cat.tried - len(cat.failures)), str(len(cat.failures)), cat.original)
        )
        failed += len(cat.failures)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    total = sum(c.tried for c in CATEGORIES.values())
    print(f"\n{total} vectors, {total - failed} blocked, {failed} not blocked ({date.today()}; logs in {work})")
    for cat in CATEGORIES.values():
        for failure in cat.failures:
            print(f"NOT BLOCKED [{cat.name}] {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
