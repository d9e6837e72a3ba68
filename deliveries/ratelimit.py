"""Per-subscription delivery rate (`rate_limit`, deliveries per second), shared by every worker.

A sliding one-second window, not a token bucket: a bucket sized for one second lets up to twice
the rate through in a second that straddles a refill, and "at most N in any second" is what a
tenant setting `rate_limit: N` means. Each window is a sorted set of send times in Redis, updated
by one Lua script that reads Redis's own clock, so workers on hosts with skewed clocks agree.
Without Redis (the embedded default) each worker process keeps its own windows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from functools import lru_cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 1.0
OUTAGE_WAIT = 1.0

_SCRIPT = """
local limit, want, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local granted = math.max(0, math.min(want, limit - used))
if granted > 0 then
  local last = redis.call('INCRBY', KEYS[2], granted)
  for i = last - granted + 1, last do
    redis.call('ZADD', KEYS[1], now, i)
  end
  local ttl = math.ceil(window * 1000) + 1000
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local wait = 0
if granted < want then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = math.max(0, tonumber(oldest[2]) + window - now)
end
return {granted, tostring(wait)}
"""


@lru_cache(maxsize=4)
def _script(url: str):
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).register_script(_SCRIPT)


class _LocalWindows:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, deque[float]] = {}

    def take(self, key: str, limit: int, want: int) -> tuple[int, float]:
        with self.lock:
            now = time.monotonic()
            window = self.sent.setdefault(key, deque())
            while window and window[0] <= now - WINDOW_SECONDS:
                window.popleft()
            granted = max(0, min(want, limit - len(window)))
            window.extend([now] * granted)
            wait = window[0] + WINDOW_SECONDS - now if granted < want else 0.0
            return granted, max(0.0, wait)


_local = _LocalWindows()


def take_sends(subscription_id: str, limit: int, want: int) -> tuple[int, float]:
    """Reserve up to `want` sends to this subscription within its limit per second.

    Returns how many were granted and, when fewer than asked, the seconds until one more
    could be: the caller leaves that subscription alone until then.
    """
    url = settings.ASIRI_RATE_LIMIT_REDIS_URL
    if not url:
        return _local.take(subscription_id, limit, want)
    # The braces are a cluster hash tag: both keys of one subscription live on the same node.
    key = f"asiri:send-rate:{{{subscription_id}}}"
    try:
        granted, wait = _script(url)(keys=[key, f"{key}:seq"], args=[limit, want, WINDOW_SECONDS])
    except redis.RedisError as exc:
        # Without the shared window no worker can know the endpoint's rate: hold only the
        # rate-limited subscriptions back (never send faster), and keep everything else moving.
        logger.warning("send rate unavailable, holding %s back: %s", subscription_id, exc)
        return 0, OUTAGE_WAIT
    return int(granted), float(wait)
