"""Cron storage: jobs with a timezone, runs closed from their turn's end, overlapping slots skipped, newest-first
pages of runs, and migration 060 carrying the old run statuses over."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec

from storage import cron as cron_db
from storage import messages as msg_db
from storage import sessions as sess_db
from storage.cron import CronJob
from storage.db import open_db
from storage.schema import MIGRATIONS, run_migrations

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _every_minute(job: CronJob, after_ms: int) -> int:
    return (after_ms // 60_000 + 1) * 60_000


def _job(**fields: object) -> CronJob:
    job = CronJob(
        id=cron_db.new_job_id(), owner="u1", name="n", cron=None, interval_seconds=60, session_id=None,
        connector="cron", chat_id="c", prompt="p", enabled=True, next_fire_at=T0 + 60_000, last_fire_at=None,
        created_at=T0, updated_at=T0,
    )  # fmt: skip
    return msgspec.structs.replace(job, **fields)


def _turn(conn: sqlite3.Connection, session_id: str) -> str:
    return msg_db.create_turn(conn, session_id, "p", now_ms=T0)


def test_a_job_keeps_its_timezone_and_update_writes_every_editable_field(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "c.db")
    job = cron_db.create_job(conn, _job(cron="0 9 * * *", interval_seconds=None, timezone="Europe/Berlin"))
    assert cron_db.get_job(conn, job.id) == job
    assert cron_db.get_job(conn, job.id).timezone == "Europe/Berlin"  # type: ignore[union-attr]
    edited = msgspec.structs.replace(
        job, name="m", cron=None, interval_seconds=90, timezone="UTC", prompt="q", enabled=False,
        next_fire_at=None, updated_at=T0 + 5, session_id="s2", connector=None, chat_id=None,
    )  # fmt: skip
    cron_db.update_job(conn, edited)
    assert cron_db.get_job(conn, job.id) == edited
    # Created without one, a job's zone is UTC.
    assert cron_db.get_job(conn, cron_db.create_job(conn, _job()).id).timezone == "UTC"  # type: ignore[union-attr]


def test_a_run_ends_with_its_turn(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "r.db")
    session = sess_db.get_or_create_session(conn, "cron", "c", "", now_ms=T0, owner="u1")
    job = cron_db.create_job(conn, _job())
    ((_, slot),) = cron_db.claim_due(conn, T0 + 60_000, _every_minute)
    (run,) = cron_db.runs_of(conn, job.id)
    assert (run.status, run.turn_id, run.ended_at, run.started_at) == ("running", None, None, T0 + 60_000)
    turn = _turn(conn, session.id)
    cron_db.run_submitted(conn, job.id, slot, session_id=session.id, turn_id=turn, now_ms=T0 + 60_001)
    assert cron_db.open_turns(conn) == [turn]
    assert cron_db.settle_runs(conn, now_ms=T0 + 60_002) == 0  # the turn is still queued
    msg_db.finish_turn(conn, turn, "completed", now_ms=T0 + 65_000, result="done")
    assert cron_db.settle_runs(conn, now_ms=T0 + 70_000) == 1
    (run,) = cron_db.runs_of(conn, job.id)
    assert (run.status, run.error, run.ended_at, run.session_id) == ("ok", None, T0 + 65_000, session.id)
    assert cron_db.open_turns(conn) == []

    # A failed turn gives its error; a turn that ended before its id was recorded is closed at once.
    ((_, slot),) = cron_db.claim_due(conn, T0 + 120_000, _every_minute)
    failed = _turn(conn, session.id)
    msg_db.finish_turn(conn, failed, "failed", now_ms=T0 + 121_000, error="RuntimeError: the model is down")
    cron_db.run_submitted(conn, job.id, slot, session_id=session.id, turn_id=failed, now_ms=T0 + 122_000)
    latest = cron_db.list_runs(conn, job.id, limit=1)[0]
    assert (latest.status, latest.error, latest.ended_at) == ("error", "RuntimeError: the model is down", T0 + 121_000)

    # A turn deleted with its session: the run is closed as an error rather than left running for ever.
    ((_, slot),) = cron_db.claim_due(conn, T0 + 180_000, _every_minute)
    gone = _turn(conn, session.id)
    cron_db.run_submitted(conn, job.id, slot, session_id=session.id, turn_id=gone, now_ms=T0 + 180_000)
    conn.execute("DELETE FROM messages WHERE turn_id = ?", (gone,))
    conn.execute("DELETE FROM turns WHERE id = ?", (gone,))
    assert cron_db.settle_runs(conn, now_ms=T0 + 181_000) == 1
    latest = cron_db.list_runs(conn, job.id, limit=1)[0]
    assert latest.status == "error" and latest.error == "its session was deleted before the turn ended"

    # One never submitted: failed when submitting, or cut off by a stop (closed at the next start).
    ((_, slot),) = cron_db.claim_due(conn, T0 + 240_000, _every_minute)
    cron_db.run_failed(conn, job.id, slot, error="the target session s no longer exists", now_ms=T0 + 240_001)
    cron_db.claim_due(conn, T0 + 300_000, _every_minute)
    assert cron_db.fail_unsubmitted(conn, now_ms=T0 + 300_000) == 0  # claimed at this very moment: in flight
    assert cron_db.fail_unsubmitted(conn, now_ms=T0 + 400_000) == 1
    statuses = [(r.status, r.error) for r in cron_db.runs_of(conn, job.id)][-2:]
    assert statuses == [
        ("error", "the target session s no longer exists"),
        ("error", "the gateway stopped before the run's turn was submitted"),
    ]


def test_a_slot_that_comes_while_a_run_is_running_is_skipped(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "s.db")
    session = sess_db.get_or_create_session(conn, "cron", "c", "", now_ms=T0, owner="u1")
    job = cron_db.create_job(conn, _job())
    other = cron_db.create_job(conn, _job())
    ((_, slot), _) = sorted(cron_db.claim_due(conn, T0 + 60_000, _every_minute), key=lambda c: c[0].id != job.id)
    turn = _turn(conn, session.id)
    cron_db.run_submitted(conn, job.id, slot, session_id=session.id, turn_id=turn, now_ms=T0 + 60_000)
    # The next slot: `job`'s turn is still queued, so that slot is skipped; `other` (its run unsubmitted but
    # claimed, so also still running) is skipped too; neither is returned to fire.
    assert cron_db.claim_due(conn, T0 + 120_000, _every_minute) == []
    skipped = cron_db.list_runs(conn, job.id, limit=1)[0]
    assert (skipped.status, skipped.slot_at, skipped.error) == (
        "skipped", T0 + 120_000, "the previous run of this job was still running",
    )  # fmt: skip
    assert skipped.started_at == skipped.ended_at == T0 + 120_000
    assert cron_db.get_job(conn, job.id).next_fire_at == T0 + 180_000  # type: ignore[union-attr]
    assert [r.status for r in cron_db.runs_of(conn, other.id)] == ["running", "skipped"]
    # Once the turn has ended, the next slot fires (the claim settles the ended run first).
    msg_db.finish_turn(conn, turn, "completed", now_ms=T0 + 150_000)
    claimed = cron_db.claim_due(conn, T0 + 180_000, _every_minute)
    assert [(j.id, s) for j, s in claimed] == [(job.id, T0 + 180_000)]
    assert [r.status for r in cron_db.runs_of(conn, job.id)] == ["ok", "skipped", "running"]
    # A manual trigger is not held back by a running run.
    manual = cron_db.claim_manual(conn, job.id, T0 + 181_000)
    assert cron_db.list_runs(conn, job.id, limit=1)[0].slot_at == manual


def test_runs_are_paged_newest_first(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "p.db")
    job = cron_db.create_job(conn, _job())
    other = cron_db.create_job(conn, _job())
    slots = [cron_db.claim_manual(conn, job.id, T0 + k) for k in range(5)]
    cron_db.claim_manual(conn, other.id, T0)
    first = cron_db.list_runs(conn, job.id, limit=2)
    assert [r.slot_at for r in first] == slots[:-3:-1]
    second = cron_db.list_runs(conn, job.id, limit=2, before=first[-1].id)
    assert [r.slot_at for r in second] == [slots[2], slots[1]]
    third = cron_db.list_runs(conn, job.id, limit=2, before=second[-1].id)
    assert [r.slot_at for r in third] == [slots[0]]
    assert all(r.job_id == job.id for r in first + second + third)
    # Deleting the job deletes its runs.
    cron_db.delete_job(conn, job.id)
    assert cron_db.runs_of(conn, job.id) == [] and len(cron_db.runs_of(conn, other.id)) == 1


def test_migration_060_carries_old_runs_over(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    before = [m for m in MIGRATIONS if m[0] < "060"]
    run_migrations(conn, before)
    conn.execute(
        "INSERT INTO sessions (id, transport, chat_id, topic_id, status, last_seq, unread, created_at) "
        "VALUES ('s1', 'cron', 'c', '', 'completed', 0, 0, ?)",
        (T0,),
    )
    conn.execute(
        "INSERT INTO cron_jobs (id, owner, name, cron, session_id, prompt, enabled, next_fire_at, created_at, "
        "updated_at) VALUES ('j1', 'u1', 'n', '0 9 * * *', 's1', 'p', 1, ?, ?, ?)",
        (T0, T0, T0),
    )
    done = msg_db.create_turn(conn, "s1", "p", now_ms=T0)
    msg_db.finish_turn(conn, done, "completed", now_ms=T0 + 9)
    queued = msg_db.create_turn(conn, "s1", "p", now_ms=T0)
    old = [
        (1, "claimed", None, None),
        (2, "failed", None, "the target session s1 no longer exists"),
        (3, "submitted", done, None),
        (4, "submitted", queued, None),
    ]
    for slot, status, turn, error in old:
        conn.execute(
            "INSERT INTO cron_runs (job_id, slot_at, trigger, status, turn_id, error, started_at) "
            "VALUES ('j1', ?, 'schedule', ?, ?, ?, ?)",
            (slot, status, turn, error, T0),
        )
    conn.close()

    conn = open_db(path)  # runs what is pending: 060 and any later
    assert cron_db.get_job(conn, "j1").timezone == "UTC"  # type: ignore[union-attr]
    got = [(r.slot_at, r.status, r.error, r.ended_at) for r in cron_db.runs_of(conn, "j1")]
    assert got == [
        (1, "error", "the gateway stopped before the run's turn was submitted", T0),
        (2, "error", "the target session s1 no longer exists", T0),
        (3, "running", None, None),
        (4, "running", None, None),
    ]
    # The scheduler's start settles what it can: the completed turn's run is ok; the queued one stays running.
    assert cron_db.settle_runs(conn, now_ms=T0 + 100) == 1
    assert [r.status for r in cron_db.runs_of(conn, "j1")][2:] == ["ok", "running"]
    assert cron_db.open_turns(conn) == [queued]
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"cron_runs_newest", "cron_runs_open"} <= indexes
