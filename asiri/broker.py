"""The embedded default's broker: kombu's filesystem queue, made safe to write and read at once, and to stop as
quickly as Redis does."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

from deliveries import shutdown

logger = logging.getLogger(__name__)

# A writer holds its `.partial` file, and a reader its `.taken-…` one, for milliseconds: one this old was left by
# a process killed in between, and the wake-up it held has long been replaced by the dispatcher's.
STALE_SECONDS = 3600.0
_swept: set[str] = set()  # queue folders swept by this process


class Channel(filesystem.Channel):
    """kombu's filesystem channel creates a message's file and then writes it, and its reader takes any file
    by name without the writer's lock: a worker polling in between read an empty message, raised
    JSONDecodeError and stopped (and make run with it), and a message written after the take was lost. Here a
    message is written under a name no reader lists and renamed into the queue once whole (a rename is atomic
    within one filesystem), and a reader takes it by renaming it to another hidden name, so of several readers
    exactly one gets it. Bytes that are not a message are set aside and logged, not
    fatal: messages here are wake-ups, hints that the database already holds the truth behind.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.data_folder_in not in _swept:
            _swept.add(self.data_folder_in)
            _sweep(self.data_folder_in)

    def _put(self, queue, payload, **kwargs):
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(dumps(payload).encode())
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue):
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.startswith(".") or name.partition(".")[2] != wanted:
                continue
            # Hidden, like a partial one, and on the queue's own filesystem, wherever processed_folder is.
            taken = os.path.join(self.data_folder_in, f".{name}.taken-{uuid.uuid4().hex}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another reader took it first
            try:
                with open(taken, "rb") as file:
                    payload = file.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {taken!r} from queue.") from exc
            try:
                message = loads(payload.decode())
            except ValueError:
                aside = os.path.join(self.data_folder_in, f".{name}.not-a-message")
                with contextlib.suppress(OSError):
                    os.replace(taken, aside)
                logger.error(
                    "queue %s: %s is not a message (%d bytes); set aside in %s", queue, name, len(payload), aside
                )
                continue
            try:
                if self.store_processed:
                    shutil.move(taken, os.path.join(self.processed_folder, name))  # another filesystem too
                else:
                    os.remove(taken)
            except OSError:
                logger.warning("queue %s: could not put %s away after reading it", queue, taken, exc_info=True)
            return message
        raise Empty()


def _sweep(folder: str) -> None:
    """Remove what processes killed mid-write or mid-read left in a queue folder (hidden, and STALE_SECONDS old);
    a file set aside as not a message stays for someone to read."""
    now, removed = time.time(), 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            left = entry.name.startswith(".") and (entry.name.endswith(".partial") or ".taken-" in entry.name)
            with contextlib.suppress(OSError):
                if left and now - entry.stat().st_mtime > STALE_SECONDS:
                    os.remove(entry.path)
                    removed += 1
    if removed:
        logger.info("queue folder %s: removed %d files left by processes that were killed", folder, removed)


class FilesystemTransport(filesystem.Transport):
    """Celery's loop for brokers without sockets (synloop) drains for 2 s before it looks at a
    shutdown request; with the rest of a worker's stop that passed honcho's 5 s before SIGKILL.
    This one gives up its wait, polling interval by polling interval, once a shutdown is requested."""

    Channel = Channel

    def drain_events(self, connection, timeout: float | None = None):
        start = time.monotonic()
        while not shutdown.requested():
            try:
                return super().drain_events(connection, timeout=self.polling_interval)
            except TimeoutError:
                if timeout is not None and time.monotonic() - start >= timeout:
                    raise
        raise TimeoutError()
