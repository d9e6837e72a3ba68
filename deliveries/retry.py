"""When a failed delivery is tried again: the retry policy, as data plus one function."""

from __future__ import annotations

import random
from collections.abc import Sequence

JITTER = 0.2


def next_delay(attempts_in_series: int, schedule: Sequence[float], *, retry_after: float | None = None) -> float | None:
    """Seconds until the next attempt after `attempts_in_series` failures, or None: give up.

    schedule[i] is the delay after attempt i + 1, varied by ±20 % so that endpoints that
    failed together are not retried together. A Retry-After (429/503) is honoured, but never
    beyond twice the scheduled delay, so an endpoint cannot park a delivery for ever.
    """
    index = attempts_in_series - 1
    if index < 0 or index >= len(schedule):
        return None
    scheduled = schedule[index]
    delay = scheduled * random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 2 * scheduled))
    return delay
