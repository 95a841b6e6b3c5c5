"""Typed reads and writes of the `events` table: every streamed event with its per-session sequence."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import cbor2
import msgspec


class EventRow(msgspec.Struct, frozen=True):
    """One persisted event; `data` is the event's JSON-able payload (stored as CBOR)."""

    session_id: str
    seq: int
    turn_id: str | None
    type: str
    data: dict[str, Any]
    created_at: int


# Rows per INSERT statement: 6 parameters each stays under SQLite's oldest limit of 999 per statement.
_ROWS_PER_INSERT = 128
_INSERT = "INSERT INTO events (session_id, seq, turn_id, type, body, created_at) VALUES "


def _insert_sql(n: int) -> str:
    return _INSERT + ",".join(["(?,?,?,?,?,?)"] * n)


_INSERT_FULL = _insert_sql(_ROWS_PER_INSERT)


def append_events(conn: sqlite3.Connection, rows: Sequence[EventRow]) -> None:
    """Insert events and advance each session's `last_seq`; a repeated (session, seq) raises IntegrityError."""
    if not rows:
        return
    # Many rows per statement, not one statement per row: each SQLite step releases and retakes the GIL, and in
    # the store's thread every retake waits on the event loop (a streaming turn's commit is hundreds of deltas).
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        params: list[Any] = []
        for r in chunk:
            params += (r.session_id, r.seq, r.turn_id, r.type, cbor2.dumps(r.data), r.created_at)
        conn.execute(_INSERT_FULL if len(chunk) == _ROWS_PER_INSERT else _insert_sql(len(chunk)), params)
    last: dict[str, int] = {}
    for r in rows:
        last[r.session_id] = max(last.get(r.session_id, 0), r.seq)
    conn.executemany(
        "UPDATE sessions SET last_seq = max(last_seq, ?) WHERE id = ?",
        [(seq, sid) for sid, seq in last.items()],
    )


def events_after(conn: sqlite3.Connection, session_id: str, after_seq: int, *, limit: int = 10_000) -> list[EventRow]:
    """Return up to `limit` events of a session with seq > `after_seq`, in order."""
    rows = conn.execute(
        "SELECT session_id, seq, turn_id, type, body, created_at FROM events "
        "WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (session_id, after_seq, limit),
    ).fetchall()
    return [EventRow(r[0], r[1], r[2], r[3], cbor2.loads(r[4]), r[5]) for r in rows]


def last_seq(conn: sqlite3.Connection, session_id: str) -> int:
    """Return the highest stored sequence number of a session (0 when it has none)."""
    row = conn.execute("SELECT max(seq) FROM events WHERE session_id = ?", (session_id,)).fetchone()
    return int(row[0] or 0)
