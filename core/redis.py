"""Redis is a helper here, never the source of truth: one client per URL, and a breaker per use.

Every user of Redis (API key buckets, endpoint send windows, worker wake-ups) has a fallback that works
without it. A breaker stops asking a Redis that just failed for a while, so an outage costs one slow call
per pause and process, not one per request, and it is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache

import redis

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def client(url: str, timeout: float) -> redis.Redis:
    # Short timeouts: callers answer a request or hold a claim while they wait.
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


@lru_cache(maxsize=16)
def script(url: str, timeout: float, source: str) -> redis.commands.core.Script:
    """A Lua script registered once per client: called by its SHA, loaded again only if Redis lost it."""
    return client(url, timeout).register_script(source)


class Breaker:
    """Says whether to try Redis now; opens for `pause` seconds after a failure."""

    def __init__(self, name: str, *, pause: float, consequence: str) -> None:
        self.name = name
        self.pause = pause
        self.consequence = consequence
        self._lock = threading.Lock()
        self._open_until = 0.0
        self._down = False

    def allows(self) -> bool:
        return time.monotonic() >= self._open_until

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.pause
            first = not self._down
            self._down = True
        if first:
            logger.warning("%s: Redis is unavailable (%s); %s", self.name, exc, self.consequence)

    def succeeded(self) -> None:
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                logger.info("%s: Redis is available again", self.name)

    def reset(self) -> None:
        with self._lock:
            self._open_until, self._down = 0.0, False
