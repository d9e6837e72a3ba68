import logging
import os
import warnings
from typing import Any

import celery.beat
import celery.worker.consumer
from celery import Celery
from celery.exceptions import CPendingDeprecationWarning
from celery.signals import (
    after_task_publish,
    setup_logging,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutting_down,
)

from core.outages import BROKER
from deliveries import shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asiri.settings")

logger = logging.getLogger(__name__)


def _on_a_lost_connection(message: Any) -> bool:
    """Whether kombu detached this message's channel from its connection: the broker was lost after it came."""
    transport = getattr(message.channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


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
    BROKER.ended(logger)


def _connect_every_second(ensure_connection: Any, where: str, max_retries: int | None, **kwargs: Any) -> Any:
    """A kombu connection's ensure_connection, trying the broker every second, where Celery waits 2, 4, 6 … up to
    30 s, and saying each failure through core.outages rather than in an error line of its own."""

    def unreachable(exc: Exception, interval: float) -> None:
        BROKER.failed(logger, where, exc)

    return ensure_connection(unreachable, max_retries, **kwargs, interval_start=1, interval_step=0, interval_max=1)


def _tolerating_a_lost_connection(settle: Any) -> Any:
    """A message's ack (or reject) that no longer stops the worker if the broker connection the message came through
    was lost while its task ran.

    Celery collects the lost connection (detaching its transport) and may fail to close it (see
    Consumer.on_connection_error_after_connected); the late-acked task's channel is left behind, and acknowledging
    through it as the task ended raised AttributeError from kombu, which Celery took for an unrecoverable error: a
    test send running through a two-second Redis restart stopped the priority worker for good. Unacknowledged, the
    message comes back after Redis's visibility timeout, and its task finds its deliveries done.
    """
    message = getattr(settle, "__self__", None)

    def settle_or_leave(*args: Any, **kwargs: Any) -> Any:
        try:
            return settle(*args, **kwargs)
        except AttributeError:
            if message is None or not _on_a_lost_connection(message):
                raise
            logger.warning(
                "a task ended after the broker connection its message came through was lost: the message comes back "
                "after the broker's visibility timeout"
            )
            return None

    return settle_or_leave


class Consumer(celery.worker.consumer.Consumer):
    """Celery's consumer (settings.CELERY_WORKER_CONSUMER), with two changes: a broker that went away is tried
    again every second and said once (core.outages), its return said too; and losing it while a late-acked task
    runs no longer stops the worker (on_connection_error_after_connected).

    With Celery's growing waits, a worker took 12 s after a 30 s Redis outage to deliver again, and up to half a
    minute after a longer one, writing an error line at each try.
    """

    def ensure_connected(self, conn: Any) -> Any:
        ensure = conn.ensure_connection

        def every_second(errback: Any = None, max_retries: int | None = None, **kwargs: Any) -> Any:
            for interval in ("interval_start", "interval_step", "interval_max"):
                kwargs.pop(interval, None)
            return _connect_every_second(ensure, "worker", max_retries, **kwargs)

        conn.ensure_connection = every_second
        connected = super().ensure_connected(conn)
        BROKER.ended(logger)
        return connected

    def call_soon_ack(self, p: Any, *args: Any, **kwargs: Any) -> Any:
        return super().call_soon_ack(_tolerating_a_lost_connection(p), *args, **kwargs)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError:
            if self.connection is not None:  # not from the close below
                raise
            # Celery 5.7.0 closes the lost connection after collect() has detached its transport: with a late-acked
            # task running (a pump, nearly always), closing the channel tries to requeue that task's message through
            # the detached transport, and the AttributeError stopped the worker ("Unrecoverable error"). The message
            # comes back by Redis's visibility timeout, as any unacknowledged one after a lost connection.
            logger.warning("the lost broker connection could not be closed cleanly; reconnecting all the same")


class Scheduler(celery.beat.Scheduler):
    """Celery's in-memory scheduler (settings.CELERY_BEAT_SCHEDULER), with one change: a beat that first
    sends while the broker is away tries again every second, saying so once (core.outages).

    Celery's tries again after 2, 4, 6 … up to 30 s, with an error line each time: a beat started during a Redis
    outage sent nothing for up to half a minute after Redis was back, so no retry was made and no lost
    wake-up made up for. A second is what beat waits between its sends anyway.
    """

    def _ensure_connected(self):
        return _connect_every_second(
            self.connection.ensure_connection, "beat", self.app.conf.broker_connection_max_retries
        )


@worker_ready.connect
def _no_notice_of_celery_6(**kwargs) -> None:
    """Celery 5 warns at every lost broker connection that Celery 6 will cancel late-acked tasks on one, even
    with the setting named (CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS says why it is off).
    Filtered once the worker is ready: Celery's logging set-up puts an `always` filter in front of any before."""
    warnings.filterwarnings("ignore", message=r"\s*In Celery 5\.1 we introduced", category=CPendingDeprecationWarning)


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
