"""Typed reads and writes of installed skills (`skills`) and A2A servers (`a2a_servers`)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import msgspec

from storage.ids import new_id


class SkillRow(msgspec.Struct, frozen=True):
    id: str
    slug: str
    name: str
    description: str
    version: str
    source_type: str
    source_ref: str
    runtime_type: str
    enabled: bool
    installed_by: str | None
    created_at: int
    updated_at: int
    bundle_file_count: int
    context_ref_count: int
    context: str  # the SKILL.md body given to the provider when enabled

    def view(self) -> dict[str, Any]:
        """The API's SkillItem (without the context text)."""
        return {
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "source_type": self.source_type,
            "source_ref": self.source_ref,
            "runtime_type": self.runtime_type,
            "enabled": self.enabled,
            "installed_by": self.installed_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "bundle_file_count": self.bundle_file_count,
            "context_ref_count": self.context_ref_count,
            "last_sync_at": None,
        }


class A2AServerRow(msgspec.Struct, frozen=True):
    id: str
    base_url: str
    name: str
    description: str
    input_modes: list[str] = msgspec.field(default_factory=list)
    output_modes: list[str] = msgspec.field(default_factory=list)
    streaming: bool = False
    push_notifications: bool = False
    enabled: bool = True
    card: dict[str, Any] = msgspec.field(default_factory=dict)
    url_by_owner: bool = False  # registered by the owner (gateway token): its address may be private

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "base_url": self.base_url,
            "input_modes": self.input_modes,
            "output_modes": self.output_modes,
            "streaming": self.streaming,
            "push_notifications": self.push_notifications,
            "enabled": self.enabled,
        }


def migrate(conn: sqlite3.Connection) -> None:
    """Migration 041: `skills` and `a2a_servers` (the SQL sqlite-utils generated for them then)."""
    conn.execute(
        'CREATE TABLE "skills" (\n   "id" TEXT PRIMARY KEY,\n   "slug" TEXT NOT NULL,\n   "name" TEXT NOT NULL,\n'
        '   "description" TEXT,\n   "version" TEXT,\n   "source_type" TEXT,\n   "source_ref" TEXT,\n'
        '   "runtime_type" TEXT,\n   "enabled" INTEGER NOT NULL,\n   "installed_by" TEXT,\n'
        '   "created_at" INTEGER NOT NULL,\n   "updated_at" INTEGER NOT NULL,\n   "bundle_file_count" INTEGER,\n'
        '   "context_ref_count" INTEGER,\n   "context" TEXT\n)'
    )
    conn.execute('CREATE UNIQUE INDEX "idx_skills_slug"\n    ON "skills" ("slug")')
    conn.execute(
        'CREATE TABLE "a2a_servers" (\n   "id" TEXT PRIMARY KEY,\n   "base_url" TEXT NOT NULL,\n'
        '   "name" TEXT NOT NULL,\n   "description" TEXT,\n   "input_modes" TEXT,\n   "output_modes" TEXT,\n'
        '   "streaming" INTEGER,\n   "push_notifications" INTEGER,\n   "enabled" INTEGER NOT NULL,\n'
        '   "card" TEXT,\n   "created_at" INTEGER\n)'
    )
    conn.execute('CREATE UNIQUE INDEX "idx_a2a_servers_base_url"\n    ON "a2a_servers" ("base_url")')


_SKILL_COLS = (
    "id, slug, name, description, version, source_type, source_ref, runtime_type, enabled, installed_by, "
    "created_at, updated_at, bundle_file_count, context_ref_count, context"
)


def _skill(r: tuple[Any, ...]) -> SkillRow:
    values = list(r)
    values[8] = bool(values[8])
    return SkillRow(*values)


def list_skills(conn: sqlite3.Connection) -> list[SkillRow]:
    return [_skill(r) for r in conn.execute(f"SELECT {_SKILL_COLS} FROM skills ORDER BY slug")]


def get_skill(conn: sqlite3.Connection, key: str) -> SkillRow | None:
    """Find a skill by id or slug."""
    r = conn.execute(f"SELECT {_SKILL_COLS} FROM skills WHERE id = ? OR slug = ?", (key, key)).fetchone()
    return None if r is None else _skill(r)


def upsert_skill(conn: sqlite3.Connection, item: dict[str, Any], *, now_ms: int) -> SkillRow:
    """Insert a skill, or update the one with the same slug keeping its id and enabled state."""
    existing = get_skill(conn, item["slug"])
    if existing is None:
        conn.execute(
            f"INSERT INTO skills ({_SKILL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            (
                new_id(),
                item["slug"],
                item["name"],
                item["description"],
                item["version"],
                item["source_type"],
                item["source_ref"],
                item["runtime_type"],
                item.get("installed_by"),
                now_ms,
                now_ms,
                item["bundle_file_count"],
                item["context_ref_count"],
                item["context"],
            ),
        )
    else:
        conn.execute(
            "UPDATE skills SET name = ?, description = ?, version = ?, source_type = ?, source_ref = ?, "
            "runtime_type = ?, updated_at = ?, bundle_file_count = ?, context_ref_count = ?, context = ? "
            "WHERE id = ?",
            (
                item["name"],
                item["description"],
                item["version"],
                item["source_type"],
                item["source_ref"],
                item["runtime_type"],
                now_ms,
                item["bundle_file_count"],
                item["context_ref_count"],
                item["context"],
                existing.id,
            ),
        )
    row = get_skill(conn, item["slug"])
    assert row is not None
    return row


def set_skill_enabled(conn: sqlite3.Connection, key: str, enabled: bool, *, now_ms: int) -> bool:
    return (
        conn.execute(
            "UPDATE skills SET enabled = ?, updated_at = ? WHERE id = ? OR slug = ?", (int(enabled), now_ms, key, key)
        ).rowcount
        > 0
    )


def delete_skill(conn: sqlite3.Connection, key: str) -> SkillRow | None:
    """Delete a skill (and any user preference rows naming it); return what was deleted."""
    row = get_skill(conn, key)
    if row is None:
        return None
    conn.execute("DELETE FROM skills WHERE id = ?", (row.id,))
    has_prefs = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'user_tool_prefs'").fetchone()
    if has_prefs:
        conn.execute("DELETE FROM user_tool_prefs WHERE kind = 'skill' AND tool_id IN (?, ?)", (row.id, row.slug))
    return row


def _a2a(r: tuple[Any, ...]) -> A2AServerRow:
    return A2AServerRow(
        id=r[0],
        base_url=r[1],
        name=r[2],
        description=r[3] or "",
        input_modes=json.loads(r[4] or "[]"),
        output_modes=json.loads(r[5] or "[]"),
        streaming=bool(r[6]),
        push_notifications=bool(r[7]),
        enabled=bool(r[8]),
        card=json.loads(r[9] or "{}"),
        url_by_owner=bool(r[10]),
    )


_A2A_COLS = (
    "id, base_url, name, description, input_modes, output_modes, streaming, push_notifications, enabled, card, "
    "url_by_owner"
)


def list_a2a(conn: sqlite3.Connection) -> list[A2AServerRow]:
    return [_a2a(r) for r in conn.execute(f"SELECT {_A2A_COLS} FROM a2a_servers ORDER BY name")]


def get_a2a(conn: sqlite3.Connection, a2a_id: str) -> A2AServerRow | None:
    r = conn.execute(f"SELECT {_A2A_COLS} FROM a2a_servers WHERE id = ?", (a2a_id,)).fetchone()
    return None if r is None else _a2a(r)


def upsert_a2a(conn: sqlite3.Connection, row: A2AServerRow, *, now_ms: int) -> A2AServerRow:
    """Store a server by base_url (re-registering refreshes its card and keeps its id and enabled state)."""
    found = conn.execute("SELECT id FROM a2a_servers WHERE base_url = ?", (row.base_url,)).fetchone()
    a2a_id = found[0] if found else row.id
    conn.execute(
        f"INSERT INTO a2a_servers ({_A2A_COLS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET name = excluded.name, description = excluded.description, "
        "input_modes = excluded.input_modes, output_modes = excluded.output_modes, streaming = excluded.streaming, "
        "push_notifications = excluded.push_notifications, card = excluded.card, url_by_owner = excluded.url_by_owner",
        (
            a2a_id,
            row.base_url,
            row.name,
            row.description,
            json.dumps(row.input_modes),
            json.dumps(row.output_modes),
            int(row.streaming),
            int(row.push_notifications),
            int(row.enabled),
            json.dumps(row.card),
            int(row.url_by_owner),
            now_ms,
        ),
    )
    stored = get_a2a(conn, a2a_id)
    assert stored is not None
    return stored


def set_a2a_enabled(conn: sqlite3.Connection, a2a_id: str, enabled: bool) -> bool:
    return conn.execute("UPDATE a2a_servers SET enabled = ? WHERE id = ?", (int(enabled), a2a_id)).rowcount > 0


def delete_a2a(conn: sqlite3.Connection, a2a_id: str) -> bool:
    return conn.execute("DELETE FROM a2a_servers WHERE id = ?", (a2a_id,)).rowcount > 0
