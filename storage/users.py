"""Typed reads and writes of `users`, their rotating `refresh_tokens` and single-use `invites` (both as hashes)."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3

import msgspec

from storage.ids import new_id

ROLES = ("super_admin", "user")
STATUSES = ("active", "inactive", "banned")
_COLUMNS = "id, username, email, nickname, avatar, password_hash, role, status, created_at, updated_at, tokens_after"


class DuplicateUserError(Exception):
    """The username or email is already taken."""


class UserRow(msgspec.Struct, frozen=True):
    id: str
    username: str | None
    email: str | None
    nickname: str
    avatar: str
    password_hash: str
    role: str
    status: str
    created_at: int
    updated_at: int
    tokens_after: int = 0  # ms: access tokens issued before this (a password change) are refused


def count_users(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM users").fetchone()[0])


def create_user(
    conn: sqlite3.Connection,
    *,
    username: str | None,
    email: str | None,
    password_hash: str,
    nickname: str = "",
    role: str = "user",
    now_ms: int,
) -> UserRow:
    """Insert an active user with `role` (never chosen by the data: no first-user rule). Raises DuplicateUserError."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    user_id = new_id()
    try:
        conn.execute(
            f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, ?, ?, '', ?, ?, 'active', ?, ?, 0)",
            (user_id, username, email, nickname, password_hash, role, now_ms, now_ms),
        )
    except sqlite3.IntegrityError:
        raise DuplicateUserError("that username or email is already registered") from None
    user = get_user(conn, user_id)
    assert user is not None
    return user


def get_user(conn: sqlite3.Connection, user_id: str) -> UserRow | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
    return None if row is None else UserRow(*row)


def find_user(conn: sqlite3.Connection, *, username: str | None, email: str | None) -> UserRow | None:
    """Find by username, else by email (emails compare case-insensitively)."""
    if username:
        row = conn.execute(f"SELECT {_COLUMNS} FROM users WHERE username = ?", (username,)).fetchone()
    elif email:
        row = conn.execute(f"SELECT {_COLUMNS} FROM users WHERE email = ? COLLATE NOCASE", (email,)).fetchone()
    else:
        return None
    return None if row is None else UserRow(*row)


def list_users(conn: sqlite3.Connection, *, skip: int = 0, limit: int = 100) -> tuple[list[UserRow], int]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM users ORDER BY id LIMIT ? OFFSET ?", (limit, skip)).fetchall()
    return [UserRow(*r) for r in rows], count_users(conn)


def update_profile(
    conn: sqlite3.Connection, user_id: str, *, nickname: str | None, avatar: str | None, now_ms: int
) -> None:
    conn.execute(
        "UPDATE users SET nickname = coalesce(?, nickname), avatar = coalesce(?, avatar), updated_at = ? WHERE id = ?",
        (nickname, avatar, now_ms, user_id),
    )


def count_admins(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM users WHERE role = 'super_admin'").fetchone()[0])


def set_role(conn: sqlite3.Connection, user_id: str, role: str, *, now_ms: int) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    conn.execute("UPDATE users SET role = ?, updated_at = ? WHERE id = ?", (role, now_ms, user_id))


def set_password(conn: sqlite3.Connection, user_id: str, password_hash: str, *, now_ms: int) -> None:
    """Replace the password hash; every refresh token and every access token issued until now stops working."""
    conn.execute(
        "UPDATE users SET password_hash = ?, tokens_after = ?, updated_at = ? WHERE id = ?",
        (password_hash, now_ms, now_ms, user_id),
    )
    revoke_user_tokens(conn, user_id)


def set_status(conn: sqlite3.Connection, user_id: str, status: str, *, now_ms: int) -> None:
    conn.execute("UPDATE users SET status = ?, updated_at = ? WHERE id = ?", (status, now_ms, user_id))
    if status != "active":
        revoke_user_tokens(conn, user_id)


def delete_user(conn: sqlite3.Connection, user_id: str) -> bool:
    conn.execute("DELETE FROM refresh_tokens WHERE user_id = ?", (user_id,))
    return conn.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount > 0


# ---- refresh tokens: rotation with reuse detection (RFC 9700 §4.14.2) ----


class RefreshRow(msgspec.Struct, frozen=True):
    id: str
    family: str
    user_id: str
    expires_at: int
    used_at: int | None
    revoked: bool


def add_refresh_token(
    conn: sqlite3.Connection, *, user_id: str, token_hash: str, family: str | None, expires_at: int, now_ms: int
) -> str:
    """Store a new refresh token (in `family`, or a new family); return the family."""
    family = family or new_id()
    conn.execute(
        "INSERT INTO refresh_tokens (id, family, user_id, token_hash, expires_at, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (new_id(), family, user_id, token_hash, expires_at, now_ms),
    )
    return family


def use_refresh_token(conn: sqlite3.Connection, token_hash: str, *, now_ms: int) -> RefreshRow | None:
    """Mark the token used and return it as it was before, or None when unknown.

    The caller decides: a token already used or revoked means theft, and the family must be revoked.
    """
    row = conn.execute(
        "SELECT id, family, user_id, expires_at, used_at, revoked FROM refresh_tokens WHERE token_hash = ?",
        (token_hash,),
    ).fetchone()
    if row is None:
        return None
    found = RefreshRow(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
    if found.used_at is None:
        conn.execute("UPDATE refresh_tokens SET used_at = ? WHERE id = ?", (now_ms, found.id))
    return found


def revoke_family(conn: sqlite3.Connection, family: str) -> None:
    conn.execute("UPDATE refresh_tokens SET revoked = 1 WHERE family = ?", (family,))


def revoke_user_tokens(conn: sqlite3.Connection, user_id: str) -> None:
    conn.execute("UPDATE refresh_tokens SET revoked = 1 WHERE user_id = ?", (user_id,))


# ---- invites: `[auth] registration = "invite"` ----


def _invite_hash(code: str) -> str:
    # A fast hash is right: a code is 144 random bits, so there is nothing to brute-force.
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def create_invite(conn: sqlite3.Connection, *, created_by: str | None, expires_at: int, now_ms: int) -> str:
    """Store a fresh single-use invite (its hash only) and return the code to hand out."""
    code = secrets.token_urlsafe(18)
    conn.execute(
        "INSERT INTO invites (code_hash, created_by, expires_at, created_at) VALUES (?, ?, ?, ?)",
        (_invite_hash(code), created_by, expires_at, now_ms),
    )
    return code


def use_invite(conn: sqlite3.Connection, code: str, *, used_by: str, now_ms: int) -> bool:
    """Consume an unused, unexpired invite; False when there is none (unknown, used or expired)."""
    cur = conn.execute(
        "UPDATE invites SET used_at = ?, used_by = ? WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?",
        (now_ms, used_by, _invite_hash(code), now_ms),
    )
    return cur.rowcount == 1
