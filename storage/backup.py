"""Copies of the database file: an online backup of a live database, checking a copy, putting one in place."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from storage.sealing import CHECK_TABLE, Sealer, SecretsKeyError, read_key

# Pages copied per backup step: 4 MiB with SQLite's default 4 KiB pages, so progress shows on a large file while a
# small one is copied in a step or two.
STEP_PAGES = 1024

Progress = Callable[[int, int], None]  # (pages copied, pages in total)


class BackupError(Exception):
    """A backup or a restore cannot be made; the message says why and what to do."""


class BackupResult(msgspec.Struct, frozen=True):
    path: Path
    bytes: int
    pages: int
    integrity: str
    seconds: float


def _ro_uri(path: Path) -> str:
    # mode=ro with immutable: a copy on its own is read as it is, without creating -wal or -shm beside it.
    return f"{path.absolute().as_uri()}?mode=ro&immutable=1"


def _rw_uri(path: Path) -> str:
    # mode=rw: never create an empty database where the real one is missing.
    return f"{path.absolute().as_uri()}?mode=rw"


def create_private(path: Path) -> None:
    """Create `path` empty and 0600 from its first byte; FileExistsError when it is already there."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_file(path: Path, *, quick: bool = False) -> str:
    """SQLite's verdict on the database file `path` read as it is (`ok` when sound): `integrity_check`, or the
    faster `quick_check` (no index-against-table comparison). Raises BackupError when it is no database at all."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        conn = sqlite3.connect(_ro_uri(path), uri=True)
        try:
            rows = conn.execute(f"PRAGMA {pragma}(20)").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a readable SQLite database ({exc})") from exc
    return "; ".join(str(r[0]) for r in rows) or "no answer"


def check_live(path: Path, *, quick: bool = True) -> str:
    """`quick_check` (or `integrity_check`) of the database at `path`, its write-ahead log included: safe beside a
    running gateway (a reader never blocks its writer). Raises BackupError when it cannot be read."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        conn = sqlite3.connect(_rw_uri(path), uri=True, timeout=5)
        try:
            conn.execute("PRAGMA query_only=ON")
            rows = conn.execute(f"PRAGMA {pragma}(20)").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a readable SQLite database ({exc})") from exc
    return "; ".join(str(r[0]) for r in rows) or "no answer"


def is_gateway_db(path: Path) -> bool:
    """True when the file at `path` holds the gateway's migrations table (so it is one of our databases)."""
    try:
        conn = sqlite3.connect(_ro_uri(path), uri=True)
        try:
            row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False
    return row is not None


def backup(source: Path, target: Path, *, force: bool = False, progress: Progress | None = None) -> BackupResult:
    """Copy the database at `source` (in use or not) to `target` with SQLite's online backup API.

    The copy is one snapshot: a read transaction held on the source for the whole copy keeps later commits of the
    gateway out of it (and keeps the backup from restarting while they happen). It is written to a temporary 0600
    file beside `target`, switched to a rollback journal (a single self-contained file), integrity-checked and
    only then renamed to `target`, which must not exist unless `force`. Raises BackupError.
    """
    if not source.exists():
        raise BackupError(f"there is no database at {source} (the gateway has not run with this config yet)")
    if _same_files(source, target):
        raise BackupError(f"{target} is the database itself (or its WAL): name a file elsewhere")
    if target.exists() and not force:
        raise BackupError(f"{target} already exists; choose another name, or add --force to replace it")
    if target.is_dir():
        raise BackupError(f"{target} is a folder; name the backup file to write")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    started = time.monotonic()
    try:
        create_private(tmp)
    except OSError as exc:
        raise BackupError(f"cannot write in {target.parent}: {exc.strerror}") from exc
    try:
        _copy_online(source, tmp, progress)
        verdict = check_file(tmp)
        if verdict != "ok":
            raise BackupError(f"the copy failed its integrity check ({verdict}); the source may be damaged")
        _fsync(tmp)
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails when a file appeared at `target` meanwhile: never overwrite one
            except FileExistsError:
                raise BackupError(f"{target} already exists; choose another name, or add --force") from None
        sync_dir(target.parent)
        pages, size = _page_count(target), target.stat().st_size
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
    return BackupResult(target, size, pages, verdict, time.monotonic() - started)


def _same_files(db: Path, other: Path) -> bool:
    """True when `other` is the database file `db` or one of its companions (-wal, -shm, -journal)."""
    db, other = db.resolve(), other.resolve()
    return other.parent == db.parent and (other.name == db.name or other.name.startswith(db.name + "-"))


def _copy_online(source: Path, tmp: Path, progress: Progress | None) -> None:
    try:
        src = sqlite3.connect(_rw_uri(source), uri=True, timeout=10, isolation_level=None)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot open {source}: {exc}") from exc
    try:
        src.execute("PRAGMA query_only=ON")
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
            src.backup(dst, pages=STEP_PAGES, progress=_reporter(progress), sleep=0)
            src.execute("COMMIT")
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the backup of {source} failed: {exc}") from exc
    finally:
        src.close()


def _reporter(progress: Progress | None) -> Callable[[int, int, int], object] | None:
    if progress is None:
        return None
    report = progress

    def step(status: int, remaining: int, total: int) -> None:
        report(total - remaining, total)

    return step


def _page_count(path: Path) -> int:
    conn = sqlite3.connect(_ro_uri(path), uri=True)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()


def key_opens(path: Path, key_file: Path) -> bool | None:
    """Whether the key in `key_file` opens the sealed secrets of the database file `path`: None when the file
    holds no key check (nothing sealed yet). Raises SecretsKeyError when the key file is missing or malformed."""
    conn = sqlite3.connect(_ro_uri(path), uri=True)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (CHECK_TABLE,)).fetchone()
        row = conn.execute(f"SELECT value FROM {CHECK_TABLE}").fetchone() if has else None
    finally:
        conn.close()
    if row is None:
        return None
    key = read_key(key_file)
    if key is None:
        raise SecretsKeyError(f"there is no secrets key at {key_file}")
    return Sealer(key).opens_check(str(row[0]))


def restore(source: Path, db_file: Path, *, stamp: str) -> Path | None:
    """Put a copy of the database file `source` in place of `db_file`; the caller has made sure no gateway uses it.

    The copy is made (0600) beside `db_file` and fsynced first; the old database is then renamed to
    `<db>.before-restore-<stamp>` with its write-ahead log (as `…-wal`, so the pair still opens together) and its
    shared-memory file dropped; then the copy is renamed into place. Returns the kept old file, or None.
    """
    if _same_files(db_file, source):
        raise BackupError(f"{source} is the database itself: restore a backup made with `gateway backup`")
    tmp = db_file.with_name(f".{db_file.name}.restore-{os.getpid()}")
    db_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    create_private(tmp)
    try:
        src = sqlite3.connect(_ro_uri(source), uri=True)
        try:
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        _fsync(tmp)
        kept: Path | None = None
        wal, shm = (db_file.with_name(db_file.name + suffix) for suffix in ("-wal", "-shm"))
        if db_file.exists():
            kept = _unused(db_file.with_name(f"{db_file.name}.before-restore-{stamp}"))
            os.replace(db_file, kept)
            if wal.exists():
                os.replace(wal, kept.with_name(kept.name + "-wal"))
        # What is left belongs to no database now (a WAL without its file, a stale index): it must not be
        # replayed onto the restored one.
        wal.unlink(missing_ok=True)
        shm.unlink(missing_ok=True)
        os.replace(tmp, db_file)
        os.chmod(db_file, 0o600)
        sync_dir(db_file.parent)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from exc
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
    return kept


def _unused(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`… when it is taken: a kept file is never overwritten by the next one."""
    n = 1
    candidate = path
    while candidate.exists() or candidate.with_name(candidate.name + "-wal").exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def install_key(key_source: Path, key_file: Path, *, stamp: str) -> Path | None:
    """Copy the secrets key `key_source` to `key_file` (0600, atomically), keeping an existing different key as
    `<key>.before-restore-<stamp>`; returns that kept file, or None."""
    key = read_key(key_source)
    if key is None:
        raise SecretsKeyError(f"there is no secrets key at {key_source}")
    current = read_key(key_file) if key_file.exists() else None
    if current == key:
        return None
    kept = None
    if key_file.exists():
        kept = _unused(key_file.with_name(f"{key_file.name}.before-restore-{stamp}"))
        os.replace(key_file, kept)
    tmp = key_file.with_name(key_file.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, key_file)
    sync_dir(key_file.parent)
    return kept
