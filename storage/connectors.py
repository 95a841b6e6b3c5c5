"""Typed reads and writes of daemon-managed connector rows, personas and per-session reply routing."""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec


class ConnectorRow(msgspec.Struct, frozen=True):
    kind: str
    name: str
    settings: dict[str, Any]
    created_at: int
    updated_at: int


def _decode(blob: bytes) -> dict[str, Any]:
    value: dict[str, Any] = msgspec.json.decode(blob)
    return value


def get_connector(conn: sqlite3.Connection, kind: str, name: str) -> ConnectorRow | None:
    """Return one stored connector, or None."""
    row = conn.execute(
        "SELECT kind, name, settings, created_at, updated_at FROM connectors WHERE kind = ? AND name = ?",
        (kind, name),
    ).fetchone()
    return None if row is None else ConnectorRow(row[0], row[1], _decode(row[2]), row[3], row[4])


def list_connectors(conn: sqlite3.Connection) -> list[ConnectorRow]:
    """Return every stored connector, by kind then name."""
    rows = conn.execute("SELECT kind, name, settings, created_at, updated_at FROM connectors ORDER BY kind, name")
    return [ConnectorRow(r[0], r[1], _decode(r[2]), r[3], r[4]) for r in rows]


def put_connector(conn: sqlite3.Connection, kind: str, name: str, settings: dict[str, Any], *, now_ms: int) -> bool:
    """Insert or replace a connector's settings; return True when it was created."""
    created = get_connector(conn, kind, name) is None
    conn.execute(
        "INSERT INTO connectors (kind, name, settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, name) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
        (kind, name, msgspec.json.encode(settings), now_ms, now_ms),
    )
    return created


def delete_connector(conn: sqlite3.Connection, kind: str, name: str) -> bool:
    """Delete a connector row; return False when there was none."""
    return conn.execute("DELETE FROM connectors WHERE kind = ? AND name = ?", (kind, name)).rowcount > 0


def persona_exists(conn: sqlite3.Connection, persona_id: str) -> bool:
    """Return whether a persona record with this id exists."""
    return conn.execute("SELECT 1 FROM personas WHERE id = ?", (persona_id,)).fetchone() is not None


def put_persona(conn: sqlite3.Connection, persona_id: str, name: str) -> None:
    """Create or rename a persona record."""
    conn.execute(
        "INSERT INTO personas (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        (persona_id, name),
    )


def cron_references(conn: sqlite3.Connection, ref: str) -> int:
    """Count cron jobs naming this connector, when the scheduler's `cron_jobs` table exists (issue 6)."""
    table = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cron_jobs'").fetchone()
    if table is None:
        return 0
    cols = {r[1] for r in conn.execute("PRAGMA table_info(cron_jobs)")}
    if "connector" not in cols:
        return 0
    kind, _, name = ref.partition("/")
    # A job may name it as `kind/name`, as the transport `kind:name` its sessions use, or by name alone.
    row = conn.execute(
        "SELECT count(*) FROM cron_jobs WHERE connector IN (?, ?, ?)", (ref, f"{kind}:{name}", name)
    ).fetchone()
    return int(row[0])


def get_reply_targets(conn: sqlite3.Connection, session_id: str) -> list[dict[str, Any]] | None:
    """Return a session's reply targets (ReplyHandle dicts), or None when none were ever set."""
    row = conn.execute("SELECT reply_targets FROM session_routing WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        return None
    value: list[dict[str, Any]] = msgspec.json.decode(row[0])
    return value


def set_reply_targets(
    conn: sqlite3.Connection, session_id: str, targets: list[dict[str, Any]], *, now_ms: int, by_operator: bool = False
) -> None:
    """Replace a session's reply targets; `by_operator` (`PUT /v1/sessions/{id}/reply-targets`) keeps them from
    being replaced by later ingress events until the operator releases them."""
    conn.execute(
        "INSERT INTO session_routing (session_id, reply_targets, updated_at, by_operator) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (session_id) DO UPDATE SET reply_targets = excluded.reply_targets, "
        "updated_at = excluded.updated_at, by_operator = excluded.by_operator",
        (session_id, msgspec.json.encode(targets), now_ms, int(by_operator)),
    )


def release_reply_targets(conn: sqlite3.Connection, session_id: str) -> None:
    """Forget a session's reply targets: the next ingress event (or `/api/message`) sets them again."""
    conn.execute("DELETE FROM session_routing WHERE session_id = ?", (session_id,))


def reply_target_references(conn: sqlite3.Connection, kind: str, name: str) -> int:
    """Count sessions whose reply targets name this connector (a DELETE must be refused while any do)."""
    n = 0
    for (blob,) in conn.execute("SELECT reply_targets FROM session_routing"):
        for t in msgspec.json.decode(blob):
            if isinstance(t, dict) and t.get("plugin") == kind and t.get("connector") == name:
                n += 1
                break
    return n
