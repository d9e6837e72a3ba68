"""Settings for ASIRI Webhooks, read from the environment only (see README "Configuration")."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from core.env import (
    env_address,
    env_bool,
    env_choice,
    env_delays,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_redis_url,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the embedded default writes (SQLite file, Celery's filesystem queue, beat
# schedule, collected static files) lives here, never in the working directory.
DATA_DIR = Path(env_str("ASIRI_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off (set DJANGO_DEBUG=1 for local use)."
        )
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"  # noqa: S105 (DEBUG only)
elif not DEBUG and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-")):
    # Django's own `check --deploy` rule (security.W009), enforced at start: a guessable key forges
    # sessions (the admin) and paging cursors.
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be at least 50 characters with at least 5 different ones, and not Django's "
        "'django-insecure-' placeholder; make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "tenants",
    "webhooks",
    "deliveries",
    "asiri",  # the admin that composes the apps (asiri/admin.py)
]

MIDDLEWARE = [
    "asiri.proxies.TrustedProxyMiddleware",
    "asiri.health.HealthCheckMiddleware",
    "asiri.metrics.MetricsMiddleware",
    "asiri.logs.RequestLogMiddleware",
    "asiri.limits.RequestBodyLimitMiddleware",
    "asiri.errors.NulCharacterMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "asiri.errors.DatabaseUnavailableMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its 429 page
]

# A new API key and a rotated signing secret are shown once as admin messages: keep them in the
# (database) session, never in the default signed-but-readable cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "asiri.urls"
WSGI_APPLICATION = "asiri.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: PostgreSQL in production, SQLite on a fresh laptop ---------------------------
_database_url = env_str("DATABASE_URL")
if _database_url:
    DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60, conn_health_checks=True)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "asiri.sqlite3",
            "OPTIONS": {
                # web, worker and beat share the file: WAL lets readers run beside a writer,
                # IMMEDIATE takes the write lock up front so a transaction never has to
                # upgrade (the usual source of "database is locked"), and the timeout waits.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Celery: Redis (or RabbitMQ) in production, the filesystem transport on a laptop -------
CELERY_BROKER_URL = env_redis_url("CELERY_BROKER_URL")
if not CELERY_BROKER_URL:
    _queue_dir = DATA_DIR / "celery" / "queue"
    for _folder in (_queue_dir, DATA_DIR / "celery" / "control", DATA_DIR / "celery" / "processed"):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost//"  # a host named, or kombu warns in every process that it chose one
    CELERY_BROKER_TRANSPORT = "asiri.broker:FilesystemTransport"  # stops within honcho's 5 s (asiri/broker.py)
    # The worker's timer thread sleeps this long at most: Celery's default 1 s is also waited out at stop.
    CELERY_WORKER_TIMER_PRECISION = 0.1
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(DATA_DIR / "celery" / "control"),
        "processed_folder": str(DATA_DIR / "celery" / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,  # the default 1 s would be most of a local test send's latency
    }
else:
    # Redis hands an unacknowledged task to another worker after this long; our tasks are
    # short, and anything that waits longer lives in the database, not in the broker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_connect_timeout": 2, "max_retries": 0}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = env_str("ASIRI_CELERY_QUEUE", "asiri")
# Test sends and redeliveries have a queue of their own, so a person waiting on one is never
# behind a backlog: the Procfile's `priority` worker takes only this queue; other workers take
# both whenever one of their processes is free (acks_late + prefetch 1: nothing is held back).
ASIRI_PRIORITY_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}.priority"
CELERY_TASK_QUEUES = (Queue(CELERY_TASK_DEFAULT_QUEUE), Queue(ASIRI_PRIORITY_QUEUE))
CELERY_TASK_ROUTES = {"deliveries.tasks.deliver_now": {"queue": ASIRI_PRIORITY_QUEUE}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat keeps its schedule in memory: every entry is an interval that is safe to run again at start,
# and a schedule file would be one more thing a fresh deploy has to create (and one more place to lose).
CELERY_BEAT_SCHEDULER = "asiri.celery:Scheduler"  # Celery's in-memory one, reconnecting every second
# A Redis outage can last longer than Celery's default 100 reconnection tries: workers and beat wait it out.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Kept as Celery 5 has it, before Celery 6 turns it on: a pump that loses the broker mid-send sees its requests
# through and records them (the rows are the truth, not the message); cancelled, its sends would wait out their
# leases and go a second time. (Celery warns of the change anyway: asiri.celery filters that warning.)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_CONSUMER = "asiri.celery:Consumer"  # Celery's, reconnecting every second

# --- Webhooks ---------------------------------------------------------------------------
ASIRI_ALLOW_PRIVATE_URLS = env_bool("ASIRI_ALLOW_PRIVATE_URLS", False)
ASIRI_REQUIRE_HTTPS = env_bool("ASIRI_REQUIRE_HTTPS", True)
ASIRI_RETRY_SCHEDULE = env_delays("ASIRI_RETRY_SCHEDULE", (5, 300, 1800, 7200, 18000, 36000, 36000))
ASIRI_DELIVERY_TIMEOUT = env_float("ASIRI_DELIVERY_TIMEOUT", 15.0)
ASIRI_CONNECT_TIMEOUT = min(5.0, ASIRI_DELIVERY_TIMEOUT)
# How long a worker owns a delivery it claimed; past it, the dispatcher hands it to another.
ASIRI_DELIVERY_LEASE = env_float("ASIRI_DELIVERY_LEASE", max(120.0, ASIRI_DELIVERY_TIMEOUT * 8))
ASIRI_DISPATCH_INTERVAL = env_float("ASIRI_DISPATCH_INTERVAL", 1.0)
# Sends one worker process keeps in flight, and at most this many to one endpoint, so a slow
# endpoint can hold only a bounded share of them.
ASIRI_SEND_CONCURRENCY = env_int("ASIRI_SEND_CONCURRENCY", 100)
ASIRI_SEND_CONCURRENCY_PER_ENDPOINT = env_int("ASIRI_SEND_CONCURRENCY_PER_ENDPOINT", 50)
# A worker task keeps claiming due deliveries for this long before handing over.
ASIRI_PUMP_SECONDS = env_float("ASIRI_PUMP_SECONDS", 20.0)
# After SIGTERM a worker stops claiming at once and waits this long for the requests in flight, then
# gives back what is still out: with Celery's own exit it stays inside a 10 s grace period (Docker's).
ASIRI_SHUTDOWN_SECONDS = env_float("ASIRI_SHUTDOWN_SECONDS", 8.0)
ASIRI_DISABLE_AFTER_HOURS = env_float("ASIRI_DISABLE_AFTER_HOURS", 120.0)
ASIRI_RETENTION_DAYS = env_int("ASIRI_RETENTION_DAYS", 30)
ASIRI_SECRET_ROTATION_OVERLAP_HOURS = 24
# Live subscriptions one tenant may have (each event fans out to all of them); a tenant's own
# max_subscriptions, set in the admin, overrides it.
ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT = env_int("ASIRI_MAX_SUBSCRIPTIONS_PER_TENANT", 500)
ASIRI_IDEMPOTENCY_HOURS = 24
# open: any event type may be published, registered ones are validated; strict: only registered ones, and
# subscription patterns must match a registered type (webhooks/catalog.py).
ASIRI_EVENT_CATALOG = env_choice("ASIRI_EVENT_CATALOG", "open", ("open", "strict"))
# Requests per API key; the test operation has its own, lower limit. Kept in Redis when the broker is
# Redis (or ASIRI_RATE_LIMIT_REDIS_URL), so every web process shares them.
ASIRI_RATE_LIMIT = env_rate("ASIRI_RATE_LIMIT", "600/min")
ASIRI_TEST_RATE_LIMIT = env_rate("ASIRI_TEST_RATE_LIMIT", "10/min")
ASIRI_RATE_LIMIT_REDIS_URL = env_redis_url(
    "ASIRI_RATE_LIMIT_REDIS_URL", CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
ASIRI_MAX_EVENT_BYTES = 256 * 1024
# Resolves a host name for the address guard; swappable so tests never ask a real DNS server.
ASIRI_RESOLVER = env_str("ASIRI_RESOLVER", "webhooks.addresses.system_resolve")
ASIRI_USER_AGENT = "ASIRI-Webhooks/1.0"
ASIRI_MAX_REQUEST_BYTES = 1_000_000

CELERY_BEAT_SCHEDULE = {
    "dispatch-due-deliveries": {
        "task": "deliveries.tasks.dispatch",
        "schedule": ASIRI_DISPATCH_INTERVAL,
        "options": {"expires": max(ASIRI_DISPATCH_INTERVAL, 5.0)},
    },
    # A safety net, not the usual way (docs/architecture.md, "Per-key ordering"): an ordered delivery that
    # waits on a predecessor which ended while it was being published.
    "release-waiting-deliveries": {
        "task": "deliveries.tasks.release_waiting",
        "schedule": 10.0,
        "options": {"expires": 10.0},
    },
    "purge-expired-history": {
        "task": "deliveries.tasks.purge_expired",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
}

# --- Metrics (docs/operations.md, "Monitoring") ------------------------------------------
# /metrics answers a client in these networks, or one presenting the token; nobody else. The
# default keeps it on the host: a scraper elsewhere needs the token or its network listed.
ASIRI_METRICS_TOKEN = env_str("ASIRI_METRICS_TOKEN", "")
if ASIRI_METRICS_TOKEN and len(ASIRI_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("ASIRI_METRICS_TOKEN must be at least 16 characters long.")
ASIRI_METRICS_ALLOWED_NETWORKS = env_networks("ASIRI_METRICS_ALLOWED_NETWORKS", ("127.0.0.0/8", "::1/128"))
# prometheus_client takes the variable's mere presence for multiprocess mode, even empty.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
if env_str("PROMETHEUS_MULTIPROC_DIR") and not Path(env_str("PROMETHEUS_MULTIPROC_DIR")).is_dir():
    raise ImproperlyConfigured("PROMETHEUS_MULTIPROC_DIR must name an existing directory (empty it at each start).")
# A worker host without a web process serves its workers' counters here (no token: bind it privately).
ASIRI_WORKER_METRICS_ADDRESS = env_address("ASIRI_WORKER_METRICS_ADDRESS")
if ASIRI_WORKER_METRICS_ADDRESS and not env_str("PROMETHEUS_MULTIPROC_DIR"):
    raise ImproperlyConfigured(
        "ASIRI_WORKER_METRICS_ADDRESS needs PROMETHEUS_MULTIPROC_DIR: the worker's pool processes do the counting."
    )

# --- REST framework and OpenAPI ----------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.HasRequiredScope"],
    "DEFAULT_THROTTLE_CLASSES": ["tenants.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["core.api.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "core.openapi.LinkedAutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ASIRI Webhooks API",
    "DESCRIPTION": (
        "Manage webhook subscriptions, read the delivery log and send test events. "
        "Authenticate with `Authorization: Bearer <ASIRI_API_KEY>`; each operation names the scope it needs."
    ),
    "VERSION": "1.0.0",
    # 3.1 is JSON Schema proper, so rules such as the metadata key length can be stated.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    # Named for what they are: two components' `status` fields otherwise collide into `Status20bEnum`.
    "ENUM_NAME_OVERRIDES": {
        "DeliveryStatusEnum": "deliveries.models.DeliveryStatus",
        "RecoveryStatusEnum": "deliveries.models.RecoveryStatus",
    },
}

# --- The rest -----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
FORMAT_MODULE_PATH = ["asiri.formats"]  # the console's exact times: seconds and the timezone
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# The release step collects (and compresses) static files; a web process on a filesystem that step did not
# write to (or started before it) still serves every asset from the apps themselves, rather than a blank /docs.
WHITENOISE_USE_FINDERS = True
# --- Admin logins: django-axes locks out a user, and a client address, after 10 failures each
# less than 15 minutes after the last, for 15 minutes (README, "Support console").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = 10
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "asiri.proxies.client_address"
AXES_USERNAME_CALLABLE = "asiri.lockout.attempted_username"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# --- HTTPS and proxies (README, "Behind a proxy") ------------------------------------------
# X-Forwarded-Proto and X-Forwarded-For are believed only from these networks (asiri/proxies.py,
# which drops X-Forwarded-Proto from anyone else before Django reads it). None by default.
ASIRI_TRUSTED_PROXIES = env_networks("ASIRI_TRUSTED_PROXIES", ())
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Sent on https responses only, so plain-http health checks and local use never see them.
SECURE_HSTS_SECONDS = env_int("ASIRI_HSTS_SECONDS", 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("ASIRI_HSTS_INCLUDE_SUBDOMAINS", False)
# Off by default: a proxy usually redirects, and an API client that sent its key over http has
# already leaked it. /healthz, /readyz and /metrics answer before any redirect.
SECURE_SSL_REDIRECT = env_bool("ASIRI_SSL_REDIRECT", False)
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# JSON lines by default (ASIRI_LOG_FORMAT=plain for people reading a terminal; make run sets it).
_log_format = env_str("ASIRI_LOG_FORMAT", "json")
if _log_format not in ("json", "plain"):
    raise ImproperlyConfigured(f"ASIRI_LOG_FORMAT must be json or plain; got {_log_format!r}.")
_log_level = env_str("ASIRI_LOG_LEVEL", "INFO").upper()
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
if _log_level not in _LOG_LEVELS:
    raise ImproperlyConfigured(f"ASIRI_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}; got {_log_level!r}.")
# At least WARNING, and never below ASIRI_LOG_LEVEL.
_warnings_up = max(_log_level, "WARNING", key=_LOG_LEVELS.index)
# Celery's lines for every task a worker receives and every task that succeeds, and beat's for every task it
# sends: the dispatcher runs every second, so at INFO they were three lines a second saying nothing was due.
# The tasks log what they did themselves (deliveries.tasks); Celery's warnings and errors (a task that raised,
# a lost broker) and its start-up lines still show, and ASIRI_LOG_LEVEL=DEBUG shows everything.
_celery_chatter = {
    "celery.worker.strategy": {"level": _warnings_up},
    "celery.app.trace": {"level": _warnings_up},
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "asiri.logs.JsonFormatter"},
    },
    "filters": {
        "beat_sending": {"()": "asiri.logs.BeatSendingFilter"},
        "beat_outage": {"()": "asiri.logs.BeatOutageFilter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": _log_format}},
    "root": {"handlers": ["console"], "level": _log_level},
    "loggers": {
        **(_celery_chatter if _log_level != "DEBUG" else {}),
        "celery.beat": {"filters": ["beat_outage"] + (["beat_sending"] if _log_level != "DEBUG" else [])},
        # The worker pool's own logger (billiard) does not propagate: without a handler of its own, a pool
        # process's error would reach stderr as bare text, outside the JSON lines.
        "multiprocessing": {"handlers": ["console"], "level": _warnings_up, "propagate": False},
        # Django's default configuration gives "django" a console handler of its own while DEBUG is on (make
        # run): every request warning was written twice, once as bare text. Here it goes through the root's.
        "django": {"handlers": [], "level": _log_level, "propagate": True},
    },
}
