"""Typed reads and writes of `notifications` (cron runs, connector events, finished background turns)."""

from __future__ import annotations

import sqlite3

import msgspec

from storage.ids import new_id

_COLUMNS = "id, owner, title, body, source, read, created_at"


class NotificationRow(msgspec.Struct, frozen=True):
    id: str
    owner: str | None  # None: for the admins (gateway-wide events)
    title: str
    body: str
    source: str
    read: bool
    created_at: int


def _row(r: tuple[object, ...]) -> NotificationRow:
    return NotificationRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6])  # type: ignore[arg-type]


def add(
    conn: sqlite3.Connection, *, title: str, body: str, source: str, owner: str | None, now_ms: int
) -> NotificationRow:
    nid = new_id()
    conn.execute(
        f"INSERT INTO notifications ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, ?)",
        (nid, owner, title, body, source, now_ms),
    )
    return NotificationRow(nid, owner, title, body, source, False, now_ms)


def _scope(owner: str | None, all_owners: bool) -> tuple[str, tuple[object, ...]]:
    return ("1 = 1", ()) if all_owners else ("owner = ?", (owner,))


def list_(
    conn: sqlite3.Connection, owner: str | None, *, all_owners: bool, limit: int, unread_only: bool
) -> list[NotificationRow]:
    """Newest first; a user sees their own, admins see all."""
    where, args = _scope(owner, all_owners)
    if unread_only:
        where += " AND read = 0"
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM notifications WHERE {where} ORDER BY id DESC LIMIT ?", (*args, limit)
    ).fetchall()
    return [_row(r) for r in rows]


def unread_count(conn: sqlite3.Connection, owner: str | None, *, all_owners: bool) -> int:
    where, args = _scope(owner, all_owners)
    return int(conn.execute(f"SELECT count(*) FROM notifications WHERE {where} AND read = 0", args).fetchone()[0])


def after(
    conn: sqlite3.Connection, owner: str | None, *, all_owners: bool, after_id: str, limit: int
) -> list[NotificationRow]:
    """Oldest first, those made after `after_id` (ids sort by creation): what a stream resumed there has missed."""
    where, args = _scope(owner, all_owners)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM notifications WHERE {where} AND id > ? ORDER BY id LIMIT ?", (*args, after_id, limit)
    ).fetchall()
    return [_row(r) for r in rows]


def newest_id(conn: sqlite3.Connection, owner: str | None, *, all_owners: bool) -> str | None:
    where, args = _scope(owner, all_owners)
    r = conn.execute(f"SELECT max(id) FROM notifications WHERE {where}", args).fetchone()
    return None if r is None or r[0] is None else str(r[0])


def get(conn: sqlite3.Connection, nid: str) -> NotificationRow | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM notifications WHERE id = ?", (nid,)).fetchone()
    return None if r is None else _row(r)


def mark_read(conn: sqlite3.Connection, nid: str) -> None:
    conn.execute("UPDATE notifications SET read = 1 WHERE id = ?", (nid,))


def mark_all_read(conn: sqlite3.Connection, owner: str | None, *, all_owners: bool) -> int:
    where, args = _scope(owner, all_owners)
    return conn.execute(f"UPDATE notifications SET read = 1 WHERE {where} AND read = 0", args).rowcount
