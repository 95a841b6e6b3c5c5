"""Typed reads and writes of the `sessions` table (one row per SessionKey)."""

from __future__ import annotations

import sqlite3

import msgspec

from storage.ids import new_id

_COLUMNS = (
    "id, transport, chat_id, topic_id, title, status, provider, model, owner, last_seq, unread, "
    "latest_message, latest_message_at, created_at, updated_at"
)


class SessionRow(msgspec.Struct, frozen=True):
    id: str
    transport: str
    chat_id: str
    topic_id: str
    title: str
    status: str
    provider: str | None
    model: str | None
    owner: str | None
    last_seq: int
    unread: int
    latest_message: str | None
    latest_message_at: int | None
    created_at: int
    updated_at: int | None


def _row(row: tuple[object, ...] | None) -> SessionRow | None:
    return None if row is None else SessionRow(*row)  # type: ignore[arg-type]


def get_session(conn: sqlite3.Connection, session_id: str) -> SessionRow | None:
    """Return the session with this id, or None."""
    return _row(conn.execute(f"SELECT {_COLUMNS} FROM sessions WHERE id = ?", (session_id,)).fetchone())


def find_session(conn: sqlite3.Connection, transport: str, chat_id: str, topic_id: str) -> SessionRow | None:
    """Return the session bound to this key, or None."""
    return _row(
        conn.execute(
            f"SELECT {_COLUMNS} FROM sessions WHERE transport = ? AND chat_id = ? AND topic_id = ?",
            (transport, chat_id, topic_id),
        ).fetchone()
    )


MAX_KEY_PARTS = 32  # more colon-separated parts than any real key has; a longer ref matches no key


def key_splits(ref: str) -> list[tuple[str, str, str]]:
    """Every (transport, chat_id, topic_id) whose key string `transport:chat_id[:topic_id]` is `ref`.

    A key is ambiguous as a string: a connector's transport is `kind:name`, and external chat ids carry colons
    (`external:ext1:rk:team:a`). The transport has one or two parts; the chat and topic split the rest anywhere.
    """
    parts = ref.split(":")
    if len(parts) < 2 or len(parts) > MAX_KEY_PARTS:
        return []
    out: list[tuple[str, str, str]] = []
    for t in (2, 1):  # a connector's `kind:name` first: those are the keys with colons in them
        transport, rest = ":".join(parts[:t]), parts[t:]
        for k in range(len(rest), 0, -1):
            chat, topic = ":".join(rest[:k]), ":".join(rest[k:])
            if transport and chat:
                out.append((transport, chat, topic))
    return out


def find_by_ref(conn: sqlite3.Connection, ref: str) -> SessionRow | None:
    """The session whose id is `ref`, else the one whose key string is `ref` (see `key_splits`), else None."""
    found = get_session(conn, ref)
    for transport, chat, topic in key_splits(ref) if found is None else ():
        found = find_session(conn, transport, chat, topic)
        if found is not None:
            break
    return found


def get_or_create_session(
    conn: sqlite3.Connection,
    transport: str,
    chat_id: str,
    topic_id: str,
    *,
    now_ms: int,
    provider: str | None = None,
    model: str | None = None,
    owner: str | None = None,
) -> SessionRow:
    """Return the session for this key, creating it (status `pending`) when there is none."""
    found = find_session(conn, transport, chat_id, topic_id)
    if found is not None:
        return found
    return create_session(
        conn, transport, chat_id, topic_id, now_ms=now_ms, provider=provider, model=model, owner=owner
    )


def create_session(
    conn: sqlite3.Connection,
    transport: str,
    chat_id: str,
    topic_id: str,
    *,
    now_ms: int,
    provider: str | None = None,
    model: str | None = None,
    owner: str | None = None,
) -> SessionRow:
    """Create the session for this key (status `pending`); the caller has found none."""
    session_id = new_id()
    conn.execute(
        "INSERT INTO sessions (id, transport, chat_id, topic_id, title, status, provider, model, owner, "
        "last_seq, unread, created_at, updated_at) VALUES (?, ?, ?, ?, '', 'pending', ?, ?, ?, 0, 0, ?, ?)",
        (session_id, transport, chat_id, topic_id, provider, model, owner, now_ms, now_ms),
    )
    created = get_session(conn, session_id)
    assert created is not None
    return created


def list_sessions(conn: sqlite3.Connection, *, limit: int = 100, offset: int = 0) -> list[SessionRow]:
    """Return sessions, most recently updated first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM sessions ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
        (limit, offset),
    ).fetchall()
    return [SessionRow(*r) for r in rows]


def count_sessions(conn: sqlite3.Connection) -> int:
    """Return how many sessions are stored."""
    return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])


def set_status(conn: sqlite3.Connection, session_id: str, status: str, *, now_ms: int) -> None:
    """Set a session's status (`pending|running|waiting|completed`)."""
    conn.execute("UPDATE sessions SET status = ?, updated_at = ? WHERE id = ?", (status, now_ms, session_id))


def rename_session(conn: sqlite3.Connection, session_id: str, title: str, *, now_ms: int) -> bool:
    """Set a session's title; return False when there is no such session."""
    cur = conn.execute("UPDATE sessions SET title = ?, updated_at = ? WHERE id = ?", (title, now_ms, session_id))
    return cur.rowcount > 0


def set_pin(conn: sqlite3.Connection, session_id: str, *, provider: str | None, model: str | None, now_ms: int) -> bool:
    """Pin a session's provider and model (None: follow the gateway default); False when there is no such session."""
    cur = conn.execute(
        "UPDATE sessions SET provider = ?, model = ?, updated_at = ? WHERE id = ?",
        (provider, model, now_ms, session_id),
    )
    return cur.rowcount > 0


def pin_of(conn: sqlite3.Connection, session_id: str) -> tuple[str | None, str | None]:
    """The session's pinned (provider, model); (None, None) when it follows the default or does not exist."""
    row = conn.execute("SELECT provider, model FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return (None, None) if row is None else (row[0], row[1])


def delete_session(conn: sqlite3.Connection, session_id: str) -> bool:
    """Delete a session with its turns, messages and events; return False when there was none."""
    for table in ("events", "messages", "turns"):
        conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
    return conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0
