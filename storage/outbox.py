"""The persisted reply outbox: one row per (turn, reply target), with attempts, backoff and a dead-letter state."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from storage import connectors as conn_db

STATES = ("pending", "delivered", "dead_letter")


class Delivery(msgspec.Struct, frozen=True):
    id: int
    delivery_id: str
    session_id: str
    turn_id: str
    plugin: str
    connector: str
    target: dict[str, Any]
    text: str
    state: str
    attempts: int
    next_attempt_at: int
    last_error: str | None
    created_at: int
    updated_at: int

    def view(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "plugin": self.plugin,
            "connector": self.connector,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


_COLS = (
    "id, delivery_id, session_id, turn_id, plugin, connector, target, text, state, attempts, next_attempt_at, "
    "last_error, created_at, updated_at"
)


def _row(r: tuple[Any, ...]) -> Delivery:
    return Delivery(r[0], r[1], r[2], r[3], r[4], r[5], msgspec.json.decode(r[6]), *r[7:])


def plan_turn(conn: sqlite3.Connection, session_id: str, turn_id: str, text: str, *, now_ms: int) -> list[Delivery]:
    """Create one pending delivery per reply target of the session (once per turn); return the new ones."""
    if conn.execute("SELECT 1 FROM outbox_turns WHERE turn_id = ?", (turn_id,)).fetchone() is not None:
        return []
    conn.execute("INSERT INTO outbox_turns (turn_id, created_at) VALUES (?, ?)", (turn_id, now_ms))
    targets = conn_db.get_reply_targets(conn, session_id) or []
    new: list[Delivery] = []
    for i, t in enumerate(targets):
        # Stable per (turn, position): a re-planned turn can never produce a second delivery id.
        delivery_id = f"{turn_id}-{i}"
        conn.execute(
            "INSERT INTO outbox (delivery_id, session_id, turn_id, plugin, connector, target, text, state, "
            "attempts, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) "
            "ON CONFLICT (delivery_id) DO NOTHING",
            (
                delivery_id,
                session_id,
                turn_id,
                str(t.get("plugin", "")),
                str(t.get("connector", "")),
                msgspec.json.encode(t),
                text,
                now_ms,
                now_ms,
                now_ms,
            ),
        )
    for r in conn.execute(f"SELECT {_COLS} FROM outbox WHERE turn_id = ? ORDER BY id", (turn_id,)):
        new.append(_row(r))
    return new


def unplanned_turns(conn: sqlite3.Connection, *, since_ms: int, limit: int = 1000) -> list[tuple[str, str, str]]:
    """Return (session_id, turn_id, result) of completed turns with reply targets but no planned deliveries."""
    rows = conn.execute(
        "SELECT t.session_id, t.id, t.result FROM turns t JOIN session_routing r ON r.session_id = t.session_id "
        "WHERE t.state = 'completed' AND t.created_at >= ? AND t.result IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM outbox_turns o WHERE o.turn_id = t.id) ORDER BY t.id LIMIT ?",
        (since_ms, limit),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def due(conn: sqlite3.Connection, *, now_ms: int, limit: int = 100) -> list[Delivery]:
    """Return pending deliveries whose next attempt is due, oldest first."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM outbox WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id "
        "LIMIT ?",
        (now_ms, limit),
    ).fetchall()
    return [_row(r) for r in rows]


def next_due_at(conn: sqlite3.Connection, *, exclude: Sequence[str] = ()) -> int | None:
    """Return when the earliest pending delivery not in `exclude` is due (ms), or None when none is pending."""
    marks = ",".join("?" * len(exclude))
    sql = "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'"
    if exclude:
        sql += f" AND delivery_id NOT IN ({marks})"
    row = conn.execute(sql, list(exclude)).fetchone()
    return None if row[0] is None else int(row[0])


def mark_delivered(conn: sqlite3.Connection, delivery_id: str, *, now_ms: int) -> None:
    """Record a successful delivery."""
    conn.execute(
        "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL, updated_at = ? "
        "WHERE delivery_id = ?",
        (now_ms, delivery_id),
    )


def mark_failed(conn: sqlite3.Connection, delivery_id: str, error: str, *, now_ms: int, retry_at: int | None) -> None:
    """Record a failed attempt: retry at `retry_at`, or move to dead-letter when it is None."""
    state = "pending" if retry_at is not None else "dead_letter"
    conn.execute(
        "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, next_attempt_at = ?, updated_at = ? "
        "WHERE delivery_id = ?",
        (state, error[:500], retry_at if retry_at is not None else now_ms, now_ms, delivery_id),
    )


def list_deliveries(
    conn: sqlite3.Connection, *, state: str | None = None, session_id: str | None = None, limit: int = 100
) -> list[Delivery]:
    """Return deliveries, newest first, filtered by state and session when given."""
    sql = f"SELECT {_COLS} FROM outbox WHERE 1 = 1"
    args: list[Any] = []
    if state is not None:
        sql += " AND state = ?"
        args.append(state)
    if session_id is not None:
        sql += " AND session_id = ?"
        args.append(session_id)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [_row(r) for r in conn.execute(sql, args)]


def retry_dead_letter(conn: sqlite3.Connection, delivery_id: str, *, now_ms: int) -> bool:
    """Put a dead-lettered delivery back in the queue; return False when it is not dead-lettered."""
    cur = conn.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
        "WHERE delivery_id = ? AND state = 'dead_letter'",
        (now_ms, now_ms, delivery_id),
    )
    return cur.rowcount > 0


def pending_count(conn: sqlite3.Connection, connector: str | None = None) -> dict[str, int]:
    """Return {"plugin/connector": pending deliveries}."""
    out: dict[str, int] = {}
    for plugin, name, n in conn.execute(
        "SELECT plugin, connector, count(*) FROM outbox WHERE state = 'pending' GROUP BY plugin, connector"
    ):
        out[f"{plugin}/{name}"] = int(n)
    return out
