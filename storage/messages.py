"""Typed reads and writes of turns (one prompt and its outcome) and the messages that form a history."""

from __future__ import annotations

import sqlite3

import msgspec

from storage.events import EventRow, append_events
from storage.ids import new_id

TURN_STATES = ("queued", "running", "completed", "aborted", "failed", "interrupted")


class TurnRow(msgspec.Struct, frozen=True):
    id: str
    session_id: str
    state: str
    prompt: str
    result: str | None
    error: str | None
    created_at: int


class MessageRow(msgspec.Struct, frozen=True):
    role: str
    content: str
    turn_id: str | None
    created_at: int


def create_turn(
    conn: sqlite3.Connection, session_id: str, prompt: str, *, now_ms: int, turn_id: str | None = None
) -> str:
    """Record a queued turn and its user message; return the turn id (`turn_id` when given, else a new one)."""
    turn_id = turn_id or new_id()
    conn.execute(
        "INSERT INTO turns (id, session_id, state, prompt, created_at) VALUES (?, ?, 'queued', ?, ?)",
        (turn_id, session_id, prompt, now_ms),
    )
    conn.execute(
        "INSERT INTO messages (session_id, turn_id, role, content, created_at) VALUES (?, ?, 'user', ?, ?)",
        (session_id, turn_id, prompt, now_ms),
    )
    # A queued turn makes the session `waiting` until it starts (a running one stays `running`).
    conn.execute(
        "UPDATE sessions SET latest_message = ?, latest_message_at = ?, updated_at = ?, "
        "status = CASE status WHEN 'running' THEN 'running' ELSE 'waiting' END WHERE id = ?",
        (prompt, now_ms, now_ms, session_id),
    )
    return turn_id


def start_turn(conn: sqlite3.Connection, turn_id: str, *, now_ms: int) -> None:
    """Mark a turn running and its session `running`."""
    conn.execute("UPDATE turns SET state = 'running', started_at = ? WHERE id = ?", (now_ms, turn_id))
    conn.execute(
        "UPDATE sessions SET status = 'running', updated_at = ? WHERE id = (SELECT session_id FROM turns WHERE id = ?)",
        (now_ms, turn_id),
    )


def begin_turn(
    conn: sqlite3.Connection, turn_id: str, session_id: str, *, now_ms: int, reserve_to: int, history_limit: int
) -> list[MessageRow]:
    """Mark a turn running, reserve sequence numbers up to `reserve_to`, and return the history before it."""
    start_turn(conn, turn_id, now_ms=now_ms)
    reserve_seq(conn, session_id, reserve_to)
    return [m for m in history(conn, session_id, limit=history_limit + 1) if m.turn_id != turn_id][-history_limit:]


def accept_and_begin(
    conn: sqlite3.Connection,
    session_id: str,
    prompt: str,
    *,
    now_ms: int,
    reserve_to: int,
    history_limit: int,
    turn_id: str | None = None,
) -> tuple[str, list[MessageRow]]:
    """For an idle session: record the turn and start it in one transaction (one fsync before the provider)."""
    turn_id = create_turn(conn, session_id, prompt, now_ms=now_ms, turn_id=turn_id)
    return turn_id, begin_turn(
        conn, turn_id, session_id, now_ms=now_ms, reserve_to=reserve_to, history_limit=history_limit
    )


def reserve_seq(conn: sqlite3.Connection, session_id: str, upto: int) -> None:
    """Durably promise that sequence numbers up to `upto` may already have been shown to clients."""
    conn.execute("UPDATE sessions SET seq_reserved = max(seq_reserved, ?) WHERE id = ?", (upto, session_id))


def seq_floor(conn: sqlite3.Connection, session_id: str) -> int:
    """Where a new life of the session continues numbering: above every stored or reserved number."""
    row = conn.execute(
        "SELECT max(coalesce((SELECT max(seq) FROM events WHERE session_id = ?), 0), seq_reserved) "
        "FROM sessions WHERE id = ?",
        (session_id, session_id),
    ).fetchone()
    return int(row[0] or 0) if row else 0


def finish_turn(
    conn: sqlite3.Connection,
    turn_id: str,
    state: str,
    *,
    now_ms: int,
    result: str | None = None,
    error: str | None = None,
    session_status: str = "completed",
) -> None:
    """Record a turn's end state; a non-empty result becomes the assistant's message in the history."""
    if state not in TURN_STATES:
        raise ValueError(f"unknown turn state {state!r}")
    conn.execute(
        "UPDATE turns SET state = ?, result = ?, error = ?, ended_at = ? WHERE id = ?",
        (state, result, error, now_ms, turn_id),
    )
    row = conn.execute("SELECT session_id FROM turns WHERE id = ?", (turn_id,)).fetchone()
    if row is None:
        return
    session_id = row[0]
    if result:
        conn.execute(
            "INSERT INTO messages (session_id, turn_id, role, content, created_at) VALUES (?, ?, 'assistant', ?, ?)",
            (session_id, turn_id, result, now_ms),
        )
        conn.execute(
            "UPDATE sessions SET latest_message = ?, latest_message_at = ?, unread = unread + 1 WHERE id = ?",
            (result, now_ms, session_id),
        )
    conn.execute("UPDATE sessions SET status = ?, updated_at = ? WHERE id = ?", (session_status, now_ms, session_id))


def release_reservation(conn: sqlite3.Connection, session_id: str) -> None:
    """A session's life ended cleanly with everything it showed stored: shrink its reservation back to the last
    stored number, so the next life continues right after it (kept while a turn is still marked running).

    Not at each turn's end: the reservation stays while the session lives, so a turn's first events can be shown
    before its acceptance commits without any number a crash could reissue."""
    conn.execute(
        "UPDATE sessions SET seq_reserved = coalesce((SELECT max(seq) FROM events WHERE session_id = ?), 0) "
        "WHERE id = ? AND NOT EXISTS (SELECT 1 FROM turns WHERE session_id = ? AND state = 'running')",
        (session_id, session_id, session_id),
    )


def get_turn(conn: sqlite3.Connection, turn_id: str) -> TurnRow | None:
    """Return one turn, or None."""
    row = conn.execute(
        "SELECT id, session_id, state, prompt, result, error, created_at FROM turns WHERE id = ?", (turn_id,)
    ).fetchone()
    return None if row is None else TurnRow(*row)


def queued_turns(conn: sqlite3.Connection, session_id: str) -> list[TurnRow]:
    """Return a session's turns still waiting to run, oldest first."""
    rows = conn.execute(
        "SELECT id, session_id, state, prompt, result, error, created_at FROM turns "
        "WHERE session_id = ? AND state = 'queued' ORDER BY id",
        (session_id,),
    ).fetchall()
    return [TurnRow(*r) for r in rows]


def sessions_with_queued_turns(conn: sqlite3.Connection) -> list[str]:
    """Return the ids of sessions that have queued turns (to resume them after a restart)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT session_id FROM turns WHERE state = 'queued'")]


INTERRUPTED_MESSAGE = "the gateway stopped during this turn, so it did not finish; send the message again"


def interrupted_events(session_id: str, turn_id: str, after_seq: int, *, now_ms: int) -> list[EventRow]:
    """How an interrupted turn ends on the wire, numbered after `after_seq`: an `error` with code INTERRUPTED (the
    end a v1 client sees) and `turn_ended {state: interrupted}`."""
    return [
        EventRow(
            session_id, after_seq + 1, turn_id, "error", {"code": "INTERRUPTED", "message": INTERRUPTED_MESSAGE}, now_ms
        ),
        EventRow(
            session_id, after_seq + 2, turn_id, "turn_ended", {"turn_id": turn_id, "state": "interrupted"}, now_ms
        ),
    ]


def interrupt_running_turns(conn: sqlite3.Connection, *, now_ms: int) -> int:
    """Mark every turn left `running` by a crash `interrupted` and append its end to its session's events, numbered
    after everything the session stored or reserved (so no number a client saw is reused): a client resuming from
    any point then sees the turn end. Return how many there were."""
    running = conn.execute("SELECT id, session_id FROM turns WHERE state = 'running' ORDER BY id").fetchall()
    for turn_id, session_id in running:
        append_events(conn, interrupted_events(session_id, turn_id, seq_floor(conn, session_id), now_ms=now_ms))
    conn.execute(
        "UPDATE turns SET state = 'interrupted', error = 'gateway stopped during the turn', ended_at = ? "
        "WHERE state = 'running'",
        (now_ms,),
    )
    conn.execute("UPDATE sessions SET status = 'completed' WHERE status = 'running'")
    return len(running)


def history(conn: sqlite3.Connection, session_id: str, *, limit: int = 200) -> list[MessageRow]:
    """Return the last `limit` messages of a session, oldest first."""
    rows = conn.execute(
        "SELECT role, content, turn_id, created_at FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT ?",
        (session_id, limit),
    ).fetchall()
    return [MessageRow(*r) for r in reversed(rows)]
