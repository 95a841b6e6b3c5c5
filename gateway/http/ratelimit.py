"""In-process rate limits: token buckets, a cap on concurrent streams, the growing wait after failed authentication."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import msgspec

from gateway.errors import RateLimitedError


class Rate(msgspec.Struct, frozen=True):
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

    def take_up_to(self, count: int, *, now: float | None = None) -> tuple[int, float]:
        """Take one token for each of the first of `count` items that fit: (how many, seconds until the next
        would fit, 0 when all did). The same as `take()` called `count` times, in one call."""
        now = time.monotonic() if now is None else now
        self.tokens = self._level(now)
        self.stamp = now
        taken = min(count, int(self.tokens))
        self.tokens -= taken
        return taken, 0.0 if taken == count else (1.0 - self.tokens) / self.rate

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


class _Failures(msgspec.Struct):
    count: int
    last: float  # when the last failure happened
    until: float  # refused until then


class FailedAuthThrottle:
    """Failed authentication per client address: after `free` failures each one doubles the wait (1 s, 2 s, 4 s…,
    at most `max_delay`) during which that address is refused before its credential is even looked at.

    A success from the address forgets its failures; so does `forget_after` seconds without one. Other addresses
    are never slowed. Memory is bounded: past `max_addresses`, forgotten entries go first, then the oldest.
    """

    def __init__(
        self,
        *,
        free: int = 5,
        max_delay: float = 300.0,
        forget_after: float = 900.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_addresses = max_addresses
        self.clock = clock
        self._by_address: dict[str, _Failures] = {}  # insertion order: oldest failure first

    def __len__(self) -> int:
        return len(self._by_address)

    def wait(self, address: str) -> float:
        """Seconds before `address` may try again (0: now)."""
        entry = self._by_address.get(address)
        return 0.0 if entry is None else max(0.0, entry.until - self.clock())

    def check(self, address: str) -> None:
        """Raise RateLimitedError (429, `Retry-After`) while `address` must wait."""
        wait = self.wait(address)
        if wait > 0:
            raise rate_limited(wait, "too many failed authentications from this address")

    def failed(self, address: str) -> float:
        """Count a failure of `address`; return how long it must now wait (0 while failures are free)."""
        now = self.clock()
        entry = self._by_address.pop(address, None)
        if entry is None or now - entry.last > self.forget_after:
            entry = _Failures(0, now, now)
            if len(self._by_address) >= self.max_addresses:
                self._prune(now)
        entry.count += 1
        entry.last = now
        over = entry.count - self.free
        delay = 0.0 if over <= 0 else min(self.max_delay, 2.0 ** min(over - 1, 32))
        entry.until = now + delay
        self._by_address[address] = entry  # re-inserted: the dict stays ordered by last failure
        return delay

    def succeeded(self, address: str) -> None:
        """A correct credential from `address`: forget its failures."""
        if self._by_address:
            self._by_address.pop(address, None)

    def _prune(self, now: float) -> None:
        for address, entry in list(self._by_address.items()):
            if now - entry.last > self.forget_after and now >= entry.until:
                del self._by_address[address]
        while len(self._by_address) >= self.max_addresses:
            del self._by_address[next(iter(self._by_address))]
