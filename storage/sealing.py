"""Secrets sealed at rest: a NaCl SecretBox key in a 0600 file beside the database, sealing and key rotation."""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.utils import random

KEY_FILE = "secrets.key"
KEY_BYTES = SecretBox.KEY_SIZE
PREFIX = "nacl1:"
CHECK_TABLE = "secrets_key_check"  # one row: a known text sealed with the key, to tell a wrong key at open
_CHECK_TEXT = "gateway secrets key check v1"
# Every column that holds sealed values: (table, primary key, column). The migration that seals old plain text,
# key rotation and the canary tests all walk this list, so a new secret column is added here and nowhere else.
SEALED_COLUMNS = (("secrets", "slot", "value"), ("mcp_servers", "name", "env"), ("mcp_servers", "name", "headers"))


class SecretsKeyError(Exception):
    """The key that opens the database's sealed secrets is missing or wrong; the message says what to do."""


class Sealer:
    """Seals and opens text with one SecretBox key (XSalsa20-Poly1305, a random nonce per value)."""

    def __init__(self, key: bytes) -> None:
        self.box = SecretBox(key)

    def seal(self, plain: str) -> str:
        return PREFIX + base64.b64encode(bytes(self.box.encrypt(plain.encode()))).decode()

    def open(self, stored: str) -> str:
        """The plain text of a sealed value; a value that is not sealed (written before sealing) as it is.

        Raises SecretsKeyError when the value was sealed with another key or altered."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self.box.decrypt(base64.b64decode(stored[len(PREFIX) :])).decode()
        except (CryptoError, ValueError):
            raise SecretsKeyError("a sealed secret does not open with this key (another key, or altered)") from None

    def opens_check(self, check: str) -> bool:
        try:
            return self.open(check) == _CHECK_TEXT
        except SecretsKeyError:
            return False


def sealer_of(conn: sqlite3.Connection) -> Sealer:
    """The sealer `storage.db.open_db` attached to this connection."""
    sealer = getattr(conn, "sealer", None)
    if not isinstance(sealer, Sealer):
        raise SecretsKeyError("this database connection has no secrets key (open it with storage.db.open_db)")
    return sealer


# ---- the key file ----


def _write_key(path: Path, key: bytes) -> None:
    """Write `key` to `path` atomically, owner-only from its first byte, durably (file and folder synced)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key(path: Path) -> bytes | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(f"{path} is not a secrets key (64 hex digits); restore the right file from a backup")
    return key


def read_key(path: Path) -> bytes | None:
    """The key in the key file `path`, or None when there is none; SecretsKeyError when it is malformed."""
    return _read_key(path)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _check_value(conn: sqlite3.Connection) -> str | None:
    if CHECK_TABLE not in _tables(conn):
        return None
    row = conn.execute(f"SELECT value FROM {CHECK_TABLE}").fetchone()
    return None if row is None else str(row[0])


def _sealed_values(conn: sqlite3.Connection) -> Iterator[tuple[str, str, str, str, str]]:
    """(table, key column, column, key, value) of every stored value in SEALED_COLUMNS (sealed or not yet)."""
    tables = _tables(conn)
    for table, pk, column in SEALED_COLUMNS:
        if table in tables:
            for key, value in conn.execute(f"SELECT {pk}, {column} FROM {table}").fetchall():
                if value is not None:
                    yield table, pk, column, str(key), str(value)


def load_sealer(conn: sqlite3.Connection, key_file: Path) -> Sealer:
    """The sealer for this database: its key file's key, checked against the database; a new key for a database
    that holds no sealed secret yet. Finishes a key rotation that a crash interrupted (see `rotate_key`).

    Raises SecretsKeyError when the database holds sealed secrets and no key file here opens them.
    """
    check = _check_value(conn)
    sealed = check is not None or any(v.startswith(PREFIX) for *_, v in _sealed_values(conn))
    staged = key_file.with_name(key_file.name + ".new")
    key = _read_key(key_file)
    if key is None and not sealed:
        key = random(KEY_BYTES)
        _write_key(key_file, key)
        staged.unlink(missing_ok=True)
        return Sealer(key)
    if key is not None and (check is None or Sealer(key).opens_check(check)):
        staged.unlink(missing_ok=True)  # a rotation that stopped before its transaction: nothing to finish
        return Sealer(key)
    new = _read_key(staged)
    if new is not None and check is not None and Sealer(new).opens_check(check):
        os.replace(staged, key_file)  # the rotation committed its transaction but not the key file: finish it
        _sync_dir(key_file.parent)
        return Sealer(new)
    if key is None:
        raise SecretsKeyError(
            f"the database holds sealed secrets but their key file {key_file} is missing: restore it from the "
            "backup made with the database (a database copied without its key reveals no secret, and cannot be "
            "used with them)"
        )
    raise SecretsKeyError(
        f"the key file {key_file} does not open this database's sealed secrets: restore the key file that was "
        "backed up with this database"
    )


def ensure_check(conn: sqlite3.Connection, sealer: Sealer) -> None:
    """Record which key seals this database (once, after the migrations created its table)."""
    if _check_value(conn) is None:
        conn.execute(f"INSERT OR IGNORE INTO {CHECK_TABLE} (id, value) VALUES (1, ?)", (sealer.seal(_CHECK_TEXT),))


def migrate(conn: sqlite3.Connection) -> int:
    """Migration 046: the key check's table, and every value of SEALED_COLUMNS still in plain text sealed (they
    were written before sealing); return how many. Runs in the migration's transaction."""
    conn.execute(f"CREATE TABLE {CHECK_TABLE} (id INTEGER PRIMARY KEY CHECK (id = 1), value TEXT NOT NULL)")
    plain = [row for row in _sealed_values(conn) if not row[4].startswith(PREFIX)]
    if not plain:
        return 0
    sealer = sealer_of(conn)
    with _secure_delete(conn):  # the plain text's old bytes are zeroed, not left in the pages' free space
        for table, pk, column, key, value in plain:
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE {pk} = ?", (sealer.seal(value), key))
    return len(plain)


@contextmanager
def _secure_delete(conn: sqlite3.Connection) -> Iterator[None]:
    before = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(before)}")


# ---- rotation: stage the new key, re-seal in one transaction, then put the key file in place ----


def stage_key(key_file: Path) -> Sealer:
    """Step 1: write a new key beside the current one (`secrets.key.new`); nothing uses it yet."""
    key = random(KEY_BYTES)
    _write_key(key_file.with_name(key_file.name + ".new"), key)
    return Sealer(key)


def reseal(conn: sqlite3.Connection, old: Sealer, new: Sealer) -> int:
    """Step 2: re-seal every sealed value and the key check with `new`, in ONE transaction; return how many."""
    with _secure_delete(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = 0
            for table, pk, column, key, value in list(_sealed_values(conn)):
                conn.execute(f"UPDATE {table} SET {column} = ? WHERE {pk} = ?", (new.seal(old.open(value)), key))
                n += 1
            conn.execute(f"UPDATE {CHECK_TABLE} SET value = ?", (new.seal(_CHECK_TEXT),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    # The old ciphertexts leave the write-ahead log too.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return n


def commit_key(key_file: Path) -> None:
    """Step 3: the staged key becomes the key file (an atomic rename, then the folder synced)."""
    os.replace(key_file.with_name(key_file.name + ".new"), key_file)
    _sync_dir(key_file.parent)


def rotate_key(conn: sqlite3.Connection, key_file: Path) -> int:
    """Replace the secrets key: stage, re-seal in one transaction, put the key file in place; return how many
    values were re-sealed. A crash at any point leaves a database that `load_sealer` opens: before the
    transaction commits the old key still opens it (the staged one is dropped), after it the staged key does
    (and is put in place). The caller must be the only user of the database (the gateway stopped)."""
    old = sealer_of(conn)
    new = stage_key(key_file)
    n = reseal(conn, old, new)
    commit_key(key_file)
    conn.sealer = new  # type: ignore[attr-defined]
    return n
