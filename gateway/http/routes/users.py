"""Managing accounts: admins list, make, ban and delete users and hand out invites; admin accounts are the owner's."""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec

from gateway.errors import ConflictError, ForbiddenError, NotFoundError
from gateway.http.api import Ctx, Ok, endpoint
from gateway.http.principal import require_owner
from gateway.http.routes.account import (
    Email,
    Password,
    Role,
    Status,
    Username,
    UserResponse,
    iso,
    require_username_or_email,
    user_out,
)
from storage import users as users_db
from storage.clock import now_ms
from storage.users import DuplicateUserError, UserRow

log = logging.getLogger("gateway.users")

MAX_INVITE_TTL = 90 * 86400


class UserListQuery(msgspec.Struct, kw_only=True):
    skip: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0  # le: SQLite's largest integer (a 422, not a 500)
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class UserListResponse(msgspec.Struct, kw_only=True):
    users: list[UserResponse]
    total: int


class UserStatusUpdateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: Status


class UserRoleUpdateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: Role


class CreateUserRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    password: Password
    username: Username | None = None
    email: Email | None = None
    nickname: Annotated[str, msgspec.Meta(max_length=64)] = ""
    role: Role = "user"  # super_admin: the gateway token only


class InviteRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    expires_in: Annotated[int, msgspec.Meta(ge=60, le=MAX_INVITE_TTL)] | None = None  # seconds; [auth] invite_ttl


class InviteResponse(msgspec.Struct, kw_only=True):
    code: str
    expires_at: str


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


@endpoint(
    "POST",
    "/api/admin/users",
    summary="Make an account (role super_admin: the gateway token only)",
    tag="admin",
    auth="admin",
    body=CreateUserRequest,
    response=UserResponse,
    status=201,
    errors=(401, 403, 409, 422),
)
async def create_user(ctx: Ctx) -> UserResponse:
    req: CreateUserRequest = ctx.body
    require_username_or_email(req.username, req.email)
    if req.role == "super_admin":
        require_owner(ctx.user, "making an admin account")
    password_hash = await ctx.rest.hasher.hash(req.password)
    try:
        user = await ctx.store.call(
            users_db.create_user,
            username=req.username,
            email=req.email.lower() if req.email else None,
            password_hash=password_hash,
            nickname=req.nickname,
            role=req.role,
            now_ms=now_ms(),
        )
    except DuplicateUserError as exc:
        raise ConflictError(str(exc), code="USER_EXISTS") from None
    log.info("user %s (%s) created as %s, by %s", user.id, user.username or "no username", user.role, _who(ctx))
    return user_out(user)


async def _target(ctx: Ctx, *, changing: bool) -> UserRow:
    user = await ctx.store.call(users_db.get_user, ctx.path("user_id"))
    if user is None:
        raise NotFoundError("no such user", code="USER_NOT_FOUND")
    if changing and user.id == ctx.user.user_id:
        raise ForbiddenError("you cannot change or delete your own account here", code="CANNOT_MODIFY_SELF")
    if changing and user.role == "super_admin" and not ctx.user.is_owner:
        raise ForbiddenError(
            "an admin account can only be changed or deleted by the owner (the gateway token, or `gateway user` "
            "on the machine)",
            code="CANNOT_MODIFY_ADMIN",
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
    summary="Set a user's status (not yours; an admin's: the gateway token only); banned or inactive: at once",
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
    "PUT",
    "/api/admin/users/{user_id}/role",
    summary="Promote or demote a user (the gateway token only); the next request already has the new role",
    tag="admin",
    auth="admin",
    body=UserRoleUpdateRequest,
    response=UserResponse,
    errors=(401, 403, 404, 422),
)
async def set_user_role(ctx: Ctx) -> UserResponse:
    req: UserRoleUpdateRequest = ctx.body
    require_owner(ctx.user, "changing an account's role")
    user = await _target(ctx, changing=True)
    await ctx.store.call(users_db.set_role, user.id, req.role, now_ms=now_ms())
    log.info("user %s (%s) role %s -> %s, by %s", user.id, user.username, user.role, req.role, _who(ctx))
    return user_out(await _target(ctx, changing=False))


@endpoint(
    "DELETE",
    "/api/admin/users/{user_id}",
    summary="Delete a user (not yourself; an admin: the gateway token only)",
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


@endpoint(
    "POST",
    "/api/admin/invites",
    summary='Make a single-use invite code for `[auth] registration = "invite"` (it makes a plain user)',
    tag="admin",
    auth="admin",
    body=InviteRequest,
    response=InviteResponse,
    status=201,
    errors=(401, 403, 422),
)
async def create_invite(ctx: Ctx) -> InviteResponse:
    req: InviteRequest = ctx.body
    ttl = req.expires_in if req.expires_in is not None else ctx.runtime.config.auth.invite_ttl
    ts = now_ms()
    expires_at = ts + int(ttl * 1000)
    code = await ctx.store.call(users_db.create_invite, created_by=ctx.user.user_id, expires_at=expires_at, now_ms=ts)
    return InviteResponse(code=code, expires_at=iso(expires_at) or "")
