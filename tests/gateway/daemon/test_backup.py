"""`gateway backup` and `gateway restore` through real processes, beside a real gateway that keeps writing."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.config.file import default_data_dir
from storage.db import open_db
from tests.gateway.harness import Site, wait_for

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "a long password\n"


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _titles(db: Path) -> set[str]:
    return {str(r[0]) for r in _rows(db, "SELECT title FROM sessions WHERE title LIKE 'w%'")}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _add_user(site: Site, name: str) -> None:
    argv = site.argv("user", "add", name, "--password-stdin")
    r = subprocess.run(argv, env=site.env, input=PASSWORD, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


class Writer:
    """Creates sessions over REST on a thread until stopped; `acked` holds the titles the gateway answered 201."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                title = f"w{i}"
                r = client.post("/api/sessions", json={"title": title})
                if r.status_code == 201:
                    self.acked.append(title)
                else:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")
                    return
                i += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def test_backup_of_a_running_gateway_then_restore_once_stopped(tmp_path: Path) -> None:
    site = Site(tmp_path, GATEWAY_LIMITS_ENABLED="false")  # the writer goes as fast as it can
    writer: Writer | None = None
    try:
        site.spawn("serve")
        info = site.wait_serving()
        assert info.url is not None
        writer = Writer(info.url, site.paths.token_file.read_text().strip())
        wait_for(lambda: True if len(writer.acked) >= 30 or writer.errors else None, timeout=60, what="30 writes")
        assert not writer.errors, writer.errors
        committed = set(writer.acked)  # answered before the backup started: they must all be in it
        backup = tmp_path / "out" / "gw.backup"
        backup.parent.mkdir()
        r = site.cli("backup", str(backup), "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        during = len(writer.acked)
        # The gateway goes on writing after the backup (it never held the gateway up).
        wait_for(lambda: True if len(writer.acked) > during + 5 or writer.errors else None, timeout=60, what="writes")
        assert report["integrity"] == "ok" and report["gatewayRunning"] is True
        assert report["keyInside"] is False and report["keyFile"] == str(site.paths.secrets_key_file)
        assert report["keyOpens"] is True and report["mode"] == "0600"
        assert report["file"] == str(backup) and report["bytes"] == backup.stat().st_size
        assert _mode(backup) == 0o600
        assert not backup.with_name(backup.name + "-wal").exists()  # one self-contained file
        in_backup = _titles(backup)
        assert committed <= in_backup, sorted(committed - in_backup)[:5]
        assert _rows(backup, "PRAGMA integrity_check") == [("ok",)]
        assert _rows(backup, "PRAGMA journal_mode") == [("delete",)]
        assert not list(backup.parent.glob(".*partial*"))  # no temporary file left behind

        # An existing file is never overwritten without --force.
        again = site.cli("backup", str(backup))
        assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr

        # Restore is refused while the gateway runs, and nothing is touched.
        refused = site.cli("restore", str(backup))
        assert refused.returncode == 1 and f"pid {info.pid}" in refused.stderr and "gateway stop" in refused.stderr
        assert not list(site.paths.data_dir.glob("gateway.db.before-restore-*"))
        writer.close()
        assert not writer.errors, writer.errors
        written = set(writer.acked)
        assert site.cli("stop").returncode == 0
        assert site.lock() is None
        assert _titles(site.paths.db_file) == written and len(written) > len(in_backup) - 1

        restored = site.cli("restore", str(backup), "--json")
        assert restored.returncode == 0, restored.stderr
        done = json.loads(restored.stdout)
        kept = Path(done["keptDatabase"])
        assert kept.name.startswith("gateway.db.before-restore-") and kept.parent == site.paths.data_dir
        assert _titles(kept) == written  # the old database, kept whole (its WAL went with it)
        db = site.paths.db_file
        assert _titles(db) == in_backup and _mode(db) == 0o600
        for suffix in ("-wal", "-shm"):
            assert not db.with_name(db.name + suffix).exists()

        # The restored database serves: same sessions, same secrets key.
        site.spawn("serve")
        info = site.wait_serving(not_pid=info.pid)
        assert info.url is not None
        token = site.paths.token_file.read_text().strip()
        listed = httpx.get(f"{info.url}/api/sessions?limit=1000", headers={"Authorization": f"Bearer {token}"})
        assert {s["title"] for s in listed.json()["sessions"] if s["title"].startswith("w")} == in_backup
        for path in (db, db.with_name(db.name + "-wal")):
            assert _mode(path) == 0o600
    finally:
        if writer is not None:
            writer.close()
        site.cleanup()


def test_restore_checks_its_input_and_keeps_the_database_untouched(tmp_path: Path) -> None:
    site = Site(tmp_path)
    _add_user(site, "root")
    backup = tmp_path / "good.db"
    made = site.cli("backup", str(backup))
    assert made.returncode == 0, made.stderr
    assert "NOT inside this backup" in made.stderr and str(site.paths.secrets_key_file) in made.stderr
    db = site.paths.db_file
    before = db.read_bytes()

    # A page of the users table overwritten: SQLite still opens the file, its integrity check does not pass.
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(backup.read_bytes())
    root_page, page_size = _rows(corrupt, "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM "
                                 "sqlite_master WHERE name = 'users'")[0]  # fmt: skip
    assert isinstance(root_page, int) and isinstance(page_size, int)
    with corrupt.open("r+b") as fh:
        fh.seek((root_page - 1) * page_size)
        fh.write(b"\x0d\x00\x00\x00\x09\x00\x00\x00")
    r = site.cli("restore", str(corrupt))
    assert r.returncode == 1 and "fails its integrity check" in r.stderr and "nothing was restored" in r.stderr

    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(backup.read_bytes()[:5000])
    r = site.cli("restore", str(truncated))
    assert r.returncode == 1 and "nothing was restored" in r.stderr

    text = tmp_path / "notes.txt"
    text.write_text("not a database at all\n" * 100)
    r = site.cli("restore", str(text))
    assert r.returncode == 1 and "not a readable SQLite database" in r.stderr

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    r = site.cli("restore", str(other))
    assert r.returncode == 1 and "not a gateway's" in r.stderr

    r = site.cli("restore", str(tmp_path / "missing.db"))
    assert r.returncode == 1 and "no backup file" in r.stderr

    assert db.read_bytes() == before
    assert not list(site.paths.data_dir.glob("gateway.db.before-restore-*"))
    assert not list(site.paths.data_dir.glob(".gateway.db.restore-*"))

    # --force replaces an existing backup file.
    assert site.cli("backup", str(backup), "--force").returncode == 0


def test_a_backup_moves_to_another_machine_only_with_its_key(tmp_path: Path) -> None:
    for name in ("home", "away"):
        (tmp_path / name).mkdir()
    home = Site(tmp_path / "home")
    _add_user(home, "root")
    backup = tmp_path / "gw.backup"
    assert home.cli("backup", str(backup)).returncode == 0

    away = Site(tmp_path / "away")
    _add_user(away, "someone")  # its own database, sealed with its own key
    away_key = away.paths.secrets_key_file.read_bytes()
    r = away.cli("restore", str(backup))
    assert r.returncode == 1 and "--key" in r.stderr and "nothing was restored" in r.stderr

    wrong = away.cli("restore", str(backup), "--key", str(away.paths.secrets_key_file))
    assert wrong.returncode == 1 and "does not open" in wrong.stderr

    r = away.cli("restore", str(backup), "--key", str(home.paths.secrets_key_file), "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert away.paths.secrets_key_file.read_bytes() == home.paths.secrets_key_file.read_bytes()
    assert _mode(away.paths.secrets_key_file) == 0o600
    assert Path(done["keptKey"]).read_bytes() == away_key
    listed = away.cli("user", "list", "--json")
    assert listed.returncode == 0, listed.stderr  # opening the database checks the key
    assert [u["username"] for u in json.loads(listed.stdout)] == ["root"]


def test_backup_without_a_database_and_into_a_missing_folder(tmp_path: Path) -> None:
    site = Site(tmp_path)
    r = site.cli("backup", str(tmp_path / "b.db"))
    assert r.returncode == 1 and "no database" in r.stderr
    _add_user(site, "root")
    r = site.cli("backup", str(tmp_path / "nowhere" / "b.db"))
    assert r.returncode == 1 and "cannot write" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'x'\n")
    r = subprocess.run([*site.command, "backup", "--config", str(bad), str(tmp_path / "c.db")], env=site.env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 78 and "config error" in r.stderr


def _litestream_config() -> dict[str, object]:
    text = (ROOT / "docs" / "install.md").read_text()
    m = re.search(r"```yaml\n# ~/.config/gateway/litestream.yml\n(.*?)```", text, re.S)
    assert m, "docs/install.md lost its litestream.yml block"
    data = yaml.safe_load(m.group(1))
    assert isinstance(data, dict)
    return data


def test_the_documented_litestream_recipe_fits_our_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _litestream_config()
    dbs = data["dbs"]
    assert isinstance(dbs, list) and len(dbs) == 1
    entry = dbs[0]
    assert isinstance(entry, dict)
    # The path the recipe names is where a default install keeps its database (user pi, no XDG_DATA_HOME).
    monkeypatch.setenv("HOME", "/home/pi")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert entry["path"] == str(default_data_dir() / "gateway.db")
    replicas = entry["replicas"]
    assert isinstance(replicas, list) and replicas and all("url" in r or "type" in r for r in replicas)

    # What Litestream needs of the application (litestream.io/tips): WAL, a busy timeout (it takes short write
    # locks to checkpoint), automatic checkpoints left on; and the figures the page quotes are ours.
    conn = open_db(tmp_path / "gateway.db")
    try:
        pragmas = {
            name: conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "busy_timeout", "wal_autocheckpoint", "synchronous")
        }
    finally:
        conn.close()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["busy_timeout"] >= 5000
    assert pragmas["wal_autocheckpoint"] > 0
    text = (ROOT / "docs" / "install.md").read_text()
    assert f"busy_timeout = {pragmas['busy_timeout']}" in text
    assert f"wal_autocheckpoint = {pragmas['wal_autocheckpoint']}" in text


def test_a_large_database_shows_its_progress(tmp_path: Path) -> None:
    site = Site(tmp_path)
    _add_user(site, "root")
    with sqlite3.connect(site.paths.db_file) as conn:
        conn.execute("CREATE TABLE filler (blob BLOB)")
        conn.executemany("INSERT INTO filler VALUES (randomblob(65536))", [()] * 540)  # 34 MiB
    r = site.cli("backup", str(tmp_path / "big.db"))
    assert r.returncode == 0, r.stderr
    shown = [line for line in r.stderr.splitlines() if line.startswith("copying:")]
    assert len(shown) >= 3 and shown[-1].startswith("copying: 100 % of 3") and "MiB" in shown[-1]
    r = site.cli("backup", str(tmp_path / "big2.db"), "--json")
    assert r.returncode == 0 and "copying:" not in r.stderr and json.loads(r.stdout)["bytes"] > 32 * 1024 * 1024
