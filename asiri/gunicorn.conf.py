"""gunicorn settings for the Procfile's `web` (`-c asiri/gunicorn.conf.py`); its command-line options add to these."""

from __future__ import annotations

import os
from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    """Multiprocess metrics (PROMETHEUS_MULTIPROC_DIR): a worker that ended must stop counting in live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
