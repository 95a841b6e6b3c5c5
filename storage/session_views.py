"""Session queries the REST API needs beyond `storage.sessions`: per-owner listing, unread reset, turn lookups."""

from __future__ import annotations

import sqlite3

from storage.sessions import _COLUMNS, SessionRow


def list_for(
    conn: sqlite3.Connection, owner: str | None, *, all_owners: bool, limit: int, offset: int
) -> list[SessionRow]:
    """Sessions most recently updated first: every one when `all_owners`, else only `owner`'s."""
    if all_owners:
        sql, args = (
            f"SELECT {_COLUMNS} FROM sessions ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        rows = conn.execute(sql, args).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM sessions WHERE owner = ? ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
            (owner, limit, offset),
        ).fetchall()
    return [SessionRow(*r) for r in rows]


def clear_unread(conn: sqlite3.Connection, session_id: str) -> None:
    conn.execute("UPDATE sessions SET unread = 0 WHERE id = ?", (session_id,))


def has_running_turn(conn: sqlite3.Connection, session_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM turns WHERE session_id = ? AND state IN ('queued', 'running') LIMIT 1", (session_id,)
    ).fetchone()
    return row is not None
