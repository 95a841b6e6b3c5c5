"""Users: register, login, refresh (rotating, reuse revokes the family), profile; and the admin user routes."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Literal

import msgspec

from gateway.api import Ctx, Ok, endpoint
from gateway.authn import hash_refresh_token
from gateway.errors import ConflictError, ForbiddenError, NotFoundError, UnauthorizedError, ValidationFailedError
from storage import users as users_db
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


class LoginRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    password: Annotated[str, msgspec.Meta(max_length=256)]
    username: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None


class RefreshTokenRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class UpdateUserRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    nickname: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    avatar: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


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


class UserListQuery(msgspec.Struct, kw_only=True):
    skip: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0  # le: SQLite's largest integer (a 422, not a 500)
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class UserListResponse(msgspec.Struct, kw_only=True):
    users: list[UserResponse]
    total: int


class UserStatusUpdateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: Status


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC, the form every timestamp takes in the API."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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


@endpoint(
    "POST",
    "/api/auth/register",
    summary="Register a user (the first one becomes super_admin)",
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
    if not req.username and not req.email:
        raise ValidationFailedError(
            "give a username or an email", details=[{"loc": ["body", "username"], "message": "username or email"}]
        )
    if not ctx.runtime.config.auth.registration_open and await ctx.store.call(users_db.count_users) > 0:
        raise ForbiddenError("registration is closed; ask an administrator", code="REGISTRATION_CLOSED")
    password_hash = await ctx.rest.hasher.hash(req.password)
    try:
        user = await ctx.store.call(
            users_db.create_user,
            username=req.username,
            email=req.email.lower() if req.email else None,
            password_hash=password_hash,
            nickname=req.nickname,
            now_ms=now_ms(),
        )
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
    if not req.username and not req.email:
        raise ValidationFailedError(
            "give a username or an email", details=[{"loc": ["body", "username"], "message": "username or email"}]
        )
    user = await ctx.store.call(users_db.find_user, username=req.username, email=req.email)
    ok = await ctx.rest.hasher.verify(user.password_hash if user else None, req.password)
    if not ok or user is None:
        raise UnauthorizedError("wrong username, email or password", code="INVALID_CREDENTIALS")
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
    found = await ctx.store.call(users_db.use_refresh_token, hash_refresh_token(req.refresh_token), now_ms=ts)
    if found is None:
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


# ---- admin ----


@endpoint(
    "GET",
    "/api/admin/users",
    summary="List users",
    tag="admin",
    auth="admin",
    query=UserListQuery,
    response=UserListResponse,
    errors=(401, 403, 422),
)
async def list_users(ctx: Ctx) -> UserListResponse:
    q: UserListQuery = ctx.query
    rows, total = await ctx.store.call(users_db.list_users, skip=q.skip, limit=q.limit)
    return UserListResponse(users=[user_out(u) for u in rows], total=total)


async def _target(ctx: Ctx, *, changing: bool) -> UserRow:
    user = await ctx.store.call(users_db.get_user, ctx.path("user_id"))
    if user is None:
        raise NotFoundError("no such user", code="USER_NOT_FOUND")
    if changing and user.id == ctx.user.user_id:
        raise ForbiddenError("you cannot change or delete your own account here", code="CANNOT_MODIFY_SELF")
    if changing and user.role == "super_admin":
        raise ForbiddenError(
            "an admin account cannot be changed or deleted by another admin", code="CANNOT_MODIFY_ADMIN"
        )
    return user


@endpoint(
    "GET",
    "/api/admin/users/{user_id}",
    summary="One user",
    tag="admin",
    auth="admin",
    response=UserResponse,
    errors=(401, 403, 404),
)
async def get_user(ctx: Ctx) -> UserResponse:
    return user_out(await _target(ctx, changing=False))


@endpoint(
    "PUT",
    "/api/admin/users/{user_id}/status",
    summary="Set a user's status (not yours, not another admin's)",
    tag="admin",
    auth="admin",
    body=UserStatusUpdateRequest,
    response=Ok,
    errors=(401, 403, 404, 422),
)
async def set_user_status(ctx: Ctx) -> Ok:
    req: UserStatusUpdateRequest = ctx.body
    user = await _target(ctx, changing=True)
    await ctx.store.call(users_db.set_status, user.id, req.status, now_ms=now_ms())
    log.info("user %s (%s) status %s -> %s, by %s", user.id, user.username, user.status, req.status, _who(ctx))
    return Ok()


@endpoint(
    "DELETE",
    "/api/admin/users/{user_id}",
    summary="Delete a user (not yourself, not another admin)",
    tag="admin",
    auth="admin",
    response=Ok,
    errors=(401, 403, 404),
)
async def delete_user(ctx: Ctx) -> Ok:
    user = await _target(ctx, changing=True)
    await ctx.store.call(users_db.delete_user, user.id)
    log.info("user %s (%s) deleted, by %s", user.id, user.username, _who(ctx))
    return Ok()


def _who(ctx: Ctx) -> str:
    return ctx.user.user_id or "the gateway token"
