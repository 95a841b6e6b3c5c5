"""The open-files limit: raised at start to what `ws.max_connections` needs, or the cap lowered to fit (issue 14)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import msgspec

from gateway.config.file import Config

log = logging.getLogger("gateway.fdlimit")

# Descriptors kept for everything but `/ws` sockets: the database and its WAL and SHM, logs, the listening socket,
# HTTP requests, outgoing connections, MCP and sidecar pipes. Without them, accept() fails with EMFILE, every HTTP
# request stalls and the accept loop logs an error ten times a second.
RESERVED = 128


class AcceptErrorDamper(logging.Filter):
    """trio logs every accept() that fails for want of descriptors, with its traceback, ten times a second: let one
    line through per `every` seconds, without the traceback, saying how many were dropped in between."""

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        self.last = -math.inf
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        if now - self.last < self.every:
            self.dropped += 1
            return False
        self.last = now
        record.exc_info = None
        record.exc_text = None
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} more since the last report; see `ulimit -n`)"
            self.dropped = 0
        return True


def damp_accept_errors() -> None:
    """Install one AcceptErrorDamper on trio's `trio.serve_listeners` logger (idempotent)."""
    logger = logging.getLogger("trio.serve_listeners")
    if not any(isinstance(f, AcceptErrorDamper) for f in logger.filters):
        logger.addFilter(AcceptErrorDamper())


def cap_for(limit: int) -> int:
    """The `ws.max_connections` that fits an open-files limit: what is left after the reserve (half at most)."""
    return max(1, limit - min(RESERVED, limit // 2))


def fit_open_files(config: Config) -> Config:
    """Raise the soft RLIMIT_NOFILE (up to the hard limit) to `ws.max_connections` + RESERVED; when the hard limit
    is lower, return a config whose `ws.max_connections` fits, after one warning line. Also damps trio's accept
    errors, for the moments a burst of connections still runs out of descriptors. Never raises."""
    damp_accept_errors()
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to fit
        return config
    wanted = config.ws.max_connections + RESERVED
    infinity = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == infinity or soft >= wanted:
        return config
    target = wanted if hard == infinity else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError) as exc:
        log.debug("cannot raise the open-files limit to %d: %s", target, exc)
    if soft >= wanted:
        return config
    cap = cap_for(soft)
    log.warning(
        "the open-files limit is %d (hard limit %s), too low for ws.max_connections = %d: lowered it to %d; "
        "raise the limit (`ulimit -n`, or LimitNOFILE= in the service unit) to allow %d",
        soft, "unlimited" if hard == infinity else hard, config.ws.max_connections, cap, wanted,
    )  # fmt: skip
    return msgspec.structs.replace(config, ws=msgspec.structs.replace(config.ws, max_connections=cap))
