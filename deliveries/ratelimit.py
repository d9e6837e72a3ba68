"""Per-subscription delivery rate (`rate_limit`, deliveries per second), shared by every worker.

A sliding one-second window, not a token bucket: a bucket sized for one second lets up to twice
the rate through in a second that straddles a refill, and "at most N in any second" is what a
tenant setting `rate_limit: N` means. Each window is a sorted set of send times in Redis, updated
by one Lua script that reads Redis's own clock, so workers on hosts with skewed clocks agree.
Without Redis (the embedded default) each worker process keeps its own windows.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import redis
from django.conf import settings

from core import redis as shared_redis

WINDOW_SECONDS = 1.0
OUTAGE_WAIT = 1.0
REDIS_TIMEOUT = 0.2
# Without the shared window no worker can know an endpoint's rate: hold the rate-limited subscriptions
# back (never send faster) and keep everything else moving. Not asking again for a while keeps a
# hanging Redis from stalling every claim by its timeout.
breaker = shared_redis.Breaker(
    "send rates", pause=OUTAGE_WAIT, consequence="rate-limited subscriptions wait; all others are sent as usual"
)

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
  if oldest[2] then wait = math.max(0, tonumber(oldest[2]) + window - now) else wait = window end
end
return {granted, tostring(wait)}
"""


def _script(url: str):
    return shared_redis.script(url, REDIS_TIMEOUT, _SCRIPT)


class _LocalWindows:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, deque[float]] = {}

    def take(self, key: str, limit: int, want: int) -> tuple[int, float]:
        if limit < 1:
            return 0, OUTAGE_WAIT  # not a rate anything can be sent at (the API refuses it)
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


def take_sends(wanted: dict[str, tuple[int, int]]) -> dict[str, tuple[int, float]]:
    """Reserve sends within each subscription's limit per second: {id: (limit, want)} in,
    {id: (granted, seconds until one more could be)} out, in one round trip.

    A subscription granted fewer than it wanted is left alone by the caller until then.
    """
    if not wanted:
        return {}
    url = settings.ASIRI_RATE_LIMIT_REDIS_URL
    if not url:
        return {sub: _local.take(sub, limit, want) for sub, (limit, want) in wanted.items()}
    if not breaker.allows():
        return dict.fromkeys(wanted, (0, OUTAGE_WAIT))
    script = _script(url)
    try:
        with script.registered_client.pipeline(transaction=False) as pipe:
            for subscription_id, (limit, want) in wanted.items():
                # The braces are a cluster hash tag: both keys of one subscription share a node.
                key = f"asiri:send-rate:{{{subscription_id}}}"
                script(keys=[key, f"{key}:seq"], args=[limit, want, WINDOW_SECONDS], client=pipe)
            answers = pipe.execute()
    except redis.RedisError as exc:
        breaker.failed(exc)
        return dict.fromkeys(wanted, (0, OUTAGE_WAIT))
    breaker.succeeded()
    return {sub: (int(granted), float(wait)) for sub, (granted, wait) in zip(wanted, answers, strict=True)}
