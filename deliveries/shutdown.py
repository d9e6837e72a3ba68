"""Warm shutdown of a worker, shared by its main process and its pool processes.

Celery's main process hears SIGTERM (on Docker and Kubernetes only it does); with a process group
signalled (Heroku, honcho, systemd) the pool processes hear it too, and by default die of it, which
would throw away every send in flight. Either way the moment is written here, in memory shared
across the fork, and the pump reads it: it stops claiming at once, waits for the requests in
flight until `deadline()`, and gives back what is still out then (docs/operations.md, "Shutdown").
"""

from __future__ import annotations

import multiprocessing
import signal
import time

# Created when the worker's main process imports this, before the pool forks: one value for all.
_requested_at = multiprocessing.Value("d", 0.0, lock=False)


def request() -> None:
    if not _requested_at.value:
        _requested_at.value = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process


def requested() -> bool:
    return _requested_at.value > 0


def deadline(grace: float) -> float:
    """The monotonic time by which work in flight must be given up, `grace` seconds after the request."""
    return _requested_at.value + grace


def reset() -> None:
    _requested_at.value = 0.0


def _on_sigterm(signum: int, frame: object) -> None:
    request()
    # A second SIGTERM (Celery's cold shutdown, or an impatient operator) ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def ignore_until_busy() -> None:
    """In a new pool process: an idle one has nothing to drain, and its main process ends it once it stops;
    ignoring SIGTERM keeps billiard from ending it early, with an error logged, on a group's SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def install_pool_process_handler() -> None:
    """In a pool process: SIGTERM starts the warm shutdown instead of killing the process mid-send."""
    if requested() or signal.getsignal(signal.SIGTERM) is _on_sigterm:
        return
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass  # not the main thread (a thread pool): the main process's signal reaches the pumps anyway
