#!/usr/bin/env python
"""Delivery benchmark on the real stack: PostgreSQL, Redis, a Celery worker and beat as the
Procfile starts them, gunicorn for the API, and receivers on 127.0.0.1: nginx (bench/nginx.py,
installed from Debian's packages if missing) for the ratio scenarios, the issue's baseline, and a
fast aiohttp receiver (bench/receiver.py) for the latency scenarios and the failing receiver.

    python bench/delivery.py [--events 5000] [--log-rows 1000000]   (or: make bench)
    python bench/delivery.py --only fanout500 orderedfail batchlatency   (a part)

Prints, in one run, each scenario beside a baseline measured in the same run, and the machine's
1-minute load average before and after each (also in bench/out/delivery.json):
  1. throughput: N published events (1 KB data) by 4 threads to one subscription on nginx,
     deliveries/s and publish→receipt latency (nginx's $msec), beside a bare asyncio client
     sending the same signed requests to the same nginx;
  1b. drain: the delivery side alone, N deliveries already in the table, to nginx;
  2. slow receivers: 1,000 deliveries to 10 endpoints that answer after 200 ms (aiohttp);
  3. fan-out: one event to 1,000 subscriptions, the API call and until all are received (aiohttp);
  4. POST /v1/events and GET …/deliveries latency with a large delivery table (page 1 vs 1,000);
  5. rate limit: 1b's backlog beside 500 deliveries to a subscription limited to 100/s, to nginx:
     the limited rate held, and the unlimited drain beside 1b's drain alone;
  6. bounded claim (`--only boundedclaim`): 5,000 deliveries to an unlimited subscription, alone
     and beside 100,000 due to one limited to 10/s, in alternating rounds: the unlimited drain
     (medians), the limited rate held, and every statement of the workers over 100 ms, timed by
     PostgreSQL's own log (aiohttp);
  7. ordered (`--only ordered`): 1,000 ordering keys × 5 events to one subscription against 5,000
     without keys, in alternating rounds (medians; aiohttp);
  8. batched (`--only batched`): scenario 1 published 100 events per event_publish_many call;
  9. fanout500: 500 subscriptions on nginx × N/500 events published through POST /v1/events,
     first publish → last receipt, beside the bare client's N requests to the same nginx;
  10. orderedfail: 200 ordering keys (`--fail-keys`) × 10 events to a receiver that fails every
     delivery's first attempt (aiohttp, /fail-first/): lost deliveries, keys received in publish
     order, followers attempted before their head succeeded, the wall time;
  11. batchlatency: 200 sequential POST /v1/events/batch (`--batch-calls`) of 100 events × 1 KB
     with `--log-rows` delivery rows in the table, p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.nginx import Nginx  # noqa: E402 (the path above first)

DB_NAME = "asiri_bench"
ENV = {
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
    "DJANGO_SECRET_KEY": "bench-only-secret-key-never-used-in-production-0123456789",
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "ASIRI_ALLOW_PRIVATE_URLS": "1",
    "ASIRI_REQUIRE_HTTPS": "0",
    "ASIRI_LOG_LEVEL": "WARNING",
    # The API's per-key limit (600/min by default: a bucket of 600 refilled at 10/s) would answer 429
    # within scenario 4's 1,200 requests.
    "ASIRI_RATE_LIMIT": "1000000/min",
    # Retries after 1, 2, 4 … s instead of 5 s, 5 min …, still 7 of them: scenario 10's receiver fails
    # every first attempt, and the others see no failures, so nothing else moves.
    "ASIRI_RETRY_SCHEDULE": "1,2,4,8,16,32,64",
}
os.environ.update(ENV)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asiri.settings")


def say(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Stack:
    """The service's processes, started as the Procfile starts them."""

    def __init__(self, workdir: Path, *, nginx: bool = False) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []
        self.web_port = free_port()
        self.fast_port = free_port()
        self.slow_ports = [free_port() for _ in range(10)]
        self.nginx = Nginx(workdir, free_port()) if nginx else None
        self.env = {
            **os.environ,
            "ASIRI_DATA_DIR": str(workdir),
            "PORT": str(self.web_port),
            "HOST": "127.0.0.1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        # Workers and beat log at INFO, as in production: a line per attempt is part of a delivery's cost,
        # and their ready lines are what start() waits for. The web stays at ENV's WARNING.
        self.worker_env = {**self.env, "ASIRI_LOG_LEVEL": "INFO"}

    def start(self, name: str, command: str, marker: str, env: dict | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "w")
        process = subprocess.Popen(  # noqa: S602 (Procfile lines are shell commands, as honcho runs them)
            command,
            shell=True,
            cwd=ROOT,
            env=env or self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        deadline = time.monotonic() + 60
        while marker not in (self.workdir / f"{name}.log").read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start:\n{(self.workdir / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def procfile(self, name: str) -> str:
        for line in (ROOT / "Procfile").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return line.split(":", 1)[1].strip()
        raise KeyError(name)

    def up(self) -> None:
        if self.nginx:
            self.nginx.start()
        ports = " ".join(map(str, [self.fast_port, *self.slow_ports]))
        slow = " ".join(map(str, self.slow_ports))
        self.start(
            "receiver", f"{sys.executable} bench/receiver.py --ports {ports} --slow-ports {slow}", "receiver ready"
        )
        self.start_service()

    def start_service(self) -> None:
        """web, worker and beat from their Procfile lines, each waited for until it says it is up."""
        self.start("web", self.procfile("web"), "Booting worker")
        self.start("worker", self.procfile("worker"), " ready.", self.worker_env)
        self.start("beat", self.procfile("beat"), "beat: Starting", self.worker_env)

    def down(self) -> None:
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, signal.SIGKILL)
        if self.nginx:
            self.nginx.stop()


def prepare_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    import redis

    redis.Redis.from_url(ENV["CELERY_BROKER_URL"]).flushdb()


def receiver_stats(stack: Stack, since: float = 0, times: bool = False, attempts: bool = False) -> dict:
    import requests

    params = {"since": since, **({"times": 1} if times else {}), **({"attempts": 1} if attempts else {})}
    return requests.get(f"http://127.0.0.1:{stack.fast_port}/stats", params=params, timeout=30).json()


def wait_for_unique(stack: Stack, count: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        unique = receiver_stats(stack)["unique"]
        if unique >= count:
            return time.time()
        if unique != last:
            last = unique
        time.sleep(0.05)
    raise SystemExit(f"only {last} of {count} deliveries arrived within {timeout:.0f} s")


async def bare_client(url: str, secret: str, count: int, in_flight: int, id_prefix: str = "base") -> float:
    """The baseline: the same signed requests from a bare asyncio client, no database; every one answered 2xx."""
    import aiohttp

    from deliveries.signing import signature_header

    body = json.dumps(
        {"id": "evt_x", "type": "invoice.paid", "timestamp": "2026-01-01T00:00:00.000Z", "data": {"blob": "x" * 1000}},
        separators=(",", ":"),
    ).encode()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def one(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            ts = int(time.time())
            webhook_id = f"{id_prefix}_{n}"
            headers = {
                "content-type": "application/json",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": signature_header([secret], webhook_id, ts, body),
            }
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status >= 300:
                    raise SystemExit(f"the bare client's request to {url} was answered {response.status}")

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:
        await asyncio.gather(*(one(session) for _ in range(in_flight)))
    return count / (time.monotonic() - started)


def scenario_throughput(stack: Stack, tenant, events: int, publishers: int, batch: int = 1) -> dict:
    """`events` published by `publishers` threads, one at a time or `batch` per event_publish_many call,
    to nginx; the bare client sends as many to the same nginx. Latency from nginx's `$msec`."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from deliveries.models import Delivery
    from deliveries.services import NewEvent, event_publish, event_publish_many
    from webhooks.services import subscription_create

    path = "/throughput" if batch == 1 else f"/batched-{batch}"
    # A type of its own: with scenario 1's, scenario 8's events also went to scenario 1's subscription, still
    # live in the same tenant, and it measured 5,000 receipts of 10,000 deliveries (its figures until
    # 2026-12-01, bench/RESULTS.md).
    event_type = "bench.throughput" if batch == 1 else f"bench.batched{batch}"
    subscription = subscription_create(tenant=tenant, url=stack.nginx.url(path), events=[event_type])
    data = {"blob": "x" * 1000}
    published: dict[str, float] = {}

    def publish(count: int) -> None:
        try:
            if batch > 1:
                for first in range(0, count, batch):
                    chunk = [NewEvent(event_type, data)] * min(batch, count - first)
                    for event in event_publish_many(tenant=tenant, events=chunk):
                        published[event.id] = time.time()
                return
            for _ in range(count):
                event = event_publish(tenant=tenant, event_type=event_type, data=data)
                published[event.id] = time.time()
        finally:
            connection.close()

    started = time.time()
    shares = [events // publishers + (1 if n < events % publishers else 0) for n in range(publishers)]
    with ThreadPoolExecutor(publishers) as pool:
        list(pool.map(publish, shares))
    publish_done = time.time()
    finished = stack.nginx.receipts.wait(path, events, timeout=600)
    receipts = stack.nginx.receipts.times(path)
    made = Delivery.objects.filter(event__type=event_type).count()
    if made != events:
        raise SystemExit(f"{events} events to one subscription made {made} deliveries: another subscription took them")
    latencies = []
    for delivery_id, event_id in Delivery.objects.filter(subscription=subscription).values_list("id", "event_id"):
        if delivery_id in receipts:
            latencies.append((receipts[delivery_id] - published[event_id]) * 1000)
    rate = events / (finished - started)
    baseline = asyncio.run(bare_client(stack.nginx.url(f"/baseline{path}"), subscription.secret, events, 50))
    return {
        "receiver": "nginx",
        "events": events,
        "deliveries_per_s": rate,
        "publish_per_s": events / (publish_done - started),
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "baseline_per_s": baseline,
        "ratio": rate / baseline,
    }


def queue_backlog(tenant, subscription, count: int, keys: int = 0) -> list[str]:
    """`count` deliveries to `subscription`, in the table but not due until release_backlog(); with `keys`,
    spread round-robin over that many ordering keys, in publish order within each."""
    from datetime import timedelta

    from django.utils import timezone

    from deliveries.models import Delivery, Event, next_positions

    later = timezone.now() + timedelta(days=1)
    event_type = subscription.events[0]
    key_of = (lambda n: f"key-{n % keys}") if keys else (lambda n: None)
    events = Event.objects.bulk_create(
        [Event(tenant=tenant, type=event_type, data={"blob": "x" * 1000}, ordering_key=key_of(n)) for n in range(count)]
    )
    positions = next_positions(count) if keys else [None] * count
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                tenant=tenant,
                event=e,
                subscription=subscription,
                event_type=e.type,
                # As a publish leaves them: each key's first one due when released, the rest waiting on it.
                next_attempt_at=later if n < keys or not keys else None,
                ordering_key=e.ordering_key,
                position=position,
            )
            for n, (e, position) in enumerate(zip(events, positions, strict=True))
        ]
    )
    return [d.id for d in deliveries]


def release_backlog(*subscriptions) -> None:
    from django.utils import timezone

    from deliveries.models import Delivery
    from deliveries.tasks import deliver

    Delivery.objects.filter(subscription__in=subscriptions, next_attempt_at__isnull=False).update(
        next_attempt_at=timezone.now()
    )
    for _ in range(2):
        deliver.delay()


def scenario_drain(stack: Stack, tenant, count: int) -> dict:
    """The delivery side alone: a backlog already in the table, released at once, to nginx (as scenario 1's
    baseline, which its ratio is to)."""
    from webhooks.services import subscription_create

    subscription = subscription_create(tenant=tenant, url=stack.nginx.url("/drain"), events=["bench.drain"])
    queue_backlog(tenant, subscription, count)
    started = time.time()
    release_backlog(subscription)
    finished = stack.nginx.receipts.wait("/drain", count, timeout=600)
    return {"receiver": "nginx", "deliveries": count, "deliveries_per_s": count / (finished - started)}


def scenario_ordered(stack: Stack, tenant, keys: int = 1000, per_key: int = 5, rounds: int = 3) -> dict:
    """keys × per_key deliveries with ordering keys, against the same count without, in alternating rounds."""
    from webhooks.services import subscription_create

    rates: dict[str, list[float]] = {"unordered": [], "ordered": []}
    for round_ in range(rounds):
        for kind in ("unordered", "ordered"):
            subscription = subscription_create(
                tenant=tenant,
                url=f"http://127.0.0.1:{stack.fast_port}/{kind}-{round_}",
                events=[f"bench.{kind}{round_}"],
            )
            queue_backlog(tenant, subscription, keys * per_key, keys=keys if kind == "ordered" else 0)
            before = receiver_stats(stack)["unique"]
            started = time.time()
            release_backlog(subscription)
            finished = wait_for_unique(stack, before + keys * per_key, timeout=600)
            rates[kind].append(keys * per_key / (finished - started))
    unordered, ordered = statistics.median(rates["unordered"]), statistics.median(rates["ordered"])
    return {**rates, "keys": keys, "per_key": per_key, "ratio": ordered / unordered}


def scenario_rate_limit(stack: Stack, tenant, count: int, limited_count: int = 500, rate: int = 100) -> dict:
    """Scenario 1b's backlog again, beside one to a subscription with `rate_limit`, both released at once,
    to nginx (as 1b, which its ratio is to)."""
    from webhooks.services import subscription_create

    free = subscription_create(tenant=tenant, url=stack.nginx.url("/ratelimit/free"), events=["bench.free"])
    limited = subscription_create(
        tenant=tenant, url=stack.nginx.url("/ratelimit/limited"), events=["bench.limited"], rate_limit=rate
    )
    free_ids, limited_ids = queue_backlog(tenant, free, count), queue_backlog(tenant, limited, limited_count)
    started = time.time()
    release_backlog(free, limited)
    stack.nginx.receipts.wait("/ratelimit/", count + limited_count, timeout=600)
    times = stack.nginx.receipts.times("/ratelimit/")
    free_times = sorted(times[i] for i in free_ids)
    limited_times = sorted(times[i] for i in limited_ids)
    busiest = max(sum(1 for t in limited_times[i:] if t - limited_times[i] < 1.0) for i in range(len(limited_times)))
    return {
        "receiver": "nginx",
        "deliveries": count,
        "free_per_s": count / (free_times[-1] - started),
        "limited": limited_count,
        "rate_limit": rate,
        "limited_per_s": (limited_count - 1) / (limited_times[-1] - limited_times[0]),
        "limited_busiest_second": busiest,
    }


BOUNDED_PREFIX = "dlv_bound"


class StatementLog:
    """The bench database's statements that ran `threshold_ms` or longer, from PostgreSQL's own log.

    `log_min_duration_statement` is set on the database (for sessions that start afterwards), so the
    server times every statement of the workers and beat exactly, from outside them; the bench's own
    session opts out. The log is read through the server (`pg_read_file`, as superuser), from the
    offset it had when the scenario began. Needs the server to log to a file the bench can name (the
    Debian default, /var/log/postgresql/postgresql-<major>-main.log).
    """

    LINE = re.compile(
        r"^\S+ \S+ \S+ \[(\d+)\] \S*@(\S+) LOG:  duration: ([\d.]+) ms  (?:statement|execute [^:]*): (.*)$"
    )

    def __init__(self, path: str, threshold_ms: int) -> None:
        self.path, self.threshold_ms, self.offset = path, threshold_ms, 0

    def start(self, timeout: float = 60) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SET log_min_duration_statement = -1")
            cursor.execute(f"ALTER DATABASE {DB_NAME} SET log_min_duration_statement = {int(self.threshold_ms)}")
            cursor.execute("SELECT now(), (pg_stat_file(%s)).size", [self.path])
            altered, self.offset = cursor.fetchone()
            # Sessions opened before the ALTER do not log: wait until the workers' have all closed
            # (each task closes its connection, and nothing is due now).
            deadline = time.monotonic() + timeout
            while True:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_start < %s "
                    "AND pid <> pg_backend_pid()",
                    [DB_NAME, altered],
                )
                if cursor.fetchone()[0] == 0:
                    return
                if time.monotonic() > deadline:
                    raise SystemExit("sessions opened before log_min_duration_statement was set are still open")
                time.sleep(0.2)

    def stop(self) -> list[tuple[float, str]]:
        """(milliseconds, text) of every statement logged since start(), by the database's other sessions."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {DB_NAME} RESET log_min_duration_statement")
            cursor.execute("SELECT pg_read_file(%s, %s, (pg_stat_file(%s)).size - %s)", [self.path, self.offset] * 2)
            text = cursor.fetchone()[0]
        statements: list[list] = []
        for line in text.splitlines():
            match = self.LINE.match(line)
            if match and match[2] == DB_NAME:
                statements.append([float(match[3]), match[4]])
            elif line.startswith("\t") and statements and not self.LINE.match(line):
                statements[-1][1] += " " + line.strip()
            elif match:
                statements.append(None)  # another database's: continuation lines are not ours
        return [(ms, " ".join(sql.split())) for ms, sql in filter(None, statements)]


def statement_shape(sql: str) -> str:
    """A statement's text with its literals taken out: one shape per query, whatever its values."""
    sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
    sql = re.sub(r"\b\d+(?:\.\d+)?\b", "?", sql)
    return re.sub(r"\?(?:, \?)*", "…", sql)


def fill_due(tenant_id: int, subscription_id: str, event_type: str, rows: int) -> None:
    """`rows` deliveries to one subscription straight in SQL, parked (due tomorrow); created_at
    10 ms apart, older than anything else, which park_due(…, due=True) makes their due time."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO deliveries_event (id, tenant_id, type, data, created_at) "
            "VALUES ('evt_bound', %s, %s, '{\"blob\": \"bounded\"}', now())",
            [tenant_id, event_type],
        )
        cursor.execute(
            """
            INSERT INTO deliveries_delivery (id, tenant_id, event_id, subscription_id, event_type, status, is_test,
                attempt_count, created_at, next_attempt_at, series_start, failure_reason)
            SELECT %s || lpad(g::text, 8, '0'), %s, 'evt_bound', %s, %s, 'pending', false, 0,
                now() - interval '1 hour' + g * interval '10 milliseconds', now() + interval '1 day', 0, ''
            FROM generate_series(1, %s) AS g
            """,
            [BOUNDED_PREFIX, tenant_id, subscription_id, event_type, rows],
        )


def park_due(subscription_id: str, *, due: bool, batch: int = 5000, passes: int = 200) -> None:
    """Make a subscription's unfinished deliveries due (each since its created_at) or not due, then
    settle the table, so the rewritten rows leave no work for autovacuum during the timing.

    Rows a worker has leased are left to it, and the rest are taken in batches that skip any a
    worker holds: the bench never waits for a worker's lock nor makes one wait long for its own.
    Parking goes twice, for the rows a claim gave back (with send times) while the first went.
    """
    from django.conf import settings
    from django.db import connection

    from deliveries.claims import SCHEDULE_HORIZON

    if due:
        new, which = "created_at", "next_attempt_at > now() + interval '12 hours'"
    else:
        # Due, or given a send time by a claim (at most the horizon ahead); a lease ends later.
        assert settings.ASIRI_DELIVERY_LEASE > SCHEDULE_HORIZON + 10
        new, which = "now() + interval '1 day'", f"next_attempt_at < now() + interval '{SCHEDULE_HORIZON + 5} s'"
    with connection.cursor() as cursor:
        for sweep in range(1 if due else 2):
            if sweep:
                time.sleep(1)
            for _ in range(passes):
                cursor.execute(
                    f"UPDATE deliveries_delivery SET next_attempt_at = {new} WHERE id IN (SELECT id FROM "
                    f"deliveries_delivery WHERE subscription_id = %s AND status IN ('pending', 'retrying') "
                    f"AND {which} LIMIT %s FOR UPDATE SKIP LOCKED)",
                    [subscription_id, batch],
                )
                if cursor.rowcount == 0:
                    break
        cursor.execute("VACUUM (ANALYZE) deliveries_delivery")


def debian_server_log() -> str:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    return f"/var/log/postgresql/postgresql-{major}-main.log"


def busiest_second(times: list[float]) -> int:
    ordered, most, first = sorted(times), 0, 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def scenario_bounded_claim(
    stack: Stack,
    tenant,
    *,
    limited_count: int = 100_000,
    free_count: int = 5000,
    rate: int = 10,
    rounds: int = 3,
    tail: float = 10.0,
    pg_log: str,
    threshold_ms: int = 10,
) -> dict:
    """A large backlog to a rate-limited subscription must not slow anyone else's claims.

    Rounds alternate: 5,000 deliveries to an unlimited subscription alone (the 100,000 parked, not
    due), then the same beside the 100,000 made due. A beside round runs `tail` seconds past the
    unlimited drain, while only the limited one has work. Every statement of the workers and beat
    over `threshold_ms` is read from the server log.
    """
    from django.db import connection

    from webhooks.models import Subscription
    from webhooks.services import subscription_create

    limited = subscription_create(
        tenant=tenant,
        url=f"http://127.0.0.1:{stack.fast_port}/bounded-limited",
        events=["bench.bounded"],
        rate_limit=rate,
    )
    statements = StatementLog(pg_log, threshold_ms)
    statements.start()
    load = [Path("/proc/loadavg").read_text().split()[0]]
    free_subscriptions = []
    alone, beside, limited_times, limited_spans, during_drain = [], [], [], [], []
    try:
        fill_due(tenant.id, limited.id, "bench.bounded", limited_count)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) deliveries_delivery")
        for n in range(rounds * 2):
            with_backlog = n % 2 == 1
            free = subscription_create(
                tenant=tenant, url=f"http://127.0.0.1:{stack.fast_port}/bounded-free{n}", events=[f"bench.free{n}"]
            )
            free_subscriptions.append(free)
            free_ids = queue_backlog(tenant, free, free_count)
            if with_backlog:
                park_due(limited.id, due=True)
            before = receiver_stats(stack)["unique"]
            started = time.time()
            release_backlog(free)
            finished = wait_for_unique(stack, before + free_count, timeout=600)
            (beside if with_backlog else alone).append(free_count / (finished - started))
            if with_backlog:
                time.sleep(tail)
                park_due(limited.id, due=False)
                time.sleep(1)  # what was in flight arrives
                times = receiver_stats(stack, since=started, times=True)["times"]
                sent = [t for delivery_id, t in times.items() if delivery_id.startswith(BOUNDED_PREFIX)]
                limited_times += sent
                during_drain.append(busiest_second([t for t in sent if t <= finished]))
                limited_spans.append((len(sent), time.time() - 1 - started))
            assert not set(free_ids) - set(receiver_stats(stack, since=started, times=True)["times"])
    finally:
        load.append(Path("/proc/loadavg").read_text().split()[0])
        logged = statements.stop()
        # Leave the table as it was: the limited subscription, its backlog and the free rounds go.
        park_due(limited.id, due=False)
        time.sleep(1)
        ids = [limited.id, *(s.id for s in free_subscriptions)]
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM deliveries_attempt WHERE delivery_id IN "
                "(SELECT id FROM deliveries_delivery WHERE subscription_id = ANY(%s))",
                [ids],
            )
            cursor.execute("DELETE FROM deliveries_delivery WHERE subscription_id = ANY(%s) RETURNING event_id", [ids])
            cursor.execute("DELETE FROM deliveries_event WHERE id = ANY(%s)", [list({r[0] for r in cursor.fetchall()})])
            cursor.execute("VACUUM (ANALYZE) deliveries_delivery")
            cursor.execute("VACUUM (ANALYZE) deliveries_attempt")
        Subscription.objects.filter(pk__in=ids).delete()
    shapes: dict[str, dict] = {}
    for ms, sql in logged:
        shape = shapes.setdefault(statement_shape(sql), {"max_ms": 0.0, "count": 0, "over_100": 0, "text": sql})
        shape["count"] += 1
        shape["over_100"] += ms > 100
        if ms > shape["max_ms"]:
            shape["max_ms"], shape["text"] = ms, sql
    return {
        "limited": limited_count,
        "rate_limit": rate,
        "free": free_count,
        "alone_per_s": alone,
        "beside_per_s": beside,
        "ratio": statistics.median(beside) / statistics.median(alone),
        "limited_per_s": sum(n for n, _ in limited_spans) / sum(s for _, s in limited_spans),
        "limited_sent": len(limited_times),
        "limited_busiest_second": busiest_second(limited_times),
        "limited_busiest_during_drain": max(during_drain),
        "load": load,
        "threshold_ms": threshold_ms,
        "statements_logged": len(logged),
        "longest_ms": max((ms for ms, _ in logged), default=0.0),
        "over_100": [(ms, sql[:200]) for ms, sql in sorted(logged, reverse=True) if ms > 100],
        "shapes": sorted(shapes.values(), key=lambda s: -s["max_ms"]),
    }


def scenario_slow(stack: Stack, tenant, count: int = 1000) -> dict:
    from deliveries.services import event_publish
    from webhooks.services import subscription_create

    for n, port in enumerate(stack.slow_ports):
        subscription_create(tenant=tenant, url=f"http://127.0.0.1:{port}/slow{n}", events=[f"bench.slow{n}"])
    per_endpoint = count // len(stack.slow_ports)
    before = receiver_stats(stack)["unique"]
    started = time.time()
    for _ in range(per_endpoint):
        for n in range(len(stack.slow_ports)):
            event_publish(tenant=tenant, event_type=f"bench.slow{n}", data={"n": n})
    finished = wait_for_unique(stack, before + count, timeout=600)
    return {"deliveries": count, "endpoints": len(stack.slow_ports), "deliveries_per_s": count / (finished - started)}


def scenario_fanout(stack: Stack, tenant, api_key: str, subscriptions: int = 1000) -> dict:
    import requests

    from webhooks.models import Subscription

    Subscription.objects.bulk_create(
        [
            Subscription(tenant=tenant, url=f"http://127.0.0.1:{stack.fast_port}/fan{n}", events=["bench.fanout"])
            for n in range(subscriptions)
        ]
    )
    before = receiver_stats(stack)["unique"]
    started = time.time()
    response = requests.post(
        f"http://127.0.0.1:{stack.web_port}/v1/events",
        timeout=60,
        headers={"Authorization": f"Bearer {api_key}"},
        json={"type": "bench.fanout", "data": {"hello": "everyone"}},
    )
    published = time.time()
    assert response.status_code == 202 and response.json()["deliveries"] == subscriptions, response.text
    finished = wait_for_unique(stack, before + subscriptions, timeout=120)
    return {
        "subscriptions": subscriptions,
        "publish_ms": (published - started) * 1000,
        "all_received_s": finished - started,
    }


def fill_log(subscription_id: str, tenant_id: int, rows: int, name: str = "fill") -> None:
    """Bulk rows straight in SQL: a million deliveries (with one attempt each) in seconds. Their ids
    start `dlv_<name>`, so a second fill in the same database takes another name."""
    from django.db import connection

    event_id, delivery_prefix = f"evt_bench{name}", f"dlv_{name}"
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO deliveries_event (id, tenant_id, type, data, created_at) "
            "VALUES (%s, %s, 'bench.fill', '{}', now())",
            [event_id, tenant_id],
        )
        batch = 200_000
        for start in range(0, rows, batch):
            cursor.execute(
                """
                INSERT INTO deliveries_delivery (id, tenant_id, event_id, subscription_id, event_type, status,
                    is_test, attempt_count, response_status_code, created_at, last_attempt_at, series_start,
                    failure_reason)
                SELECT %s || lpad(g::text, 12, '0'), %s, %s, %s, 'bench.fill', 'succeeded',
                    false, 1, 200, now() - (g || ' seconds')::interval, now() - (g || ' seconds')::interval, 0, ''
                FROM generate_series(%s, %s) AS g
                """,
                [delivery_prefix, tenant_id, event_id, subscription_id, start, min(start + batch, rows) - 1],
            )
            cursor.execute(
                """
                INSERT INTO deliveries_attempt (delivery_id, number, started_at, duration_ms, response_status_code,
                    response_body, response_headers, error)
                SELECT %s || lpad(g::text, 12, '0'), 1, now() - (g || ' seconds')::interval, 12, 200, '', '{}', ''
                FROM generate_series(%s, %s) AS g
                """,
                [delivery_prefix, start, min(start + batch, rows) - 1],
            )
            say(f"    {min(start + batch, rows):,} rows")
        # Settle the table as a long-lived one would be, so autovacuum does not run during the timing.
        cursor.execute("VACUUM (ANALYZE) deliveries_delivery")
        cursor.execute("VACUUM (ANALYZE) deliveries_attempt")


def scenario_api_latency(stack: Stack, tenant, api_key: str, rows: int, samples: int = 200) -> dict:
    import requests

    from core.api import KeysetPagination
    from deliveries.models import Delivery
    from webhooks.services import subscription_create

    subscription = subscription_create(
        tenant=tenant, url=f"http://127.0.0.1:{stack.fast_port}/log", events=["bench.log"]
    )
    say(f"  filling the delivery table with {rows:,} rows")
    fill_log(subscription.id, tenant.id, rows)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    base = f"http://127.0.0.1:{stack.web_port}/v1/webhooks/subscriptions/{subscription.id}/deliveries"
    row = Delivery.objects.filter(subscription=subscription).order_by("-created_at", "-id")[49_999]
    page_1000 = f"{base}?cursor={KeysetPagination.cursor_for(row)}"

    def timed(call) -> list[float]:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            response = call()
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code in (200, 202), response.text[:300]
        return times

    results = {}
    for name, call in {
        "log page 1": lambda: session.get(base),
        "log page 1,000": lambda: session.get(page_1000),
        "POST /v1/events": lambda: session.post(
            f"http://127.0.0.1:{stack.web_port}/v1/events", json={"type": "bench.log", "data": {"n": 1}}
        ),
    }.items():
        timed(call)  # warm up
        times = timed(call)
        results[name] = {"p50_ms": statistics.median(times), "p99_ms": percentile(times, 0.99)}
    results["rows"] = rows
    return results


def scenario_fanout500(stack: Stack, deliveries: int, subscriptions: int = 500) -> dict:
    """`subscriptions` on nginx (a path each) × `deliveries // subscriptions` events published one per
    `POST /v1/events` through gunicorn, first publish → last receipt; then the bare client's as many
    requests, 50 in flight, to the same nginx.

    In a tenant of its own: publishing matches every live subscription of the tenant, and the other
    scenarios' (scenario 3 alone has 1,000) are not part of this one.
    """
    import requests

    from tenants.models import ApiKey, Tenant
    from webhooks.models import Subscription

    tenant = Tenant.objects.create(slug="bench-fanout500", name="Benchmark fan-out 500")
    _, api_key = ApiKey.issue(tenant=tenant, scopes=["events:write"])
    created = Subscription.objects.bulk_create(
        [
            Subscription(tenant=tenant, url=stack.nginx.url(f"/fanout500/{n}"), events=["bench.fanout500"])
            for n in range(subscriptions)
        ]
    )
    events = max(1, deliveries // subscriptions)
    total = events * subscriptions
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    body = {"type": "bench.fanout500", "data": {"blob": "x" * 1000}}
    publish_ms = []
    started = time.time()
    for _ in range(events):
        sent = time.perf_counter()
        response = session.post(f"http://127.0.0.1:{stack.web_port}/v1/events", json=body, timeout=60)
        publish_ms.append((time.perf_counter() - sent) * 1000)
        assert response.status_code == 202 and response.json()["deliveries"] == subscriptions, response.text[:300]
    published = time.time()
    finished = stack.nginx.receipts.wait("/fanout500/", total, timeout=600)
    rate = total / (finished - started)
    baseline = asyncio.run(
        bare_client(stack.nginx.url("/baseline/fanout500"), created[0].secret, total, 50, id_prefix="fan500")
    )
    return {
        "receiver": "nginx",
        "subscriptions": subscriptions,
        "events": events,
        "deliveries": total,
        "paths_reached": len(stack.nginx.receipts.paths("/fanout500/")),
        "publish_s": published - started,
        "publish_ms_p50": statistics.median(publish_ms),
        "deliveries_per_s": rate,
        "baseline_per_s": baseline,
        "ratio": rate / baseline,
    }


def scenario_ordered_fail(stack: Stack, tenant, keys: int = 200, per_key: int = 10, timeout: float = 300) -> dict:
    """keys × per_key events with ordering keys to one subscription whose receiver (aiohttp, /fail-first/)
    answers 500 to each delivery's first attempt: order, loss and holding-back checked.

    Published round-robin over the keys, 100 per event_publish_many call, so each key's events are
    spread over the whole run. Waits until every delivery is final in the database (one that failed
    for good is lost, not a hang); the wall time ends at the last success at the receiver. Publish
    order is the event's `n`, not its position, so the positions are checked too. From the receiver's
    arrival order (one event loop: a total order): a key is in order if its deliveries' successful
    requests came in publish order, and a follower was attempted early if any request for it came
    before its head's success.
    """
    from deliveries.models import Attempt, Delivery, DeliveryStatus
    from deliveries.services import NewEvent, event_publish_many
    from webhooks.services import subscription_create

    subscription = subscription_create(
        tenant=tenant, url=f"http://127.0.0.1:{stack.fast_port}/fail-first/ordered", events=["bench.orderedfail"]
    )
    count = keys * per_key
    new = [NewEvent("bench.orderedfail", {"n": n}, ordering_key=f"key-{n % keys}") for n in range(count)]
    started = time.time()
    for first in range(0, count, 100):
        event_publish_many(tenant=tenant, events=new[first : first + 100])
    final = [DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED]
    deadline = time.monotonic() + timeout
    # The receiver sees a success before the worker writes it: wait for the database's word.
    while Delivery.objects.filter(subscription=subscription).exclude(status__in=final).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    log = receiver_stats(stack, attempts=True)["attempts"]
    finished = max((t for _, t, status in log if status < 300), default=time.time())
    first_request, success, requests_per = {}, {}, Counter()
    for index, (webhook_id, _, status) in enumerate(log):
        first_request.setdefault(webhook_id, index)
        requests_per[webhook_id] += 1
        if status < 300:
            success.setdefault(webhook_id, index)
    rows = list(
        Delivery.objects.filter(subscription=subscription).values_list(
            "id", "ordering_key", "position", "status", "event__data"
        )
    )
    chains = defaultdict(list)
    for delivery_id, ordering_key, position, _, data in rows:
        chains[ordering_key].append((data["n"], position, delivery_id))
    keys_in_order, out_of_order, early, positions_in_order = 0, 0, 0, 0
    for chain in chains.values():
        chain.sort()
        ids = [delivery_id for _, _, delivery_id in chain]
        positions_in_order += all(a[1] < b[1] for a, b in pairwise(chain))
        swapped = 0
        for head, follower in pairwise(ids):
            if head in success and follower in success and success[follower] < success[head]:
                swapped += 1
            if follower in first_request and (head not in success or first_request[follower] < success[head]):
                early += 1
        out_of_order += swapped
        keys_in_order += not swapped and all(delivery_id in success for delivery_id in ids)
    succeeded = sum(1 for *_, status, _ in rows if status == DeliveryStatus.SUCCEEDED)
    first_attempts = Counter(
        Attempt.objects.filter(delivery__subscription=subscription, number=1).values_list(
            "response_status_code", flat=True
        )
    )
    return {
        "keys": keys,
        "per_key": per_key,
        "deliveries": count,
        "created": len(rows),
        "wall_s": finished - started,
        "deliveries_per_s": count / (finished - started),
        "received": len(success),
        "succeeded": succeeded,
        "lost": count - succeeded,
        "keys_in_order": keys_in_order,
        "out_of_order_pairs": out_of_order,
        "attempted_before_head_succeeded": early,
        "positions_in_publish_order": positions_in_order,
        "requests_per_delivery": {str(k): v for k, v in sorted(Counter(requests_per.values()).items())},
        "first_attempt_statuses": {str(k): v for k, v in first_attempts.items()},
        "retry_schedule": os.environ["ASIRI_RETRY_SCHEDULE"],
    }


def scenario_batch_latency(stack: Stack, tenant, api_key: str, rows: int, calls: int = 200, size: int = 100) -> dict:
    """`calls` sequential `POST /v1/events/batch` of `size` events × 1 KB through gunicorn, with `rows`
    delivery rows in the table (filled as scenario 4 fills them, only what is missing if it ran);
    the events' deliveries go to nginx while the timing runs, as they would in service."""
    import requests

    from deliveries.models import Delivery
    from webhooks.services import subscription_create

    subscription = subscription_create(tenant=tenant, url=stack.nginx.url("/batchlatency"), events=["bench.batch"])
    existing = Delivery.objects.count()
    if existing < rows:
        say(f"  filling the delivery table with {rows - existing:,} rows ({existing:,} there already)")
        fill_log(subscription.id, tenant.id, rows - existing, name="batchfill")
    in_table = Delivery.objects.count()
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    body = json.dumps({"events": [{"type": "bench.batch", "data": {"blob": "x" * 1000}}] * size}).encode()
    url = f"http://127.0.0.1:{stack.web_port}/v1/events/batch"
    warm_up = 10
    times = []
    for n in range(warm_up + calls):
        started = time.perf_counter()
        response = session.post(url, data=body, timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 202 and len(response.json()["results"]) == size, response.text[:300]
        if n >= warm_up:
            times.append(elapsed)
    # Let the deliveries drain, so the next scenario starts without them.
    stack.nginx.receipts.wait("/batchlatency", (warm_up + calls) * size, timeout=600)
    return {
        "receiver": "nginx",
        "rows_in_table": in_table,
        "calls": calls,
        "events_per_call": size,
        "body_bytes": len(body),
        "p50_ms": statistics.median(times),
        "p99_ms": percentile(times, 0.99),
        "max_ms": max(times),
    }


NGINX_SCENARIOS = {"throughput", "drain", "ratelimit", "batched", "fanout500", "batchlatency"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--log-rows", type=int, default=1_000_000)
    parser.add_argument("--publishers", type=int, default=4, help="threads publishing events in scenario 1")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind in scenarios 6 and 7")
    parser.add_argument("--fail-keys", type=int, default=200, help="ordering keys (× 10 events) in scenario 10")
    parser.add_argument("--batch-calls", type=int, default=200, help="timed POST /v1/events/batch in scenario 11")
    parser.add_argument(
        "--pg-log", help="the server's log file, as the server names it (default: Debian's, for its version)"
    )
    scenarios = [
        "throughput",
        "drain",
        "slow",
        "fanout",
        "api",
        "ratelimit",
        "boundedclaim",
        "ordered",
        "batched",
        "fanout500",
        "orderedfail",
        "batchlatency",
    ]
    parser.add_argument("--only", choices=scenarios, nargs="*")
    args = parser.parse_args()
    wanted = set(args.only or scenarios)

    say("ASIRI Webhooks delivery benchmark")
    say(f"  machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    say("  preparing a fresh benchmark database")
    prepare_database()
    import django

    django.setup()
    from tenants.models import ApiKey, Tenant

    tenant = Tenant.objects.create(slug="bench", name="Benchmark")
    _, api_key = ApiKey.issue(tenant=tenant, scopes=["webhooks:read", "audit:read", "events:write"])
    workdir = Path(tempfile.mkdtemp(prefix="asiri-bench-"))
    stack = Stack(workdir, nginx=bool(wanted & NGINX_SCENARIOS))
    say(
        "  starting "
        + ("nginx, " if stack.nginx else "")
        + "the aiohttp receiver, web (gunicorn), worker and beat as the Procfile does"
    )
    stack.up()
    report = {}

    def measured(name: str, call) -> dict:
        """The scenario's result, with the machine's 1-minute load average before and after it."""
        before = os.getloadavg()[0]
        result = report[name] = call()
        result["load_1min"] = {"before": before, "after": os.getloadavg()[0]}
        say(f"   (machine's 1-minute load average: {before:.2f} before, {result['load_1min']['after']:.2f} after)")
        return result

    try:
        if "throughput" in wanted:
            say(f"\n1. Throughput: {args.events:,} events (1 KB data) to one subscription, received by nginx")
            r = measured("throughput", lambda: scenario_throughput(stack, tenant, args.events, args.publishers))
            say(f"   ours:     {r['deliveries_per_s']:8.0f} deliveries/s")
            say(f"             (published by {args.publishers} threads at {r['publish_per_s']:.0f} events/s)")
            say(
                f"   baseline: {r['baseline_per_s']:8.0f} requests/s   (bare asyncio client, 50 in flight, no DB, "
                "to the same nginx)"
            )
            say(
                f"   ratio ours/baseline: {r['ratio']:.2f} (target ≥ 1.5 × 0.05 = 0.075)   latency publish→receipt "
                f"(nginx $msec) p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
            )
        if "drain" in wanted:
            say(f"\n1b. Delivery side alone: a backlog of {args.events:,} deliveries to one subscription, to nginx")
            r = measured("drain", lambda: scenario_drain(stack, tenant, args.events))
            ratio = r["deliveries_per_s"] / report["throughput"]["baseline_per_s"] if "throughput" in report else 0
            say(
                f"   {r['deliveries_per_s']:.0f} deliveries/s"
                + (f"  (ratio to the baseline: {ratio:.2f})" if ratio else "")
            )
        if "slow" in wanted:
            say("\n2. Slow receivers: 1,000 deliveries to 10 endpoints answering after 200 ms")
            r = measured("slow", lambda: scenario_slow(stack, tenant))
            say(f"   {r['deliveries_per_s']:.0f} deliveries/s  (a one-at-a-time sender would do 5/s per endpoint)")
        if "fanout" in wanted:
            say("\n3. Fan-out: one event to 1,000 subscriptions")
            r = measured("fanout", lambda: scenario_fanout(stack, tenant, api_key))
            say(
                f"   POST /v1/events took {r['publish_ms']:.0f} ms; all {r['subscriptions']} received after "
                f"{r['all_received_s']:.2f} s"
            )
        if "api" in wanted:
            say(f"\n4. API latency with {args.log_rows:,} delivery rows")
            r = measured("api", lambda: scenario_api_latency(stack, tenant, api_key, args.log_rows))
            for name in ("log page 1", "log page 1,000", "POST /v1/events"):
                say(f"   {name:16s} p50 {r[name]['p50_ms']:6.1f} ms   p99 {r[name]['p99_ms']:6.1f} ms")
            ratio = r["log page 1,000"]["p50_ms"] / r["log page 1"]["p50_ms"]
            say(f"   page 1,000 / page 1 (p50): {ratio:.2f}")
        if "ratelimit" in wanted:
            say(
                f"\n5. Rate limit: {args.events:,} deliveries as in 1b, beside 500 to a subscription limited to 100/s, "
                "to nginx"
            )
            r = measured("ratelimit", lambda: scenario_rate_limit(stack, tenant, args.events))
            say(
                f"   limited: {r['limited_per_s']:.1f} deliveries/s (limit {r['rate_limit']}), "
                f"at most {r['limited_busiest_second']} in any one second"
            )
            line = f"   the unlimited one beside it: {r['free_per_s']:.0f} deliveries/s"
            if "drain" in report:
                ratio = r["free_per_s"] / report["drain"]["deliveries_per_s"]
                line += f"  (ratio to 1b, the same backlog alone: {ratio:.2f})"
            say(line)
        if "boundedclaim" in wanted:
            say(
                "\n6. Bounded claim: 5,000 deliveries to an unlimited subscription, alone and beside 100,000 due to "
                "one limited to 10/s"
            )
            r = measured(
                "boundedclaim",
                lambda: scenario_bounded_claim(
                    stack, tenant, rounds=args.rounds, pg_log=args.pg_log or debian_server_log()
                ),
            )
            for name, key in (("alone (baseline)", "alone_per_s"), ("beside the 100,000", "beside_per_s")):
                rates = " / ".join(f"{rate:.0f}" for rate in r[key])
                say(f"   unlimited, {name:19s} {rates} deliveries/s, median {statistics.median(r[key]):.0f}")
            say(f"   ratio beside / alone (medians): {r['ratio']:.2f}   (1-min load {' → '.join(r['load'])})")
            say(
                f"   limited: {r['limited_per_s']:.1f} deliveries/s (limit {r['rate_limit']}), "
                f"{r['limited_sent']} sent, at most {r['limited_busiest_second']} in any one second "
                f"({r['limited_busiest_during_drain']} while the unlimited one drained)"
            )
            say(
                f"   statements of the workers (server log, >= {r['threshold_ms']} ms): {r['statements_logged']}; "
                f"longest {r['longest_ms']:.0f} ms; {len(r['over_100'])} over 100 ms"
            )
            for shape in r["shapes"][:8]:
                say(
                    f"     max {shape['max_ms']:7.1f} ms, {shape['count']:5d} logged, "
                    f"{shape['over_100']:5d} over 100 ms: {shape['text'][:200]}"
                )
        if "batched" in wanted:
            say(
                f"\n8. Batched: {args.events:,} events to one subscription, published 100 per event_publish_many "
                "call, received by nginx"
            )
            r = measured("batched", lambda: scenario_throughput(stack, tenant, args.events, 1, batch=100))
            say(
                f"   {r['deliveries_per_s']:.0f} deliveries/s (published at {r['publish_per_s']:.0f} events/s), "
                f"p50 {r['p50_ms']:.0f} ms (nginx $msec); bare client to the same nginx {r['baseline_per_s']:.0f}/s; "
                f"ratio {r['ratio']:.2f} (target ≥ 0.33)"
            )
        if "ordered" in wanted:
            say("\n7. Ordered: 1,000 ordering keys × 5 events to one subscription, beside 5,000 without keys")
            r = measured("ordered", lambda: scenario_ordered(stack, tenant, rounds=args.rounds))
            for kind in ("unordered", "ordered"):
                rates = " / ".join(f"{rate:.0f}" for rate in r[kind])
                say(f"   {kind:9s} {rates} deliveries/s, median {statistics.median(r[kind]):.0f}")
            say(f"   ratio ordered / unordered (medians): {r['ratio']:.2f}  (target ≥ 0.5)")
        if "fanout500" in wanted:
            per = max(1, args.events // 500)
            say(f"\n9. Fan-out 500: 500 subscriptions × {per} events through POST /v1/events, received by nginx")
            r = measured("fanout500", lambda: scenario_fanout500(stack, args.events))
            say(
                f"   ours:     {r['deliveries_per_s']:8.0f} deliveries/s  ({r['deliveries']:,} deliveries, first "
                f"publish → last receipt; the {r['events']} POSTs took {r['publish_s']:.2f} s, p50 "
                f"{r['publish_ms_p50']:.0f} ms; {r['paths_reached']} distinct paths reached)"
            )
            say(f"   baseline: {r['baseline_per_s']:8.0f} requests/s  (bare asyncio client, 50 in flight, same nginx)")
            say(f"   ratio ours/baseline: {r['ratio']:.2f}  (target ≥ 0.5)")
        if "orderedfail" in wanted:
            say(
                f"\n10. Ordered under failure: {args.fail_keys} ordering keys × 10 events to one subscription whose "
                "receiver (aiohttp) fails each delivery's first attempt"
            )
            r = measured("orderedfail", lambda: scenario_ordered_fail(stack, tenant, keys=args.fail_keys))
            say(
                f"   {r['deliveries']:,} deliveries in {r['wall_s']:.1f} s ({r['deliveries_per_s']:.0f}/s; retry "
                f"schedule {r['retry_schedule']} s, ±20 %); succeeded {r['succeeded']:,}, lost {r['lost']} "
                "(target 0)"
            )
            say(
                f"   keys with every event received in publish order: {r['keys_in_order']} of {r['keys']}; "
                f"out-of-order pairs {r['out_of_order_pairs']}; followers attempted before their head succeeded "
                f"{r['attempted_before_head_succeeded']}; keys whose positions follow publish order "
                f"{r['positions_in_publish_order']}"
            )
            say(
                f"   requests per delivery at the receiver {r['requests_per_delivery']}; first attempts answered "
                f"{r['first_attempt_statuses']}"
            )
        if "batchlatency" in wanted:
            say(
                f"\n11. Batch publishing latency: {args.batch_calls} sequential POST /v1/events/batch of 100 events × "
                f"1 KB with {args.log_rows:,} delivery rows (deliveries to nginx)"
            )
            r = measured(
                "batchlatency",
                lambda: scenario_batch_latency(stack, tenant, api_key, args.log_rows, calls=args.batch_calls),
            )
            say(
                f"   p50 {r['p50_ms']:.1f} ms (target < 100 ms), p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms; "
                f"{r['rows_in_table']:,} delivery rows in the table; {r['body_bytes']:,}-byte bodies"
            )
    finally:
        stack.down()
        (ROOT / "bench" / "out").mkdir(exist_ok=True)
        (ROOT / "bench" / "out" / "delivery.json").write_text(json.dumps(report, indent=2))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
