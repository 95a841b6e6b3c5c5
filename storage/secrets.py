"""Typed reads and writes of daemon-managed secret slots, kept in their own table apart from connectors.

Values are sealed (storage/sealing.py): the table alone, as in a copied database, reveals none of them.
"""

from __future__ import annotations

import sqlite3

from storage.sealing import sealer_of


def put_secret(conn: sqlite3.Connection, slot: str, value: str, *, now_ms: int) -> None:
    """Store or rotate the value of a secret slot."""
    conn.execute(
        "INSERT INTO secrets (slot, value, created_at, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (slot) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (slot, sealer_of(conn).seal(value), now_ms, now_ms),
    )


def get_secret(conn: sqlite3.Connection, slot: str) -> str | None:
    """Return a slot's value, or None when there is no such slot."""
    row = conn.execute("SELECT value FROM secrets WHERE slot = ?", (slot,)).fetchone()
    return None if row is None else sealer_of(conn).open(str(row[0]))


def secret_exists(conn: sqlite3.Connection, slot: str) -> bool:
    """Return whether a slot exists (without reading its value)."""
    return conn.execute("SELECT 1 FROM secrets WHERE slot = ?", (slot,)).fetchone() is not None


def list_slots(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """Return (slot, updated_at) for every slot; never the values."""
    return [(str(r[0]), int(r[1])) for r in conn.execute("SELECT slot, updated_at FROM secrets ORDER BY slot")]


def delete_secret(conn: sqlite3.Connection, slot: str) -> bool:
    """Delete a slot; return False when there was none."""
    return conn.execute("DELETE FROM secrets WHERE slot = ?", (slot,)).rowcount > 0
