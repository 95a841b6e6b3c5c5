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


def first_user_messages(conn: sqlite3.Connection, session_ids: list[str], *, chars: int = 200) -> dict[str, str]:
    """The first `chars` characters of each session's first user message (sessions without one are left out)."""
    out: dict[str, str] = {}
    for session_id in session_ids:
        row = conn.execute(
            "SELECT substr(content, 1, ?) FROM messages WHERE session_id = ? AND role = 'user' ORDER BY id LIMIT 1",
            (chars, session_id),
        ).fetchone()
        if row is not None:
            out[session_id] = str(row[0])
    return out


def clear_unread(conn: sqlite3.Connection, session_id: str) -> None:
    conn.execute("UPDATE sessions SET unread = 0 WHERE id = ?", (session_id,))


def has_running_turn(conn: sqlite3.Connection, session_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM turns WHERE session_id = ? AND state IN ('queued', 'running') LIMIT 1", (session_id,)
    ).fetchone()
    return row is not None


def empty_session_of(
    conn: sqlite3.Connection, owner: str | None, transport: str, topic_id: str, provider: str | None
) -> SessionRow | None:
    """The owner's newest untitled session on `transport` that has never had a turn, with this topic and pin."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM sessions s WHERE owner IS ? AND transport = ? AND topic_id = ? AND title = '' "
        "AND last_seq = 0 AND provider IS ? AND model IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM turns t WHERE t.session_id = s.id) ORDER BY created_at DESC, id DESC LIMIT 1",
        (owner, transport, topic_id, provider),
    ).fetchone()
    return None if row is None else SessionRow(*row)
