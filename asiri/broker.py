"""The embedded default's broker: kombu's filesystem queue, made to stop as quickly as Redis does."""

from __future__ import annotations

import time

from kombu.transport import filesystem

from deliveries import shutdown


class FilesystemTransport(filesystem.Transport):
    """Celery's loop for brokers without sockets (synloop) drains for 2 s before it looks at a
    shutdown request; with the rest of a worker's stop that passed honcho's 5 s before SIGKILL.
    This one gives up its wait, polling interval by polling interval, once a shutdown is requested."""

    def drain_events(self, connection, timeout: float | None = None):
        start = time.monotonic()
        while not shutdown.requested():
            try:
                return super().drain_events(connection, timeout=self.polling_interval)
            except TimeoutError:
                if timeout is not None and time.monotonic() - start >= timeout:
                    raise
        raise TimeoutError()
