"""Opening the SQLite file: pragmas, WAL, and running the registered migrations."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Literal

from nacl.utils import random

from storage.schema import MIGRATIONS, run_migrations
from storage.sealing import KEY_BYTES, KEY_FILE, Sealer, ensure_check, load_sealer

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


def release_cache(conn: sqlite3.Connection) -> None:
    """Give the connection's page cache back (pages in use stay); later reads refill it from the OS's file cache."""
    conn.execute("PRAGMA shrink_memory")


class GatewayConnection(sqlite3.Connection):
    """A connection that carries the key of its sealed secrets (storage/sealing.py reads it with `sealer_of`)."""

    sealer: Sealer | None = None


def open_db(path: str | Path, *, synchronous: Synchronous = "full", key_file: Path | None = None) -> sqlite3.Connection:
    """Open (creating if needed) the database at `path`, migrate it to the newest schema and return it.

    The connection is in autocommit mode (`isolation_level=None`): callers own their transactions. Its sealed
    secrets use the key in `key_file` (default: `secrets.key` beside the database), created for a database that
    has none yet. Raises StorageError, or SecretsKeyError when the key is missing or does not match.
    """
    path = Path(path)
    if str(path) != ":memory:":
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the data folder {path.parent}: {exc.strerror}; "
                "set [storage] data_dir to a writable folder"
            ) from exc
        _create_private(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=GatewayConnection)
        apply_pragmas(conn, synchronous=synchronous)
        if str(path) == ":memory:":
            sealer = Sealer(random(KEY_BYTES))
        else:
            sealer = load_sealer(conn, key_file or path.parent / KEY_FILE)
        conn.sealer = sealer
        applied = run_migrations(conn, MIGRATIONS)
        ensure_check(conn, sealer)
        if "046_seal_secrets" in applied:
            # The secrets were plain text in the database file until now: the sealed pages replace them there
            # at once, not at some later checkpoint.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"cannot open the database {path}: {exc}; check the file is a gateway database and the disk is writable"
        ) from exc
    return conn


def _create_private(path: Path) -> None:
    """Make the database file 0600 before SQLite opens it: SQLite gives the WAL and SHM files the mode of the
    database file, so they are private from their first byte too (issue 14), whatever the umask. Files left
    group- or world-readable by an older version are tightened."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # there already, or not writable: SQLite's own error will say what matters
        pass
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except OSError:  # absent, or a read-only disk: SQLite's own error will say what matters
            continue


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


def prove_writable(
    path: str | Path, *, synchronous: Synchronous = "full", sealer: Sealer | None = None
) -> sqlite3.Connection:
    """A fresh connection to the existing database at `path`, once the disk has proved it takes writes again.

    A probe file beside the database is written, flushed to disk and removed (read-only, full and failing disks
    refuse that), then a write transaction is opened and closed. Raises OSError or sqlite3.Error when the disk
    still refuses. Used to recover without a restart: a file system remounted writable needs new file handles.
    """
    path = Path(path)
    probe_folder(path.parent)
    conn = _connect_existing(path, sealer)
    try:
        apply_pragmas(conn, synchronous=synchronous)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_existing(path: str | Path, sealer: Sealer | None) -> GatewayConnection:
    conn = sqlite3.connect(
        _existing(path), uri=True, isolation_level=None, check_same_thread=False, factory=GatewayConnection
    )
    conn.sealer = sealer
    return conn


def _existing(path: str | Path) -> str:
    # mode=rw: never create an empty database where the real one is missing (a disk mounted back without it).
    return f"{Path(path).absolute().as_uri()}?mode=rw"


def open_reader(path: str | Path, *, sealer: Sealer | None = None) -> sqlite3.Connection:
    """A second connection to the database at `path` that can only read (`PRAGMA query_only`); `sealer` opens its
    sealed secrets (the writer's, `storage.sealing.sealer_of`)."""
    conn = _connect_existing(path, sealer)
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
