"""Credentials: argon2id passwords, pinned-algorithm JWTs, rotating refresh tokens, constant-time token checks."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import trio

from gateway.errors import UnauthorizedError
from gateway.logs import redactor

# OWASP's minimum for argon2id (m=19 MiB, t=2, p=1); libsodium always uses p=1.
OPSLIMIT = 2
MEMLIMIT = 19 * 1024 * 1024
# Pinned: a token's own `alg` header is never trusted (RFC 8725 §2.1), so `none` and key confusion fail.
ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "typ"]
MAX_PASSWORD_BYTES = 1024
# A JWT this gateway did not sign (another gateway's, or its signing secret changed): a user session to renew.
_BAD_ACCESS_TOKEN = "this user access token is not valid on this gateway; log in again"


class PasswordHasher:
    """argon2id in worker threads, at most `concurrency` at once: each hash holds MEMLIMIT bytes."""

    def __init__(self, concurrency: int) -> None:
        self._limiter = trio.CapacityLimiter(concurrency)
        self._dummy: bytes | None = None

    def statistics(self) -> trio.CapacityLimiterStatistics:
        """How many hashes run now (`borrowed_tokens`) and how many wait for a slot (`tasks_waiting`)."""
        return self._limiter.statistics()

    async def hash(self, password: str) -> str:
        """Return the argon2id hash string (blocks a worker thread for ~50-100 ms)."""
        raw = password.encode()
        out: bytes = await trio.to_thread.run_sync(
            lambda: nacl.pwhash.argon2id.str(raw, opslimit=OPSLIMIT, memlimit=MEMLIMIT), limiter=self._limiter
        )
        return out.decode()

    async def verify(self, stored: str | None, password: str) -> bool:
        """Check `password` against `stored`; with None, burn the same time so unknown users are not revealed."""
        if stored is None:
            if self._dummy is None:
                self._dummy = (await self.hash(secrets.token_urlsafe(16))).encode()
            target = self._dummy
        else:
            target = stored.encode()
        raw = password.encode()

        def check() -> bool:
            try:
                return bool(nacl.pwhash.verify(target, raw))
            except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError, ValueError):
                return False

        ok = await trio.to_thread.run_sync(check, limiter=self._limiter)
        return ok and stored is not None


def token_matches(presented: str | None, expected: str) -> bool:
    """Compare a presented token with the expected one in constant time (None never matches)."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode())


def load_jwt_secret(path: Path) -> str:
    """Read the signing secret from the data folder, creating it (0600) on first use; never logged."""
    if path.exists():
        secret = path.read_text().strip()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        os.replace(tmp, path)
    redactor.add(secret)
    return secret


class TokenIssuer:
    """Signs and checks access tokens; makes opaque refresh tokens (only their SHA-256 is stored)."""

    def __init__(self, secret: str, *, access_ttl: float, refresh_ttl: float) -> None:
        self._secret = secret
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def access_token(self, user_id: str, role: str, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        import jwt  # PyJWT loads `cryptography` (~25 ms, MiBs): only gateways with users pay for it

        claims = {
            "sub": user_id, "role": role, "typ": "access", "iat": int(now), "exp": int(now + self.access_ttl),
            "iat_ms": int(now * 1000),  # `iat` is whole seconds: too coarse to tell a token from a password change
        }  # fmt: skip
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode_access(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid access token; raise UnauthorizedError for anything else."""
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], options={"require": _REQUIRED_CLAIMS}
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized(
                "your session's access token has expired; refresh it (`POST /api/auth/refresh`) or log in again",
                "TOKEN_EXPIRED",
            ) from None
        except jwt.InvalidTokenError:
            raise unauthorized(_BAD_ACCESS_TOKEN, "INVALID_TOKEN") from None
        if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
            raise unauthorized(_BAD_ACCESS_TOKEN, "INVALID_TOKEN")
        return claims

    @staticmethod
    def new_refresh_token() -> tuple[str, str]:
        """Return (token to hand out, hash to store)."""
        token = secrets.token_urlsafe(32)
        return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    # A fast hash is right here: the token is 256 random bits, so there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def unauthorized(message: str, code: str = "UNAUTHORIZED") -> UnauthorizedError:
    return UnauthorizedError(message, code=code, headers={"WWW-Authenticate": "Bearer"})


def issued_before(claims: dict[str, Any], cutoff_ms: int) -> bool:
    """Whether an access token was issued before `cutoff_ms` (a password change): then it no longer counts."""
    issued = claims.get("iat_ms")
    if not isinstance(issued, int) or isinstance(issued, bool):
        issued = int(claims["iat"]) * 1000
    return issued < cutoff_ms
