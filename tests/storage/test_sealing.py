"""Secrets sealed at rest: nothing readable in the raw file, a missing or wrong key said so, crash-safe rotation."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from storage import mcp as mcp_db
from storage import secrets as secrets_db
from storage.db import open_db
from storage.mcp import McpServerRow
from storage.schema import MIGRATIONS, run_migrations
from storage.sealing import KEY_FILE, SEALED_COLUMNS, SecretsKeyError, commit_key, reseal, rotate_key, stage_key

SLOT_CANARY = "slot-CANARY-5b7d9f1a3c5e7a9b"
ENV_CANARY = "env-CANARY-8e6c4a2f0d8b6a4c"
HEADER_CANARY = "hdr-CANARY-1a3c5e7f9b2d4f6a"
CANARIES = (SLOT_CANARY, ENV_CANARY, HEADER_CANARY)


def raw_bytes(db: Path) -> bytes:
    """Everything SQLite keeps for this database on disk: the file, its write-ahead log and shared memory."""
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


def store_secrets(conn: sqlite3.Connection) -> None:
    secrets_db.put_secret(conn, "connector/telegram/tg/bot_token", SLOT_CANARY, now_ms=1)
    server = McpServerRow(
        name="remote",
        transport="sse",
        enabled=True,
        url="https://mcp.example/sse",
        env={"API_KEY": ENV_CANARY},
        headers={"Authorization": HEADER_CANARY},
    )
    mcp_db.upsert_server(conn, server, now_ms=1)


def read_secrets(conn: sqlite3.Connection) -> tuple[str | None, dict[str, str], dict[str, str]]:
    server = mcp_db.get_server(conn, "remote")
    assert server is not None
    return secrets_db.get_secret(conn, "connector/telegram/tg/bot_token"), server.env, server.headers


def test_every_secret_column_is_sealed_in_the_raw_file(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    conn = open_db(db)
    store_secrets(conn)
    assert read_secrets(conn) == (SLOT_CANARY, {"API_KEY": ENV_CANARY}, {"Authorization": HEADER_CANARY})
    raw = raw_bytes(db)
    assert [c for c in CANARIES if c.encode() in raw] == []
    for table, _, column in SEALED_COLUMNS:  # every sealed column holds sealed values only
        values = [r[0] for r in conn.execute(f"SELECT {column} FROM {table}")]
        assert values and all(v.startswith("nacl1:") for v in values), (table, column)
    conn.close()
    key = tmp_path / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(bytes.fromhex(key.read_text().strip())) == 32


def test_a_database_copied_without_its_key_reveals_nothing_and_says_the_key_is_missing(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    conn = open_db(db)
    store_secrets(conn)
    conn.close()
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    shutil.copy(db, stolen / "gateway.db")
    assert [c for c in CANARIES if c.encode() in raw_bytes(stolen / "gateway.db")] == []
    with pytest.raises(SecretsKeyError, match=r"key file .*secrets\.key is missing: restore it"):
        open_db(stolen / "gateway.db")
    assert not (stolen / KEY_FILE).exists()  # no new key was made that would hide the problem
    # Another gateway's key does not open them either, and says so.
    shutil.copy(tmp_path / KEY_FILE, stolen / "other.key")
    open_db(tmp_path / "another.db", key_file=stolen / KEY_FILE).close()
    with pytest.raises(SecretsKeyError, match="does not open this database's sealed secrets"):
        open_db(stolen / "gateway.db")
    # With its own key it opens.
    conn = open_db(stolen / "gateway.db", key_file=stolen / "other.key")
    assert read_secrets(conn)[0] == SLOT_CANARY
    conn.close()


def test_rotation_keeps_everything_readable_and_retires_the_old_key(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    key = tmp_path / KEY_FILE
    conn = open_db(db)
    store_secrets(conn)
    before = {r[0]: r[1] for r in conn.execute("SELECT slot, value FROM secrets")}
    old_key = key.read_bytes()
    assert rotate_key(conn, key) == 3
    assert read_secrets(conn)[0] == SLOT_CANARY  # the open connection uses the new key at once
    conn.close()
    assert key.read_bytes() != old_key and not key.with_name(KEY_FILE + ".new").exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    conn = open_db(db)
    assert read_secrets(conn) == (SLOT_CANARY, {"API_KEY": ENV_CANARY}, {"Authorization": HEADER_CANARY})
    after = {r[0]: r[1] for r in conn.execute("SELECT slot, value FROM secrets")}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    conn.close()
    assert [c for c in CANARIES if c.encode() in raw_bytes(db)] == []
    retired = tmp_path / "retired.key"
    retired.write_bytes(old_key)
    with pytest.raises(SecretsKeyError):
        open_db(db, key_file=retired)


def test_a_rotation_interrupted_at_any_step_leaves_a_database_that_opens(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    key = tmp_path / KEY_FILE
    staged = tmp_path / (KEY_FILE + ".new")
    conn = open_db(db)
    store_secrets(conn)
    # Crash after the new key was staged, before the transaction: the old key still opens; the stage is dropped.
    old_key = key.read_bytes()
    stage_key(key)
    conn.close()
    conn = open_db(db)
    assert read_secrets(conn)[0] == SLOT_CANARY
    assert key.read_bytes() == old_key and not staged.exists()
    # Crash after the transaction committed, before the key file was replaced: the staged key opens, and is
    # put in place.
    from storage.sealing import sealer_of

    new = stage_key(key)
    reseal(conn, sealer_of(conn), new)
    conn.close()
    conn = open_db(db)
    assert read_secrets(conn)[0] == SLOT_CANARY
    assert key.read_bytes() != old_key and not staged.exists()
    conn.close()
    # commit_key is the last step and only renames.
    stage_key(key)
    commit_key(key)
    with pytest.raises(SecretsKeyError):
        open_db(db)  # a staged key committed without its transaction does not open the database


def test_the_migration_seals_secrets_stored_in_plain_text_before_it(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    conn = sqlite3.connect(db, isolation_level=None)
    names = [name for name, _ in MIGRATIONS]
    run_migrations(conn, MIGRATIONS[: names.index("046_seal_secrets")])
    conn.execute("INSERT INTO secrets VALUES ('app_config.llm.api_key', ?, 1, 1)", (SLOT_CANARY,))
    conn.execute(
        "INSERT INTO mcp_servers (name, transport, enabled, env, url, headers) VALUES ('remote', 'sse', 1, ?, ?, ?)",
        (f'{{"API_KEY": "{ENV_CANARY}"}}', "https://mcp.example/sse", f'{{"Authorization": "{HEADER_CANARY}"}}'),
    )
    conn.close()
    assert SLOT_CANARY.encode() in raw_bytes(db)  # the state this migration repairs
    conn = open_db(db)
    assert secrets_db.get_secret(conn, "app_config.llm.api_key") == SLOT_CANARY
    server = mcp_db.get_server(conn, "remote")
    assert server is not None and server.env == {"API_KEY": ENV_CANARY}
    assert server.headers == {"Authorization": HEADER_CANARY}
    assert [c for c in CANARIES if c.encode() in raw_bytes(db)] == []
    conn.close()
