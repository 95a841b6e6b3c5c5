"""Typed reads and writes of `mcp_servers`: the MCP servers the agent may use as tools."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import msgspec

from storage.sealing import sealer_of

TRANSPORTS = ("stdio", "sse", "streamable_http")


class McpServerRow(msgspec.Struct, frozen=True):
    name: str
    transport: str
    enabled: bool
    description: str = ""
    command: str = ""
    args: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)  # may hold secrets: sealed at rest, never listed
    url: str = ""
    headers: dict[str, str] = msgspec.field(default_factory=dict)  # may hold secrets: sealed at rest, never listed
    url_by_owner: bool = False  # the owner (gateway token) set `url`: it may be a private address


def migrate(conn: sqlite3.Connection) -> None:
    """Migration 040: the `mcp_servers` table (the SQL sqlite-utils generated for it then)."""
    conn.execute(
        'CREATE TABLE "mcp_servers" (\n   "name" TEXT PRIMARY KEY,\n   "transport" TEXT NOT NULL,\n'
        '   "enabled" INTEGER NOT NULL,\n   "description" TEXT,\n   "command" TEXT,\n   "args" TEXT,\n'
        '   "env" TEXT,\n   "url" TEXT,\n   "headers" TEXT,\n   "updated_at" INTEGER\n)'
    )


def _row(conn: sqlite3.Connection, r: tuple[Any, ...]) -> McpServerRow:
    sealer = sealer_of(conn)
    return McpServerRow(
        name=r[0],
        transport=r[1],
        enabled=bool(r[2]),
        description=r[3] or "",
        command=r[4] or "",
        args=json.loads(r[5] or "[]"),
        env=json.loads(sealer.open(r[6]) if r[6] else "{}"),
        url=r[7] or "",
        headers=json.loads(sealer.open(r[8]) if r[8] else "{}"),
        url_by_owner=bool(r[9]),
    )


_COLS = "name, transport, enabled, description, command, args, env, url, headers, url_by_owner"


def list_servers(conn: sqlite3.Connection) -> list[McpServerRow]:
    """Return every configured server, by name."""
    return [_row(conn, r) for r in conn.execute(f"SELECT {_COLS} FROM mcp_servers ORDER BY name")]


def get_server(conn: sqlite3.Connection, name: str) -> McpServerRow | None:
    """Return one server, or None."""
    r = conn.execute(f"SELECT {_COLS} FROM mcp_servers WHERE name = ?", (name,)).fetchone()
    return None if r is None else _row(conn, r)


def upsert_server(conn: sqlite3.Connection, server: McpServerRow, *, now_ms: int) -> None:
    """Create or replace a server's configuration."""
    conn.execute(
        f"INSERT INTO mcp_servers ({_COLS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET transport = excluded.transport, enabled = excluded.enabled, "
        "description = excluded.description, command = excluded.command, args = excluded.args, "
        "env = excluded.env, url = excluded.url, headers = excluded.headers, "
        "url_by_owner = excluded.url_by_owner, updated_at = excluded.updated_at",
        (
            server.name,
            server.transport,
            int(server.enabled),
            server.description,
            server.command,
            json.dumps(server.args),
            sealer_of(conn).seal(json.dumps(server.env)),
            server.url,
            sealer_of(conn).seal(json.dumps(server.headers)),
            int(server.url_by_owner),
            now_ms,
        ),
    )


def set_enabled(conn: sqlite3.Connection, name: str, enabled: bool, *, now_ms: int) -> bool:
    """Enable or disable a server; return False when there is none of that name."""
    cur = conn.execute(
        "UPDATE mcp_servers SET enabled = ?, updated_at = ? WHERE name = ?", (int(enabled), now_ms, name)
    )
    return cur.rowcount > 0


def delete_server(conn: sqlite3.Connection, name: str) -> bool:
    """Delete a server; return False when there was none."""
    return conn.execute("DELETE FROM mcp_servers WHERE name = ?", (name,)).rowcount > 0
