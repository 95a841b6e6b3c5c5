"""storage/backup.py: one snapshot while another connection writes, step progress, checks and restoring in place."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from storage.backup import STEP_PAGES, BackupError, backup, check_file, check_live, key_opens, restore
from storage.db import open_db


def _fill(db: Path, rows: int) -> None:
    conn = open_db(db)
    try:
        conn.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, blob BLOB)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO filler (blob) VALUES (?)", [(os.urandom(3000),) for _ in range(rows)])
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_backup_is_one_snapshot_while_another_connection_writes(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    _fill(db, 2000)  # ~6 MB: several steps of STEP_PAGES
    writer = sqlite3.connect(db, isolation_level=None)
    steps: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        steps.append((done, total))
        if len(steps) > 100:  # a backup restarted by each write would never end
            raise RuntimeError("the backup keeps restarting")
        writer.execute("INSERT INTO filler (blob) VALUES (x'00')")  # committed between two steps

    try:
        result = backup(db, tmp_path / "copy.db", progress=progress)
    finally:
        writer.close()
    assert len(steps) >= 2 and steps[-1][0] == steps[-1][1] and steps[0][1] > STEP_PAGES
    assert [d for d, _ in steps] == sorted(d for d, _ in steps)  # never restarted from page one
    copy = sqlite3.connect(result.path)
    try:
        assert copy.execute("SELECT count(*) FROM filler").fetchone()[0] == 2000  # none written during it
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        copy.close()
    assert result.integrity == "ok" and os.stat(result.path).st_mode & 0o777 == 0o600
    live = sqlite3.connect(db)
    try:
        assert live.execute("SELECT count(*) FROM filler").fetchone()[0] == 2000 + len(steps)
    finally:
        live.close()
    assert check_live(db) == "ok" and key_opens(result.path, tmp_path / "secrets.key") is True


def test_restore_keeps_the_old_database_with_its_wal(tmp_path: Path) -> None:
    db = tmp_path / "data" / "gateway.db"
    _fill(db, 10)
    copy = backup(db, tmp_path / "copy.db").path
    conn = open_db(db)
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the next rows stay in the WAL only
    conn.execute("INSERT INTO filler (blob) VALUES (x'01')")
    wal = db.with_name("gateway.db-wal")
    assert wal.stat().st_size > 0
    kept = restore(copy, db, stamp="T1")
    conn.close()  # a closed connection to the moved file: it checkpoints into the kept pair, not the new one
    assert kept is not None and kept.name == "gateway.db.before-restore-T1"
    again = restore(copy, db, stamp="T1")
    assert again is not None and again.name == "gateway.db.before-restore-T1-2"  # never overwrites a kept file
    old = sqlite3.connect(kept)
    try:
        assert old.execute("SELECT count(*) FROM filler").fetchone()[0] == 11
    finally:
        old.close()
    assert check_file(db) == "ok" and os.stat(db).st_mode & 0o777 == 0o600


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no database"):
        backup(tmp_path / "missing.db", tmp_path / "b.db")
    db = tmp_path / "gateway.db"
    _fill(db, 1)
    (tmp_path / "b.db").write_text("mine")
    with pytest.raises(BackupError, match="already exists"):
        backup(db, tmp_path / "b.db")
    assert (tmp_path / "b.db").read_text() == "mine"
    with pytest.raises(BackupError, match="not a readable SQLite database"):
        check_file(tmp_path / "b.db")
    for name in ("gateway.db", "gateway.db-wal"):
        with pytest.raises(BackupError, match="the database itself"):
            backup(db, tmp_path / "sub" / ".." / name, force=True)
    with pytest.raises(BackupError, match="the database itself"):
        restore(db, db, stamp="T")
    assert check_file(db) == "ok"
