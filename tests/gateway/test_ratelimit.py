"""Token buckets with a hand-moved clock: Retry-After is ceil(wait), and a request at now+Retry-After passes."""

from __future__ import annotations

import math

import pytest

from gateway.errors import RateLimitedError
from gateway.ratelimit import Rate, RateLimiter, StreamLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_retry_after_then_allowed() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"api": Rate(per_minute=6, burst=3)}, clock=clock)
    for _ in range(3):
        limiter.hit("api", "alice")
    with pytest.raises(RateLimitedError) as caught:
        limiter.hit("api", "alice")
    retry_after = int(caught.value.headers["Retry-After"])
    assert retry_after == math.ceil(60 / 6) == caught.value.details["retry_after"]
    limiter.hit("api", "bob")  # buckets are per caller
    clock.now += retry_after - 1
    assert limiter.check("api", "alice") > 0
    clock.now += 1
    limiter.hit("api", "alice")


def test_retry_after_is_at_least_one_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"chat": Rate(per_minute=6000, burst=1)}, clock=clock)
    limiter.hit("chat", "x")
    with pytest.raises(RateLimitedError) as caught:
        limiter.hit("chat", "x")
    assert caught.value.headers["Retry-After"] == "1"


def test_memory_stays_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"api": Rate(per_minute=60, burst=5)}, clock=clock, max_keys=100)
    for i in range(1000):
        limiter.hit("api", f"ip:{i}")
        clock.now += 10  # each earlier bucket has refilled by now, so it can be dropped
    assert len(limiter._buckets) <= 100


def test_stream_limiter() -> None:
    streams = StreamLimiter(2)
    streams.acquire("a")
    streams.acquire("a")
    with pytest.raises(RateLimitedError):
        streams.acquire("a")
    streams.acquire("b")
    streams.release("a")
    streams.acquire("a")
    assert streams.count("a") == 2
