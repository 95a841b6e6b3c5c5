"""Typed reads and writes of `cron_jobs` and `cron_runs`; claiming a due slot is one transaction, so at most once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from storage.ids import new_id

_COLUMNS = (
    "id, owner, name, cron, interval_seconds, session_id, connector, chat_id, prompt, enabled, next_fire_at, "
    "last_fire_at, created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class CronJob:
    id: str
    owner: str | None
    name: str
    cron: str | None
    interval_seconds: int | None
    session_id: str | None  # target: a session ...
    connector: str | None  # ... or a connector's chat (connector + chat_id)
    chat_id: str | None
    prompt: str
    enabled: bool
    next_fire_at: int | None
    last_fire_at: int | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class CronRun:
    job_id: str
    slot_at: int
    trigger: str
    status: str
    session_id: str | None
    turn_id: str | None
    error: str | None
    started_at: int


def _job(r: tuple[object, ...]) -> CronJob:
    values = list(r)
    values[9] = bool(values[9])
    return CronJob(*values)  # type: ignore[arg-type]


# Computes the first slot strictly after a time (ms → ms); given by the caller so storage stays pure.
NextSlot = Callable[[CronJob, int], int]


def create_job(conn: sqlite3.Connection, job: CronJob) -> CronJob:
    conn.execute(f"INSERT INTO cron_jobs ({_COLUMNS}) VALUES ({', '.join('?' * 14)})", _values(job))
    return job


def _values(job: CronJob) -> tuple[object, ...]:
    return (
        job.id, job.owner, job.name, job.cron, job.interval_seconds, job.session_id, job.connector, job.chat_id,
        job.prompt, int(job.enabled), job.next_fire_at, job.last_fire_at, job.created_at, job.updated_at,
    )  # fmt: skip


def get_job(conn: sqlite3.Connection, job_id: str) -> CronJob | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM cron_jobs WHERE id = ?", (job_id,)).fetchone()
    return None if r is None else _job(r)


def list_jobs(conn: sqlite3.Connection, owner: str | None, *, all_owners: bool) -> list[CronJob]:
    if all_owners:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM cron_jobs ORDER BY id").fetchall()
    else:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM cron_jobs WHERE owner = ? ORDER BY id", (owner,)).fetchall()
    return [_job(r) for r in rows]


def delete_job(conn: sqlite3.Connection, job_id: str) -> bool:
    conn.execute("DELETE FROM cron_runs WHERE job_id = ?", (job_id,))
    return conn.execute("DELETE FROM cron_jobs WHERE id = ?", (job_id,)).rowcount > 0


def set_enabled(conn: sqlite3.Connection, job_id: str, enabled: bool, next_fire_at: int | None, *, now_ms: int) -> None:
    conn.execute(
        "UPDATE cron_jobs SET enabled = ?, next_fire_at = ?, updated_at = ? WHERE id = ?",
        (int(enabled), next_fire_at, now_ms, job_id),
    )


def claim_due(conn: sqlite3.Connection, now_ms: int, next_slot: NextSlot) -> list[tuple[CronJob, int]]:
    """Claim every enabled job whose slot has come: record its run and move it to its next slot after `now_ms`.

    Both happen in the caller's transaction, so after a crash a claimed slot is never fired again; missed slots
    (the gateway was down) fire once, not once each. Returns (job, slot) pairs to fire.
    """
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM cron_jobs WHERE enabled = 1 AND next_fire_at IS NOT NULL AND next_fire_at <= ?",
        (now_ms,),
    ).fetchall()
    claimed = []
    for job in map(_job, rows):
        slot = job.next_fire_at
        assert slot is not None
        cur = conn.execute(
            "INSERT OR IGNORE INTO cron_runs (job_id, slot_at, trigger, status, started_at) "
            "VALUES (?, ?, 'schedule', 'claimed', ?)",
            (job.id, slot, now_ms),
        )
        conn.execute(
            "UPDATE cron_jobs SET next_fire_at = ?, last_fire_at = ?, updated_at = ? WHERE id = ?",
            (next_slot(job, now_ms), slot, now_ms, job.id),
        )
        if cur.rowcount:
            claimed.append((job, slot))
    return claimed


def claim_manual(conn: sqlite3.Connection, job_id: str, now_ms: int) -> int:
    """Record a manual trigger as its own run (its slot is the trigger time, made unique); return the slot."""
    slot = now_ms
    while True:
        cur = conn.execute(
            "INSERT OR IGNORE INTO cron_runs (job_id, slot_at, trigger, status, started_at) "
            "VALUES (?, ?, 'manual', 'claimed', ?)",
            (job_id, slot, now_ms),
        )
        if cur.rowcount:
            return slot
        slot += 1


def finish_run(
    conn: sqlite3.Connection,
    job_id: str,
    slot: int,
    *,
    status: str,
    session_id: str | None = None,
    turn_id: str | None = None,
    error: str | None = None,
) -> None:
    conn.execute(
        "UPDATE cron_runs SET status = ?, session_id = ?, turn_id = ?, error = ? WHERE job_id = ? AND slot_at = ?",
        (status, session_id, turn_id, error, job_id, slot),
    )


def runs_of(conn: sqlite3.Connection, job_id: str) -> list[CronRun]:
    rows = conn.execute(
        "SELECT job_id, slot_at, trigger, status, session_id, turn_id, error, started_at FROM cron_runs "
        "WHERE job_id = ? ORDER BY slot_at",
        (job_id,),
    ).fetchall()
    return [CronRun(*r) for r in rows]


def new_job_id() -> str:
    return new_id()
