"""Request authentication: the gateway (admin) token, compared in constant time and never logged."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from gateway.errors import UnauthorizedError


def token_matches(presented: str | None, expected: str) -> bool:
    """Compare a presented token with the expected one in constant time (None never matches)."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode())


def bearer_token(conn: HTTPConnection) -> str | None:
    """Return the token of an `Authorization: Bearer …` header, or None."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require_admin(conn: HTTPConnection) -> None:
    """Raise UnauthorizedError (401) unless the request carries the gateway token as a Bearer token."""
    expected: str = conn.app.state.runtime.token
    presented = bearer_token(conn)
    if not token_matches(presented, expected):
        if presented is None:
            why = "this route needs the gateway token: send `Authorization: Bearer <token>`"
        elif presented.count(".") == 2:
            why = "this route takes the gateway token only, not a user's access token"
        else:
            why = "this is not the gateway token; check it for a typo or a rotation"
        raise UnauthorizedError(f"{why} (`gateway token` prints it)", headers={"WWW-Authenticate": "Bearer"})
