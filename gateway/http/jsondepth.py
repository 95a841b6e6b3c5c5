"""Bounding how deeply a client's JSON nests, checked on the raw bytes before any parser recurses into it.

msgspec (like every recursive parser) raises RecursionError on a few thousand nested arrays, and 200 000 of them fit
in one ingress body (issue 13): without this check that was a 500. Legitimate bodies (Telegram updates, Slack
events, connector batches, REST requests) nest far less than `MAX_DEPTH`.
"""

from __future__ import annotations

import re
from itertools import accumulate

from gateway.errors import InvalidRequestError

MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # brackets inside strings do not nest anything
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")


def too_deep(raw: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text `raw` opens more than `limit` arrays/objects inside each other.

    Linear in the size of `raw` and done by the regex and bytes machinery in C, except one step per bracket when
    there are more than `limit` of them at all. Invalid JSON is never reported valid here, only maybe too deep.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(1 if b in _OPEN else -1 for b in brackets), default=0) > limit


def check_depth(raw: bytes | str, what: str = "the body") -> None:
    """Raise InvalidRequestError (400 `JSON_TOO_DEEP`) when `raw` nests deeper than MAX_DEPTH."""
    if too_deep(raw):
        raise InvalidRequestError(
            f"{what} nests JSON arrays/objects more than {MAX_DEPTH} levels deep; send a flatter document",
            code="JSON_TOO_DEEP",
        )
