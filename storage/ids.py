"""Time-ordered identifiers (UUIDv7 layout) so that new rows append to the end of every index."""

from __future__ import annotations

import os
import threading

from storage.clock import now_ms

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> str:
    """Return a 32-hex-char id whose lexical order is its creation order (48-bit ms clock, 12-bit counter)."""
    global _last_ms, _counter
    with _lock:
        ms = now_ms()
        if ms <= _last_ms:
            # Same millisecond (or the clock stepped back): keep order by counting up instead.
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                ms += 1
                _counter = 0
        else:
            _counter = 0
        _last_ms = ms
        counter = _counter
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    return f"{value:032x}"


def id_time_ms(ident: str) -> int:
    """Return the creation time in milliseconds encoded in an id made by `new_id`."""
    return int(ident[:12], 16)
