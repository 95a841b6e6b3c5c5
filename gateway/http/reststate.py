"""The state the REST routes share (token issuer, password hasher, rate limits), apart from the routes' plumbing:
it is built at start, and an idle gateway imports none of the REST plumbing (nor Starlette)."""

from __future__ import annotations

import msgspec

from gateway.core import Runtime, started
from gateway.http.credentials import PasswordHasher, TokenIssuer
from gateway.http.ratelimit import FailedAuthThrottle, RateLimiter, StreamLimiter


class RestState(msgspec.Struct):
    """What the REST routes share; built once by `start_services` and kept in `runtime.services.rest`."""

    issuer: TokenIssuer
    hasher: PasswordHasher
    limiter: RateLimiter
    streams: StreamLimiter
    # The notification streams' own slots (as many): a page open in several tabs holds one each all the time, and
    # must not use up the slots its chat streams need.
    note_streams: StreamLimiter
    throttle: FailedAuthThrottle | None = None  # None with `limits.enabled = false`


def rest_of(runtime: Runtime) -> RestState:
    return started(runtime.services.rest, "the REST state")
