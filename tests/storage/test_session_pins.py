"""Storage of a session's pinned provider and model, and migration 044 clearing the old creation-time values."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage import sessions as sess_db
from storage.db import open_db
from storage.schema import MIGRATIONS, run_migrations


def test_migration_044_unpins_sessions_made_before_it(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    names = [name for name, _ in MIGRATIONS]
    before = MIGRATIONS[: names.index("044_session_pins")]
    run_migrations(conn, before)
    # Before 044 every new session recorded the default of the day; nothing read it.
    old = sess_db.get_or_create_session(conn, "api", "1", "", now_ms=1, provider="echo", model="echo")
    assert (old.provider, old.model) == ("echo", "echo")
    assert run_migrations(conn, MIGRATIONS) == ["044_session_pins", *names[len(before) + 1 :]]
    assert sess_db.pin_of(conn, old.id) == (None, None)


def test_set_pin_and_read_it_back(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "p.db")
    s = sess_db.get_or_create_session(conn, "webchat", "a", "", now_ms=1)
    assert sess_db.pin_of(conn, s.id) == (None, None)
    assert sess_db.set_pin(conn, s.id, provider="openai", model="m", now_ms=5)
    row = sess_db.get_session(conn, s.id)
    assert row is not None and (row.provider, row.model, row.updated_at) == ("openai", "m", 5)
    assert sess_db.set_pin(conn, s.id, provider=None, model=None, now_ms=6)
    assert sess_db.pin_of(conn, s.id) == (None, None)
    assert not sess_db.set_pin(conn, "missing", provider="echo", model=None, now_ms=7)
    assert sess_db.pin_of(conn, "missing") == (None, None)


def test_migration_045_unpins_the_sessions_connector_ingress_created(tmp_path: Path) -> None:
    from storage import ingress as ingress_db

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    names = [name for name, _ in MIGRATIONS]
    run_migrations(conn, MIGRATIONS[: names.index("047_connector_pins")])
    # Before 047, ingress pinned each session it created to the config file's provider (model never set).
    made = sess_db.get_or_create_session(conn, "telegram:tg1", "555", "", now_ms=10, provider="echo")
    spec = ingress_db.SessionSpec(candidates=(("telegram:tg1", "555", ""),))
    item = ingress_db.IngressItem("u1", b"f", "hi", b"{}", spec)
    assert ingress_db.ingest(conn, "telegram/tg1", [item], now_ms=10)[0].status == "accepted"
    # An admin's session, pinned on purpose before any ingress reached it, and one pinned with a model: kept.
    chosen = sess_db.get_or_create_session(conn, "telegram:tg1", "777", "", now_ms=20, provider="openai")
    spec2 = ingress_db.SessionSpec(candidates=(("telegram:tg1", "777", ""),))
    ingress_db.ingest(conn, "telegram/tg1", [ingress_db.IngressItem("u2", b"f", "x", b"{}", spec2)], now_ms=30)
    modelled = sess_db.get_or_create_session(conn, "external:e", "rk:a", "", now_ms=40, provider="openai", model="m")
    spec3 = ingress_db.SessionSpec(candidates=(("external:e", "rk:a", ""),))
    ingress_db.ingest(conn, "external/e", [ingress_db.IngressItem("u3", b"f", "x", b"{}", spec3)], now_ms=40)
    web = sess_db.get_or_create_session(conn, "webchat", "w", "", now_ms=50, provider="openai")
    assert run_migrations(conn, MIGRATIONS)[0] == "047_connector_pins"
    assert sess_db.pin_of(conn, made.id) == (None, None)
    assert sess_db.pin_of(conn, chosen.id) == ("openai", None)
    assert sess_db.pin_of(conn, modelled.id) == ("openai", "m")
    assert sess_db.pin_of(conn, web.id) == ("openai", None)
