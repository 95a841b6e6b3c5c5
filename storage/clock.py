"""Wall-clock time as the gateway stores it: whole milliseconds since the Unix epoch (every `*_ms` column)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """The wall clock in milliseconds; the one definition every layer imports (actors and gateway included)."""
    return time.time_ns() // 1_000_000
