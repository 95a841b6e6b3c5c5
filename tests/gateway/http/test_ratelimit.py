"""Token buckets and the failed-auth throttle with a hand-moved clock: Retry-After is ceil(wait), memory bounded."""

from __future__ import annotations

import math

import pytest

from gateway.errors import RateLimitedError
from gateway.http.ratelimit import FailedAuthThrottle, Rate, RateLimiter, StreamLimiter


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


# ---- failed authentication per address (over real sockets: tests/gateway/http/test_auth_throttle.py) ----


def test_the_wait_doubles_after_the_free_failures_up_to_the_cap() -> None:
    clock = FakeClock()
    t = FailedAuthThrottle(free=2, max_delay=10, clock=clock)
    assert [t.failed("a") for _ in range(7)] == [0, 0, 1, 2, 4, 8, 10]
    assert t.wait("a") == 10 and t.wait("b") == 0
    clock.now += 10
    assert t.wait("a") == 0  # served its wait; the next failure waits the cap again
    assert t.failed("a") == 10
    t.succeeded("a")
    assert t.wait("a") == 0 and t.failed("a") == 0


def test_failures_are_forgotten_after_a_quiet_while() -> None:
    clock = FakeClock()
    t = FailedAuthThrottle(free=1, forget_after=60, clock=clock)
    assert [t.failed("a") for _ in range(3)] == [0, 1, 2]
    clock.now += 61
    assert t.failed("a") == 0  # counted afresh


def test_memory_is_bounded_under_a_flood_of_addresses() -> None:
    clock = FakeClock()
    t = FailedAuthThrottle(free=0, max_delay=300, forget_after=60, max_addresses=100, clock=clock)
    for i in range(50):
        t.failed(f"10.0.0.{i}")
    clock.now += 400  # the first fifty are forgettable now
    for i in range(10_000):
        t.failed(f"10.1.{i // 256}.{i % 256}")
        assert len(t) <= 100
    assert t.wait("10.1.39.15") > 0  # the newest are kept


def test_take_up_to_is_take_per_item_in_one_call() -> None:
    from gateway.http.ratelimit import TokenBucket

    for count, level in [(5, 2.5), (2, 2.5), (3, 0.25), (0, 1.0), (4, 4.0)]:
        one, each = TokenBucket(2.0, burst=4.0, now=0.0), TokenBucket(2.0, burst=4.0, now=0.0)
        one.tokens = each.tokens = level
        waits = [each.take(now=0.0) for _ in range(count)]
        taken, wait = one.take_up_to(count, now=0.0)
        assert taken == sum(w == 0 for w in waits) and waits[:taken] == [0.0] * taken
        assert wait == (waits[taken] if taken < count else 0.0)
        assert one.tokens == each.tokens
