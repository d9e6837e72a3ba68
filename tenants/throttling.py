"""Per-API-key rate limits: a token bucket per key, kept in Redis so every web process shares it.

DRF's own throttles read and write a history list with two cache calls, so 200 requests arriving
at once all see the same history and all pass. This bucket is updated by one Lua script, atomic
in Redis. Without Redis (the embedded default), or while it is unreachable, each process keeps its
own buckets: the API keeps answering through a Redis outage, limited per process.
"""

from __future__ import annotations

import threading
import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from core import redis as shared_redis
from core.env import parse_rate

_SCRIPT = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[1])
local stamp = tonumber(redis.call('HGET', KEYS[1], 's') or ARGV[3])
local capacity, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
tokens = math.min(capacity, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring((1 - tokens) / rate)}
"""


REDIS_TIMEOUT = 0.25


def _bucket_script(url: str):
    return shared_redis.script(url, REDIS_TIMEOUT, _SCRIPT)


breaker = shared_redis.Breaker(
    "API rate limits", pause=5.0, consequence="each web process limits API keys on its own until it is back"
)


class _LocalBuckets:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, capacity: int, rate: float, now: float) -> tuple[bool, float]:
        with self.lock:
            tokens, stamp = self.buckets.get(key, (float(capacity), now))
            tokens = min(capacity, tokens + max(0.0, now - stamp) * rate)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            self.buckets[key] = (tokens, now)
            return allowed, (1 - tokens) / rate


_local = _LocalBuckets()


def take_token(key: str, rate_setting: str) -> tuple[bool, float]:
    """Spend one request from the bucket; returns (allowed, seconds until the next token)."""
    capacity, period = parse_rate(rate_setting)
    rate = capacity / period
    now = time.time()
    url = settings.ASIRI_RATE_LIMIT_REDIS_URL
    if url and breaker.allows():
        try:
            allowed, wait = _bucket_script(url)(keys=[f"asiri:rl:{key}"], args=[capacity, rate, now])
        except redis.RedisError as exc:
            breaker.failed(exc)
        else:
            breaker.succeeded()
            return bool(allowed), float(wait)
    return _local.take(key, capacity, rate, now)


class ApiKeyRateThrottle(BaseThrottle):
    """ASIRI_RATE_LIMIT per key; a view may name a stricter setting in `rate_limit_setting`."""

    def allow_request(self, request, view) -> bool:
        if request.auth is None:
            return True  # no key: authentication answers 401 first
        setting = getattr(view, "rate_limit_setting", None)
        if isinstance(setting, dict):
            setting = setting.get(getattr(view, "action", None))
        setting = setting or "ASIRI_RATE_LIMIT"
        allowed, self.retry_after = take_token(f"{setting}:{request.auth.lookup}", getattr(settings, setting))
        return allowed

    def wait(self) -> float:
        return max(1.0, self.retry_after)
