"""Single-use sign-in links for the owner (`gateway dashboard`): only a code's SHA-256 and expiry are kept.

They live in the `settings` key/value table (key `login_link:<sha256 hex>`, value the expiry in ms), so no
migration is needed; using one deletes it in the same statement that reads it, so a code works once.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3

PREFIX = "login_link:"


def _key(code: str) -> str:
    return PREFIX + hashlib.sha256(code.encode()).hexdigest()


def create_login_link(conn: sqlite3.Connection, *, expires_at: int, now_ms: int) -> str:
    """Store a fresh code (its hash) valid until `expires_at`, forget the expired ones, and return the code."""
    conn.execute("DELETE FROM settings WHERE key GLOB ? AND CAST(value AS INTEGER) <= ?", (PREFIX + "*", now_ms))
    code = secrets.token_urlsafe(32)
    conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (_key(code), str(expires_at)))
    return code


def use_login_link(conn: sqlite3.Connection, code: str, *, now_ms: int) -> bool:
    """Consume `code`: True when it was stored and unexpired. It is deleted either way (an expired one too)."""
    row = conn.execute("DELETE FROM settings WHERE key = ? RETURNING value", (_key(code),)).fetchone()
    return row is not None and int(row[0]) > now_ms
