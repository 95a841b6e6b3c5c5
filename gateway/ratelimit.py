"""In-process rate limits: token buckets (per route group and caller, per connector), a cap on concurrent streams."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import RateLimitedError


@dataclass(frozen=True, slots=True)
class Rate:
    per_minute: float
    burst: int


class RateLimiter:
    """Token buckets kept in a dict; `clock` is injectable so tests move time by hand.

    Memory is bounded: when more than `max_keys` callers are tracked, buckets that are full again are dropped.
    """

    def __init__(
        self, rates: dict[str, Rate], *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000
    ) -> None:
        self.rates = rates
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def check(self, group: str, who: str, cost: float = 1.0) -> float:
        """Take `cost` tokens; return 0 when allowed, else the seconds to wait (nothing is taken then)."""
        rate = self.rates[group]
        now = self.clock()
        bucket = self._buckets.get((group, who))
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[(group, who)] = TokenBucket(rate.per_minute / 60.0, float(rate.burst), now=now)
        return bucket.take(cost, now=now)

    def hit(self, group: str, who: str, cost: float = 1.0) -> None:
        """Like `check`, but raise RateLimitedError (429 with `Retry-After`, whole seconds ≥ 1) when over."""
        wait = self.check(group, who, cost)
        if wait > 0:
            raise rate_limited(wait)

    def _prune(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.is_full(now):
                del self._buckets[key]


def rate_limited(wait: float, what: str = "too many requests") -> RateLimitedError:
    retry_after = max(1, math.ceil(wait))
    return RateLimitedError(
        f"{what}; retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
        details={"retry_after": retry_after},
    )


class TokenBucket:
    """`rate` tokens per second, holding at most `burst` (default: one second's worth); `take()` answers how long
    until `cost` tokens are free (0: they were taken). One per connector for its ingress (`ingress_events_per_second`),
    one per caller and route group in `RateLimiter`. `now` defaults to `time.monotonic()`."""

    def __init__(self, rate: float, burst: float | None = None, *, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.tokens = self.burst
        self.stamp = time.monotonic() if now is None else now

    def _level(self, now: float) -> float:
        return min(self.burst, self.tokens + (now - self.stamp) * self.rate)

    def take(self, cost: float = 1.0, *, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self.tokens = self._level(now)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def is_full(self, now: float) -> bool:
        """Whether the bucket has refilled to `burst` by `now` (forgetting it then changes nothing)."""
        return self._level(now) >= self.burst


class StreamLimiter:
    """Counts open streams (SSE) per caller; `open()` refuses past `limit` with a 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def count(self, who: str) -> int:
        return self._open.get(who, 0)

    def acquire(self, who: str) -> None:
        """Take a stream slot for `who`; raise RateLimitedError (429) when all `limit` are in use."""
        if self._open.get(who, 0) >= self.limit:
            raise rate_limited(5, f"too many open streams ({self.limit} allowed); close one first")
        self._open[who] = self._open.get(who, 0) + 1

    def release(self, who: str) -> None:
        left = self._open.get(who, 0) - 1
        if left > 0:
            self._open[who] = left
        else:
            self._open.pop(who, None)
