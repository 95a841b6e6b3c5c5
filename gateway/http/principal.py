"""Who is calling a request: the bearer credential, the `Principal` it stands for, the owner and admin checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import msgspec

from actors.store import Store
from gateway.errors import OwnerOnlyError, UnauthorizedError
from gateway.http.credentials import TokenIssuer, issued_before, token_matches, unauthorized
from gateway.http.ratelimit import FailedAuthThrottle
from storage import users as users_db

if TYPE_CHECKING:  # the layer in front of the Starlette app authenticates without importing it
    from starlette.requests import HTTPConnection


class Peer(Protocol):
    @property
    def host(self) -> str: ...


class Caller(Protocol):
    """What authentication reads of a request: its headers (by lower-case name) and its client. A Starlette
    `Request` is one; so is `gateway.http.front`'s view of a raw ASGI scope."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def client(self) -> Peer | None: ...


class Principal(msgspec.Struct, frozen=True):
    """The caller of a request: a user, or the gateway token acting as super admin (`user_id` None)."""

    user_id: str | None
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "super_admin"

    @property
    def is_owner(self) -> bool:
        """Whether this is the owner: the holder of the gateway token (never a user account, not even an admin's).

        Powers that reach the host (running a command, reading arbitrary paths) are the owner's alone (issue 14).
        """
        return self.user_id is None and self.role == "super_admin"

    @property
    def owner(self) -> str | None:
        """What goes in an `owner` column for things this caller creates (None for the gateway token)."""
        return self.user_id

    def may_access(self, owner: str | None) -> bool:
        """Admins see everything; a user sees only what they own."""
        return self.is_admin or (self.user_id is not None and owner == self.user_id)


ADMIN_TOKEN = Principal(None, "super_admin")  # the gateway token: the owner


def require_owner(principal: Principal, what: str) -> None:
    """Raise OwnerOnlyError (403 OWNER_ONLY) unless `principal` is the owner; `what` names the power asked for."""
    if not principal.is_owner:
        raise OwnerOnlyError(what)


def bearer_token(conn: Caller) -> str | None:
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


def classify_bearer(token: str | None, gateway_token: str) -> str:
    """Say what a bearer credential looks like: `missing`, `gateway`, `jwt` (not yet verified) or `other`.

    A user's access token is always a JWT (three dot-separated parts); anything else that is not the gateway
    token can only be a mistyped or outdated gateway token, which deserves its own message.
    """
    if not token:
        return "missing"
    if token_matches(token, gateway_token):
        return "gateway"
    return "jwt" if token.count(".") == 2 else "other"


def wrong_gateway_token() -> UnauthorizedError:
    """A bearer that is neither the gateway token nor a JWT: a typo or an old token, not an expired session."""
    return unauthorized(
        "this is not the gateway token (and not a user's access token); check it for a typo or a rotation: "
        "`gateway token` prints the current one",
        "INVALID_GATEWAY_TOKEN",
    )


def missing_credentials() -> UnauthorizedError:
    return unauthorized(
        "authentication required: send `Authorization: Bearer <access token or gateway token>`", "UNAUTHORIZED"
    )


def client_address(conn: Caller) -> str:
    """The client's address: the peer's, or the one a trusted proxy reports (`server.trusted_proxies`)."""
    return conn.client.host if conn.client else "unknown"


async def authenticate(
    request: Caller, *, gateway_token: str, issuer: TokenIssuer, throttle: FailedAuthThrottle | None, store: Store
) -> Principal:
    """Return the caller of `request`: the gateway token, or a valid access token of an active user.

    Raises UnauthorizedError (401) for a missing, bad, expired or revoked credential, and RateLimitedError (429)
    while the client's address waits after failed authentications (FailedAuthThrottle).
    """
    token = bearer_token(request)
    if token is None:
        raise missing_credentials()
    address = client_address(request)
    if throttle is not None:
        throttle.check(address)  # before the credential is looked at: a refused guess learns nothing
    kind = classify_bearer(token, gateway_token)
    if kind == "gateway":
        if throttle is not None:
            throttle.succeeded(address)
        return ADMIN_TOKEN
    if kind == "other":
        if throttle is not None:
            throttle.failed(address)
        raise wrong_gateway_token()
    try:
        claims = issuer.decode_access(token)
    except UnauthorizedError as exc:
        # A forged or mistyped token is a guess; an expired one of ours is not (its client refreshes it).
        if exc.code == "INVALID_TOKEN" and throttle is not None:
            throttle.failed(address)
        raise
    if throttle is not None:
        throttle.succeeded(address)
    user = await store.read(users_db.get_user, claims["sub"])  # every request: it must not wait on a write
    if user is None or user.status != "active":
        # A deleted, banned or deactivated user's tokens stop working at once, not at their expiry.
        raise UnauthorizedError(
            "this account no longer exists or is not active",
            code="ACCOUNT_DISABLED",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if issued_before(claims, user.tokens_after):
        raise UnauthorizedError(
            "the password changed since this token was issued; log in again",
            code="TOKEN_REVOKED",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # The role comes from the database, so a demoted admin loses the role with the next request.
    return Principal(user.id, user.role)
