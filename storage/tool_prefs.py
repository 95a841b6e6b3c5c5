"""Typed reads and writes of `user_tool_prefs`: which MCP servers, A2A servers and skills each user switched off."""

from __future__ import annotations

import sqlite3
from typing import Literal

ToolKind = Literal["mcp", "a2a", "skill"]


def migrate(conn: sqlite3.Connection) -> None:
    """Migration 042: the `user_tool_prefs` table (one row per user and tool that differs from the default)."""
    execute = conn.execute
    execute(
        """CREATE TABLE user_tool_prefs (
            user_id TEXT NOT NULL, kind TEXT NOT NULL, tool_id TEXT NOT NULL, enabled INTEGER NOT NULL,
            updated_at INTEGER NOT NULL, PRIMARY KEY (user_id, kind, tool_id))"""
    )
    execute("CREATE INDEX user_tool_prefs_tool ON user_tool_prefs (kind, tool_id)")


def set_pref(
    conn: sqlite3.Connection, user_id: str, kind: ToolKind, tool_id: str, enabled: bool, *, now_ms: int
) -> None:
    """Record a user's choice for one tool (insert or replace)."""
    conn.execute(
        "INSERT INTO user_tool_prefs (user_id, kind, tool_id, enabled, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (user_id, kind, tool_id) DO UPDATE SET enabled = excluded.enabled, "
        "updated_at = excluded.updated_at",
        (user_id, kind, tool_id, int(enabled), now_ms),
    )


def prefs_of(conn: sqlite3.Connection, user_id: str, kind: ToolKind) -> dict[str, bool]:
    """Return tool_id -> enabled for the tools this user has a preference about."""
    rows = conn.execute("SELECT tool_id, enabled FROM user_tool_prefs WHERE user_id = ? AND kind = ?", (user_id, kind))
    return {str(r[0]): bool(r[1]) for r in rows}


def all_disabled(conn: sqlite3.Connection, kind: ToolKind) -> dict[str, set[str]]:
    """Return user_id -> the tool ids of `kind` that user switched off (loaded once at startup)."""
    out: dict[str, set[str]] = {}
    for user_id, tool_id in conn.execute(
        "SELECT user_id, tool_id FROM user_tool_prefs WHERE kind = ? AND enabled = 0", (kind,)
    ):
        out.setdefault(str(user_id), set()).add(str(tool_id))
    return out


def forget_tool(conn: sqlite3.Connection, kind: ToolKind, tool_id: str) -> int:
    """Delete every user's preference about a tool that is gone; return how many rows went."""
    return conn.execute("DELETE FROM user_tool_prefs WHERE kind = ? AND tool_id = ?", (kind, tool_id)).rowcount
