import logging
import os

from celery import Celery
from celery.signals import (
    after_task_publish,
    setup_logging,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)

from deliveries import shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asiri.settings")

logger = logging.getLogger(__name__)

app = Celery("asiri")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _log_as_django_does(**kwargs) -> None:
    """Workers and beat log as the web does: Django's LOGGING (ASIRI_LOG_LEVEL, ASIRI_LOG_FORMAT).

    Without a receiver here Celery sets the root logger's level from its `--loglevel` (the Procfile's
    INFO, or WARNING when none is given), so a worker ignored ASIRI_LOG_LEVEL either way.
    """
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


@after_task_publish.connect
def _the_broker_answers(**kwargs) -> None:
    """A task went out: if this process had found the broker gone (beat, /readyz), that is over."""
    from core.outages import BROKER

    BROKER.ended(logger)


@worker_ready.connect
def _serve_worker_metrics(**kwargs) -> None:
    # Imported late: Django is set up by the time a worker is ready, not when this module loads.
    from asiri.metrics import serve_worker_metrics

    serve_worker_metrics()


@worker_process_shutdown.connect
def _mark_metrics_process_dead(pid: int | None = None, **kwargs) -> None:
    """Multiprocess mode: a pool process that ended must stop counting in live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


@worker_shutting_down.connect
def _begin_warm_shutdown(**kwargs) -> None:
    """The main process heard SIGTERM (or SIGINT): pumps in every pool process stop claiming now."""
    shutdown.request()


@worker_process_init.connect
def _idle_pool_processes_ignore_sigterm(**kwargs) -> None:
    shutdown.ignore_until_busy()


@worker_process_init.connect
def _start_sender(**kwargs) -> None:
    """Each pool process opens its sender (a thread, an event loop, TLS settings with certifi's CA bundle) as it
    starts, not in the first delivery's time: the CA bundle alone takes tens of milliseconds to load."""
    from deliveries import http

    http.sender()


@task_prerun.connect
def _warm_shutdown_in_pool_processes(**kwargs) -> None:
    # Before each task, not at worker_process_init: billiard replaces SIGTERM's handler after that.
    shutdown.install_pool_process_handler()
