"""The first migrations as plain SQL create exactly the schema sqlite-utils created for them."""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlite_utils

from storage.schema import MIGRATIONS, run_migrations

# What migrations 001, 002, 040 and 041 were: sqlite-utils calls. A database created by them (every gateway
# installed before 2026-12-05) must have the same schema as one created by the plain SQL that replaced them.
SQLITE_UTILS = {"001_core", "002_seq_reserved", "040_mcp_servers", "041_skills_a2a"}


def _as_sqlite_utils(name: str, db: Any) -> None:
    if name == "001_core":
        db["settings"].create({"key": str, "value": str}, pk="key")
        db["sessions"].create(
            {
                "id": str, "transport": str, "chat_id": str, "topic_id": str, "title": str, "status": str,
                "provider": str, "model": str, "owner": str, "last_seq": int, "unread": int, "latest_message": str,
                "latest_message_at": int, "created_at": int, "updated_at": int,
            },
            pk="id",
            not_null={"transport", "chat_id", "topic_id", "status", "last_seq", "unread", "created_at"},
            defaults={"topic_id": "", "status": "pending", "last_seq": 0, "unread": 0, "title": ""},
        )  # fmt: skip
        db["sessions"].create_index(["transport", "chat_id", "topic_id"], unique=True)
        db["turns"].create(
            {
                "id": str, "session_id": str, "state": str, "prompt": str, "result": str, "error": str,
                "created_at": int, "started_at": int, "ended_at": int,
            },
            pk="id",
            foreign_keys=[("session_id", "sessions", "id")],
            not_null={"session_id", "state", "created_at"},
        )  # fmt: skip
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
            {"id": int, "session_id": str, "seq": int, "turn_id": str, "type": str, "body": bytes, "created_at": int},
            pk="id",
            foreign_keys=[("session_id", "sessions", "id")],
            not_null={"session_id", "seq", "type", "created_at"},
        )
        db["events"].create_index(["session_id", "seq"], unique=True)
    elif name == "002_seq_reserved":
        db["sessions"].add_column("seq_reserved", int, not_null_default=0)
    elif name == "040_mcp_servers":
        db["mcp_servers"].create(
            {
                "name": str, "transport": str, "enabled": int, "description": str, "command": str, "args": str,
                "env": str, "url": str, "headers": str, "updated_at": int,
            },
            pk="name",
            not_null={"transport", "enabled"},
        )  # fmt: skip
    else:
        db["skills"].create(
            {
                "id": str, "slug": str, "name": str, "description": str, "version": str, "source_type": str,
                "source_ref": str, "runtime_type": str, "enabled": int, "installed_by": str, "created_at": int,
                "updated_at": int, "bundle_file_count": int, "context_ref_count": int, "context": str,
            },
            pk="id",
            not_null={"slug", "name", "enabled", "created_at", "updated_at"},
        )  # fmt: skip
        db["skills"].create_index(["slug"], unique=True)
        db["a2a_servers"].create(
            {
                "id": str, "base_url": str, "name": str, "description": str, "input_modes": str,
                "output_modes": str, "streaming": int, "push_notifications": int, "enabled": int, "card": str,
                "created_at": int,
            },
            pk="id",
            not_null={"base_url", "name", "enabled"},
        )  # fmt: skip
        db["a2a_servers"].create_index(["base_url"], unique=True)


def _schema(conn: sqlite3.Connection) -> list[tuple[str, str, str, str | None]]:
    return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()


def test_the_plain_sql_migrations_create_the_schema_sqlite_utils_did() -> None:
    assert {name for name, _ in MIGRATIONS} >= SQLITE_UTILS
    before = sqlite3.connect(":memory:", isolation_level=None)
    db = sqlite_utils.Database(before)
    before.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
    for name, fn in MIGRATIONS:
        if name in SQLITE_UTILS:
            _as_sqlite_utils(name, db)
        else:
            fn(before)
    now = sqlite3.connect(":memory:", isolation_level=None)
    assert run_migrations(now, MIGRATIONS) == [name for name, _ in MIGRATIONS]
    assert _schema(now) == _schema(before)
    columns = 'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?)'
    for table in ("sessions", "turns", "messages", "events", "mcp_servers", "skills", "a2a_servers"):
        assert now.execute(columns, (table,)).fetchall() == before.execute(columns, (table,)).fetchall()
