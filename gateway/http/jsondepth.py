"""Bounding how deeply a client's JSON nests, checked on the raw bytes before any parser recurses into it.

msgspec (like every recursive parser) raises RecursionError on a few thousand nested arrays, and 200 000 of them fit
in one ingress body (issue 13): without this check that was a 500. Legitimate bodies (Telegram updates, Slack
events, connector batches, REST requests) nest far less than `MAX_DEPTH`.
"""

from __future__ import annotations

from itertools import accumulate

from gateway.errors import InvalidRequestError

MAX_DEPTH = 64
# Keeps quotes and brackets, with `{}` spelled `[]`: depth does not depend on which kind of bracket opens.
_TO_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def too_deep(raw: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text `raw` opens more than `limit` arrays/objects inside each other.

    Linear in the size of `raw` and done by the bytes machinery in C (a batch of 100 events costs less than decoding
    it), except one step per bracket when the nesting is deeper than `limit` or the brackets do not pair up.
    Invalid JSON is never reported valid here, only maybe too deep.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    if b"\\" in data:
        # Escapes pair backslashes left to right, as a JSON lexer does: drop `\\` first, then the escaped quotes;
        # what is left of an escape is a letter, which the translation below drops.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = data.translate(_TO_BRACKETS, _NOT_STRUCTURE)
    if structure.count(b"[") <= limit:
        return False
    # Between quotes is inside a string (brackets there nest nothing). Dropping two adjacent quotes keeps every
    # bracket on its side of the strings (the quotes before it stay odd or even), and leaves none in most bodies.
    brackets = structure.replace(b'""', b"")
    if b'"' in brackets:
        parts = brackets.split(b'"')  # an unterminated last string counts, as if it were not one
        brackets = b"".join(parts[::2] if len(parts) % 2 else [*parts[::2], parts[-1]])
    if b"[" * (limit + 1) in brackets:
        return True  # that many opening in a row (the usual attack) cannot be shallow enough
    # Removing every `[]` at once peels one level off every innermost array and object, so balanced brackets are
    # gone after exactly as many passes as they nest deep.
    rest = brackets
    for _ in range(limit):
        peeled = rest.replace(b"[]", b"")
        if not peeled:
            return False
        if len(peeled) == len(rest):
            break  # unbalanced: count it the slow way
        rest = peeled
    return max(accumulate(1 if b == 91 else -1 for b in brackets), default=0) > limit


def check_depth(raw: bytes | str, what: str = "the body") -> None:
    """Raise InvalidRequestError (400 `JSON_TOO_DEEP`) when `raw` nests deeper than MAX_DEPTH."""
    if too_deep(raw):
        raise InvalidRequestError(
            f"{what} nests JSON arrays/objects more than {MAX_DEPTH} levels deep; send a flatter document",
            code="JSON_TOO_DEEP",
        )
