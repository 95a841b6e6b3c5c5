"""The schema, as an ordered list of named migrations; each runs once, inside one transaction."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

# Each migration takes a sqlite_utils.Database. sqlite-utils is imported only when a migration
# is pending: it costs ~15 MiB and ~100 ms, which an up-to-date gateway never pays.
Migration = tuple[str, Callable[[Any], None]]


def _m001_core(db: Any) -> None:
    db["settings"].create({"key": str, "value": str}, pk="key")
    db["sessions"].create(
        {
            "id": str,
            "transport": str,
            "chat_id": str,
            "topic_id": str,
            "title": str,
            "status": str,
            "provider": str,
            "model": str,
            "owner": str,
            "last_seq": int,
            "unread": int,
            "latest_message": str,
            "latest_message_at": int,
            "created_at": int,
            "updated_at": int,
        },
        pk="id",
        not_null={"transport", "chat_id", "topic_id", "status", "last_seq", "unread", "created_at"},
        defaults={"topic_id": "", "status": "pending", "last_seq": 0, "unread": 0, "title": ""},
    )
    db["sessions"].create_index(["transport", "chat_id", "topic_id"], unique=True)
    db["turns"].create(
        {
            "id": str,
            "session_id": str,
            "state": str,
            "prompt": str,
            "result": str,
            "error": str,
            "created_at": int,
            "started_at": int,
            "ended_at": int,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "state", "created_at"},
    )
    db["turns"].create_index(["session_id", "state"])
    db["turns"].create_index(["state"])
    db["messages"].create(
        {"id": int, "session_id": str, "turn_id": str, "role": str, "content": str, "created_at": int},
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "role", "content", "created_at"},
    )
    db["messages"].create_index(["session_id", "id"])
    db["events"].create(
        {
            "id": int,
            "session_id": str,
            "seq": int,
            "turn_id": str,
            "type": str,
            "body": bytes,
            "created_at": int,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id")],
        not_null={"session_id", "seq", "type", "created_at"},
    )
    db["events"].create_index(["session_id", "seq"], unique=True)


def _m002_seq_reserved(db: Any) -> None:
    # Sequence numbers a session may have shown but not yet stored: after a crash it starts above them,
    # so a client resuming from a number it saw never skips new events. See actors/session.py.
    db["sessions"].add_column("seq_reserved", int, not_null_default=0)


def _m040_mcp(db: Any) -> None:
    from storage.mcp import migrate

    migrate(db)


def _m041_skills(db: Any) -> None:
    from storage.skills import migrate

    migrate(db)


MIGRATIONS: list[Migration] = [
    ("001_core", _m001_core),
    ("002_seq_reserved", _m002_seq_reserved),
    ("040_mcp_servers", _m040_mcp),
    ("041_skills_a2a", _m041_skills),
]


def _applied(conn: sqlite3.Connection) -> set[str]:
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
    return {row[0] for row in conn.execute("SELECT name FROM _migrations")}


def run_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction; return the names applied."""
    done = _applied(conn)
    pending = [(name, fn) for name, fn in migrations if name not in done]
    if not pending:
        return []
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    applied: list[str] = []
    for name, fn in pending:
        conn.execute("BEGIN IMMEDIATE")
        try:
            fn(db)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, int(time.time() * 1000)))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        applied.append(name)
    return applied
