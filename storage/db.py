"""Opening the SQLite file: pragmas, WAL, and running the registered migrations."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Literal

from storage.schema import MIGRATIONS, run_migrations

Synchronous = Literal["full", "normal"]


class StorageError(Exception):
    """The database cannot be opened or migrated; the message says what to do."""


def apply_pragmas(conn: sqlite3.Connection, *, synchronous: Synchronous = "full") -> None:
    """Set the pragmas every connection to the gateway's file uses (also used by the benchmark's floor)."""
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL syncs the WAL on every commit: an acknowledged write survives power loss, not only a crash.
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-8000")


def open_db(path: str | Path, *, synchronous: Synchronous = "full") -> sqlite3.Connection:
    """Open (creating if needed) the database at `path`, migrate it to the newest schema and return it.

    The connection is in autocommit mode (`isolation_level=None`): callers own their transactions.
    """
    path = Path(path)
    if str(path) != ":memory:":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the data folder {path.parent}: {exc.strerror}; "
                "set [storage] data_dir to a writable folder"
            ) from exc
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        apply_pragmas(conn, synchronous=synchronous)
        run_migrations(conn, MIGRATIONS)
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"cannot open the database {path}: {exc}; check the file is a gateway database and the disk is writable"
        ) from exc
    if str(path) != ":memory:":
        try:
            os.chmod(path, 0o600)
        except OSError:
            pass
    return conn


def probe_folder(folder: Path) -> None:
    """Write a small file in `folder`, flush it to disk and remove it; raise OSError when the disk refuses
    (read-only, full, failing)."""
    probe = folder / ".gateway-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
        try:
            os.unlink(probe)
        except OSError:
            pass


def prove_writable(path: str | Path, *, synchronous: Synchronous = "full") -> sqlite3.Connection:
    """A fresh connection to the existing database at `path`, once the disk has proved it takes writes again.

    A probe file beside the database is written, flushed to disk and removed (read-only, full and failing disks
    refuse that), then a write transaction is opened and closed. Raises OSError or sqlite3.Error when the disk
    still refuses. Used to recover without a restart: a file system remounted writable needs new file handles.
    """
    path = Path(path)
    probe_folder(path.parent)
    conn = sqlite3.connect(_existing(path), uri=True, isolation_level=None, check_same_thread=False)
    try:
        apply_pragmas(conn, synchronous=synchronous)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _existing(path: str | Path) -> str:
    # mode=rw: never create an empty database where the real one is missing (a disk mounted back without it).
    return f"{Path(path).absolute().as_uri()}?mode=rw"


def open_reader(path: str | Path) -> sqlite3.Connection:
    """A second connection to the database at `path` that can only read (`PRAGMA query_only`)."""
    conn = sqlite3.connect(_existing(path), uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA query_only=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def integrity_check(conn: sqlite3.Connection) -> str:
    """Return SQLite's `PRAGMA integrity_check` verdict (`ok` when the file is sound)."""
    row = conn.execute("PRAGMA integrity_check").fetchone()
    return str(row[0])
