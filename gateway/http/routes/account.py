"""An account's own routes: register (closed, open or by invite), login, refresh (rotating), profile, password."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError, ValidationFailedError
from gateway.http.api import Ctx, endpoint
from gateway.http.credentials import hash_refresh_token
from storage import users as users_db
from storage.clock import now_ms
from storage.users import DuplicateUserError, UserRow

log = logging.getLogger("gateway.users")

Username = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{3,32}$", description="3-32 letters, digits, _ . -")]
Email = Annotated[str, msgspec.Meta(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$", max_length=254)]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=256)]
Role = Literal["super_admin", "user"]
Status = Literal["active", "inactive", "banned"]


class RegisterRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    password: Password
    username: Username | None = None
    email: Email | None = None
    nickname: Annotated[str, msgspec.Meta(max_length=64)] = ""
    invite_code: Annotated[str, msgspec.Meta(max_length=256)] | None = None  # `[auth] registration = "invite"`


class LoginRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    password: Annotated[str, msgspec.Meta(max_length=256)]
    username: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None


class RefreshTokenRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class UpdateUserRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nickname: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    avatar: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


class PasswordChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    current_password: Annotated[str, msgspec.Meta(max_length=256)]
    new_password: Password


class UserResponse(msgspec.Struct, kw_only=True):
    id: str
    username: str | None
    email: str | None
    nickname: str
    avatar: str
    role: Role
    status: Status
    created_at: str


class TokenResponse(msgspec.Struct, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class LoginResponse(msgspec.Struct, kw_only=True):
    user: UserResponse
    tokens: TokenResponse


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC, the form every timestamp takes in the API."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def user_out(u: UserRow) -> UserResponse:
    return UserResponse(
        id=u.id,
        username=u.username,
        email=u.email,
        nickname=u.nickname,
        avatar=u.avatar,
        role=u.role,  # type: ignore[arg-type]
        status=u.status,  # type: ignore[arg-type]
        created_at=iso(u.created_at) or "",
    )


async def issue_tokens(ctx: Ctx, user: UserRow, family: str | None = None) -> TokenResponse:
    rest = ctx.rest
    refresh, refresh_hash = rest.issuer.new_refresh_token()
    ts = now_ms()
    await ctx.store.call(
        users_db.add_refresh_token,
        user_id=user.id,
        token_hash=refresh_hash,
        family=family,
        expires_at=ts + int(rest.issuer.refresh_ttl * 1000),
        now_ms=ts,
    )
    return TokenResponse(
        access_token=rest.issuer.access_token(user.id, user.role),
        refresh_token=refresh,
        expires_in=int(rest.issuer.access_ttl),
    )


def _check_status(user: UserRow) -> None:
    if user.status == "banned":
        raise ForbiddenError("this account is banned", code="USER_BANNED")
    if user.status != "active":
        raise ForbiddenError("this account is inactive; ask an administrator", code="USER_INACTIVE")


def require_username_or_email(username: str | None, email: str | None) -> None:
    if not username and not email:
        raise ValidationFailedError(
            "give a username or an email", details=[{"loc": ["body", "username"], "message": "username or email"}]
        )


@endpoint(
    "POST",
    "/api/auth/register",
    summary="Register an account (a plain user, never an admin) when [auth] registration is open or invite",
    tag="auth",
    auth="none",
    group="auth",
    body=RegisterRequest,
    response=LoginResponse,
    status=201,
    errors=(403, 409, 422, 429),
)
async def register(ctx: Ctx) -> LoginResponse:
    req: RegisterRequest = ctx.body
    require_username_or_email(req.username, req.email)
    mode = ctx.runtime.config.auth.registration
    if mode == "closed":
        raise ForbiddenError(
            "registration is closed: the owner makes accounts (`gateway user add NAME` on the machine)",
            code="REGISTRATION_CLOSED",
        )
    if mode == "invite" and not req.invite_code:
        raise ForbiddenError("registration needs an invite code; ask an administrator for one", code="INVITE_REQUIRED")
    password_hash = await ctx.rest.hasher.hash(req.password)
    ts = now_ms()

    def create(conn: Any) -> UserRow:
        user = users_db.create_user(
            conn, username=req.username, email=req.email.lower() if req.email else None,
            password_hash=password_hash, nickname=req.nickname, role="user", now_ms=ts,
        )  # fmt: skip
        # In the same transaction: a refused invite leaves no account behind, and one code makes one account.
        if mode == "invite" and not users_db.use_invite(conn, req.invite_code or "", used_by=user.id, now_ms=ts):
            raise ForbiddenError("this invite code is unknown, used or expired", code="INVALID_INVITE")
        return user

    try:
        user = await ctx.store.call(create)
    except DuplicateUserError as exc:
        raise ConflictError(str(exc), code="USER_EXISTS") from None
    log.info("user %s (%s) registered as %s", user.id, user.username or "no username", user.role)
    return LoginResponse(user=user_out(user), tokens=await issue_tokens(ctx, user))


@endpoint(
    "POST",
    "/api/auth/login",
    summary="Log in by username or email",
    tag="auth",
    auth="none",
    group="auth",
    body=LoginRequest,
    response=LoginResponse,
    errors=(401, 403, 422, 429),
)
async def login(ctx: Ctx) -> LoginResponse:
    req: LoginRequest = ctx.body
    require_username_or_email(req.username, req.email)
    ctx.check_auth_throttle()
    # Counted before the hash is checked, so that many attempts at once cannot all slip in before the first fails.
    ctx.auth_failed()
    user = await ctx.store.call(users_db.find_user, username=req.username, email=req.email)
    ok = await ctx.rest.hasher.verify(user.password_hash if user else None, req.password)
    if not ok or user is None:
        raise UnauthorizedError("wrong username, email or password", code="INVALID_CREDENTIALS")
    ctx.auth_succeeded()
    _check_status(user)
    return LoginResponse(user=user_out(user), tokens=await issue_tokens(ctx, user))


@endpoint(
    "POST",
    "/api/auth/refresh",
    summary="Swap a refresh token for new tokens (the old one stops working)",
    tag="auth",
    auth="none",
    group="auth",
    body=RefreshTokenRequest,
    response=TokenResponse,
    errors=(401, 403, 422, 429),
)
async def refresh(ctx: Ctx) -> TokenResponse:
    req: RefreshTokenRequest = ctx.body
    ts = now_ms()
    ctx.check_auth_throttle()
    found = await ctx.store.call(users_db.use_refresh_token, hash_refresh_token(req.refresh_token), now_ms=ts)
    if found is None:
        ctx.auth_failed()
        raise UnauthorizedError("unknown refresh token; log in again", code="INVALID_REFRESH_TOKEN")
    if found.used_at is not None or found.revoked:
        # Reuse of a rotated token means it was stolen (or the thief already used it): end the whole family.
        await ctx.store.call(users_db.revoke_family, found.family)
        raise UnauthorizedError("this refresh token was already used; log in again", code="REFRESH_TOKEN_REUSED")
    if found.expires_at <= ts:
        raise UnauthorizedError("the refresh token has expired; log in again", code="INVALID_REFRESH_TOKEN")
    user = await ctx.store.call(users_db.get_user, found.user_id)
    if user is None:
        raise UnauthorizedError("this account no longer exists", code="INVALID_REFRESH_TOKEN")
    _check_status(user)
    return await issue_tokens(ctx, user, family=found.family)


async def _me(ctx: Ctx) -> UserRow:
    if ctx.user.user_id is None:
        raise ForbiddenError("the gateway token is not a user account; log in as a user", code="NOT_A_USER")
    user = await ctx.store.call(users_db.get_user, ctx.user.user_id)
    if user is None:
        raise NotFoundError("this account no longer exists", code="USER_NOT_FOUND")
    return user


@endpoint("GET", "/api/auth/me", summary="The current user", tag="auth", response=UserResponse, errors=(401, 403))
async def get_me(ctx: Ctx) -> UserResponse:
    return user_out(await _me(ctx))


@endpoint(
    "PUT",
    "/api/auth/me",
    summary="Update the current user's nickname or avatar",
    tag="auth",
    body=UpdateUserRequest,
    response=UserResponse,
    errors=(401, 403, 422),
)
async def put_me(ctx: Ctx) -> UserResponse:
    req: UpdateUserRequest = ctx.body
    user = await _me(ctx)
    await ctx.store.call(users_db.update_profile, user.id, nickname=req.nickname, avatar=req.avatar, now_ms=now_ms())
    return user_out(await _me(ctx))


@endpoint(
    "PUT",
    "/api/auth/me/password",
    summary="Change your own password (give the current one); your other sessions end, new tokens come back",
    tag="auth",
    group="auth",
    body=PasswordChange,
    response=TokenResponse,
    errors=(401, 403, 422, 429),
)
async def put_my_password(ctx: Ctx) -> TokenResponse:
    req: PasswordChange = ctx.body
    user = await _me(ctx)
    ctx.auth_failed()  # until the hash says otherwise: see login
    if not await ctx.rest.hasher.verify(user.password_hash, req.current_password):
        raise UnauthorizedError("the current password is wrong", code="INVALID_CREDENTIALS")
    ctx.auth_succeeded()
    new_hash = await ctx.rest.hasher.hash(req.new_password)
    await ctx.store.call(users_db.set_password, user.id, new_hash, now_ms=now_ms())
    return await issue_tokens(ctx, user)
