"""Typed reads and writes of `cron_jobs` and `cron_runs`; claiming a due slot is one transaction, so at most once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import msgspec

from storage.ids import new_id

_COLUMNS = (
    "id, owner, name, cron, interval_seconds, session_id, connector, chat_id, prompt, enabled, next_fire_at, "
    "last_fire_at, created_at, updated_at, timezone"
)


class CronJob(msgspec.Struct, frozen=True):
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
    timezone: str = "UTC"  # the IANA zone its cron expression is read in (an interval ignores it)


# A run's status: running (claimed, its turn queued or running), then ok | error; skipped (never started).
RUN_STATUSES = ("running", "ok", "error", "skipped")


class CronRun(msgspec.Struct, frozen=True):
    id: int
    job_id: str
    slot_at: int  # the slot it ran for (a manual run: the trigger time)
    trigger: str  # schedule | manual
    status: str  # one of RUN_STATUSES
    session_id: str | None
    turn_id: str | None
    error: str | None
    started_at: int
    ended_at: int | None


def _job(r: tuple[object, ...]) -> CronJob:
    values = list(r)
    values[9] = bool(values[9])
    return CronJob(*values)  # type: ignore[arg-type]


# Computes the first slot strictly after a time (ms → ms); given by the caller so storage stays pure.
NextSlot = Callable[[CronJob, int], int]


def create_job(conn: sqlite3.Connection, job: CronJob) -> CronJob:
    conn.execute(f"INSERT INTO cron_jobs ({_COLUMNS}) VALUES ({', '.join('?' * 15)})", _values(job))
    return job


def _values(job: CronJob) -> tuple[object, ...]:
    return (
        job.id, job.owner, job.name, job.cron, job.interval_seconds, job.session_id, job.connector, job.chat_id,
        job.prompt, int(job.enabled), job.next_fire_at, job.last_fire_at, job.created_at, job.updated_at, job.timezone,
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


def update_job(conn: sqlite3.Connection, job: CronJob) -> None:
    """Write every field a PATCH may change (the id, owner and creation time stay)."""
    conn.execute(
        "UPDATE cron_jobs SET name = ?, cron = ?, interval_seconds = ?, timezone = ?, session_id = ?, connector = ?, "
        "chat_id = ?, prompt = ?, enabled = ?, next_fire_at = ?, updated_at = ? WHERE id = ?",
        (
            job.name, job.cron, job.interval_seconds, job.timezone, job.session_id, job.connector, job.chat_id,
            job.prompt, int(job.enabled), job.next_fire_at, job.updated_at, job.id,
        ),
    )  # fmt: skip


def settle_runs(conn: sqlite3.Connection, *, now_ms: int, job_id: str | None = None) -> int:
    """Close every `running` run whose turn has ended (or whose turn is gone with its session): `ok` when the turn
    completed, else `error` with the turn's error. Returns how many were closed."""
    sql = (
        "SELECT r.id, t.id, t.state, t.error, t.ended_at FROM cron_runs r LEFT JOIN turns t ON t.id = r.turn_id "
        "WHERE r.status = 'running' AND r.turn_id IS NOT NULL"
    )
    args: tuple[object, ...] = ()
    if job_id is not None:
        sql += " AND r.job_id = ?"
        args = (job_id,)
    closed = 0
    for run_id, turn, state, error, ended_at in conn.execute(sql, args).fetchall():
        if turn is None:
            status, error, ended_at = "error", "its session was deleted before the turn ended", now_ms
        elif state in ("queued", "running"):
            continue
        elif state == "completed":
            status, error = "ok", None
        else:
            status, error = "error", error or f"the turn ended {state}"
        conn.execute(
            "UPDATE cron_runs SET status = ?, error = ?, ended_at = ? WHERE id = ?",
            (status, error, ended_at or now_ms, run_id),
        )
        closed += 1
    return closed


def fail_unsubmitted(conn: sqlite3.Connection, *, now_ms: int) -> int:
    """At the scheduler's start: a run claimed by an earlier life (before `now_ms`) that never got its turn
    submitted (the process stopped in between) is closed as `error`; it will not run late. Returns how many."""
    return conn.execute(
        "UPDATE cron_runs SET status = 'error', ended_at = ?, error = ? "
        "WHERE status = 'running' AND turn_id IS NULL AND started_at < ?",
        (now_ms, "the gateway stopped before the run's turn was submitted", now_ms),
    ).rowcount


def open_turns(conn: sqlite3.Connection) -> list[str]:
    """The turns of every run still running."""
    rows = conn.execute("SELECT turn_id FROM cron_runs WHERE status = 'running' AND turn_id IS NOT NULL").fetchall()
    return [r[0] for r in rows]


def _running(conn: sqlite3.Connection, job_id: str) -> int | None:
    """When the job's newest run still in progress started, if any (call after `settle_runs`)."""
    r = conn.execute(
        "SELECT MAX(started_at) FROM cron_runs WHERE job_id = ? AND status = 'running'", (job_id,)
    ).fetchone()
    return None if r is None or r[0] is None else int(r[0])


def claim_due(conn: sqlite3.Connection, now_ms: int, next_slot: NextSlot) -> list[tuple[CronJob, int]]:
    """Claim every enabled job whose slot has come: record its run and move it to its next slot after `now_ms`.

    Both happen in the caller's transaction, so after a crash a claimed slot is never fired again; missed slots
    (the gateway was down) fire once, not once each. A slot that comes while the job's previous run is still
    running is recorded `skipped` and not fired: runs of one job never overlap (a manual trigger excepted).
    Returns (job, slot) pairs to fire.
    """
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM cron_jobs WHERE enabled = 1 AND next_fire_at IS NOT NULL AND next_fire_at <= ?",
        (now_ms,),
    ).fetchall()
    claimed = []
    for job in map(_job, rows):
        slot = job.next_fire_at
        assert slot is not None
        settle_runs(conn, now_ms=now_ms, job_id=job.id)
        busy_since = _running(conn, job.id)
        if busy_since is None:
            cur = conn.execute(
                "INSERT OR IGNORE INTO cron_runs (job_id, slot_at, trigger, status, started_at) "
                "VALUES (?, ?, 'schedule', 'running', ?)",
                (job.id, slot, now_ms),
            )
        else:
            cur = conn.execute(
                "INSERT OR IGNORE INTO cron_runs (job_id, slot_at, trigger, status, error, started_at, ended_at) "
                "VALUES (?, ?, 'schedule', 'skipped', ?, ?, ?)",
                (job.id, slot, _SKIPPED, now_ms, now_ms),
            )
        conn.execute(
            "UPDATE cron_jobs SET next_fire_at = ?, last_fire_at = ?, updated_at = ? WHERE id = ?",
            (next_slot(job, now_ms), slot, now_ms, job.id),
        )
        if cur.rowcount and busy_since is None:
            claimed.append((job, slot))
    return claimed


_SKIPPED = "the previous run of this job was still running"


def claim_manual(conn: sqlite3.Connection, job_id: str, now_ms: int) -> int:
    """Record a manual trigger as its own run (its slot is the trigger time, made unique); return the slot."""
    slot = now_ms
    while True:
        cur = conn.execute(
            "INSERT OR IGNORE INTO cron_runs (job_id, slot_at, trigger, status, started_at) "
            "VALUES (?, ?, 'manual', 'running', ?)",
            (job_id, slot, now_ms),
        )
        if cur.rowcount:
            return slot
        slot += 1


def run_submitted(
    conn: sqlite3.Connection, job_id: str, slot: int, *, session_id: str, turn_id: str, now_ms: int
) -> None:
    """The run's turn is queued: remember it; the run stays `running` until the turn ends (`settle_runs`)."""
    conn.execute(
        "UPDATE cron_runs SET session_id = ?, turn_id = ? WHERE job_id = ? AND slot_at = ? AND status = 'running'",
        (session_id, turn_id, job_id, slot),
    )
    # A fast turn may have ended before its id was known here: its end is already stored.
    settle_runs(conn, now_ms=now_ms, job_id=job_id)


def run_failed(conn: sqlite3.Connection, job_id: str, slot: int, *, error: str, now_ms: int) -> None:
    """The run's turn could not be submitted (its target is gone, the runtime did not answer)."""
    conn.execute(
        "UPDATE cron_runs SET status = 'error', error = ?, ended_at = ? WHERE job_id = ? AND slot_at = ?",
        (error, now_ms, job_id, slot),
    )


_RUN_COLUMNS = "id, job_id, slot_at, trigger, status, session_id, turn_id, error, started_at, ended_at"


def runs_of(conn: sqlite3.Connection, job_id: str) -> list[CronRun]:
    """Every run of the job, oldest slot first."""
    rows = conn.execute(f"SELECT {_RUN_COLUMNS} FROM cron_runs WHERE job_id = ? ORDER BY slot_at", (job_id,)).fetchall()
    return [CronRun(*r) for r in rows]


def list_runs(conn: sqlite3.Connection, job_id: str, *, limit: int, before: int | None = None) -> list[CronRun]:
    """A page of the job's runs, newest first (by run id); `before`: only runs older than that run id."""
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM cron_runs WHERE job_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
        (job_id, before if before is not None else 2**63 - 1, limit),
    ).fetchall()
    return [CronRun(*r) for r in rows]


def new_job_id() -> str:
    return new_id()
