"""Storage: time-ordered ids, migrations, sessions, turns and events (plain pytest and hypothesis)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import events as ev_db
from storage import ingress as ingress_db
from storage import messages as msg_db
from storage import sessions as sess_db
from storage.db import StorageError, integrity_check, open_db
from storage.ids import id_time_ms, new_id
from storage.schema import MIGRATIONS, run_migrations


def test_ids_are_time_ordered_and_unique() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 for i in ids)
    assert id_time_ms(ids[-1]) >= id_time_ms(ids[0])


def test_migrations_run_once(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "m.db")
    assert run_migrations(conn, MIGRATIONS) == []
    names = [r[0] for r in conn.execute("SELECT name FROM _migrations")]
    assert names == [name for name, _ in MIGRATIONS]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert integrity_check(conn) == "ok"


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "f.db")

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half (id INTEGER PRIMARY KEY)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_migrations(conn, [*MIGRATIONS, ("999_broken", broken)])
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half" not in tables
    assert "999_broken" not in {r[0] for r in conn.execute("SELECT name FROM _migrations")}


def test_open_db_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open the database"):
        open_db(bad)


def test_sessions_are_unique_per_key(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "s.db")
    a = sess_db.get_or_create_session(conn, "api", "1", "", now_ms=1)
    b = sess_db.get_or_create_session(conn, "api", "1", "", now_ms=2)
    c = sess_db.get_or_create_session(conn, "api", "1", "7", now_ms=3)
    assert a.id == b.id != c.id
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO sessions (id, transport, chat_id, topic_id, created_at) VALUES ('x', 'api', '1', '', 0)"
        )
    assert sess_db.rename_session(conn, a.id, "hello", now_ms=4)
    got = sess_db.get_session(conn, a.id)
    assert got is not None and got.title == "hello"
    assert sess_db.delete_session(conn, a.id)
    assert sess_db.get_session(conn, a.id) is None


def test_turn_lifecycle_and_crash_recovery(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "t.db")
    s = sess_db.get_or_create_session(conn, "api", "1", "", now_ms=1)
    t1 = msg_db.create_turn(conn, s.id, "hi", now_ms=2)
    msg_db.start_turn(conn, t1, now_ms=3)
    assert msg_db.interrupt_running_turns(conn, now_ms=4) == 1
    turn = msg_db.get_turn(conn, t1)
    assert turn is not None and turn.state == "interrupted"
    t2 = msg_db.create_turn(conn, s.id, "again", now_ms=5)
    assert [t.id for t in msg_db.queued_turns(conn, s.id)] == [t2]
    msg_db.start_turn(conn, t2, now_ms=6)
    msg_db.finish_turn(conn, t2, "completed", now_ms=7, result="again")
    assert [(m.role, m.content) for m in msg_db.history(conn, s.id)] == [
        ("user", "hi"),
        ("user", "again"),
        ("assistant", "again"),
    ]
    row = sess_db.get_session(conn, s.id)
    assert row is not None and row.unread == 1 and row.latest_message == "again"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def memory_db() -> sqlite3.Connection:
    """One migrated database for the examples below: migrating one per example took nearly all their time."""
    return open_db(":memory:")


_chats = itertools.count()


@settings(max_examples=60, deadline=None)
@given(payloads=st.lists(st.dictionaries(st.text(max_size=10), json_values, max_size=5), min_size=1, max_size=20))
def test_events_round_trip_in_order(memory_db: sqlite3.Connection, payloads: list[dict[str, Any]]) -> None:
    conn = memory_db
    # Each example in a session of its own: what the others stored is in another session's sequence.
    s = sess_db.get_or_create_session(conn, "api", str(next(_chats)), "", now_ms=1)
    assert ev_db.last_seq(conn, s.id) == 0
    rows = [ev_db.EventRow(s.id, i + 1, None, "text_delta", p, 10 + i) for i, p in enumerate(payloads)]
    ev_db.append_events(conn, rows)
    assert ev_db.events_after(conn, s.id, 0) == rows
    assert ev_db.events_after(conn, s.id, len(rows) // 2) == rows[len(rows) // 2 :]
    assert ev_db.last_seq(conn, s.id) == len(rows)
    got = sess_db.get_session(conn, s.id)
    assert got is not None and got.last_seq == len(rows)
    with pytest.raises(sqlite3.IntegrityError):
        ev_db.append_events(conn, rows[:1])


def test_sequence_numbers_continue_above_a_crashed_turns_reservation(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "r.db")
    s = sess_db.get_or_create_session(conn, "api", "1", "", now_ms=1)
    turn_id, history = msg_db.accept_and_begin(conn, s.id, "hi", now_ms=2, reserve_to=1000, history_limit=10)
    assert history == []
    ev_db.append_events(conn, [ev_db.EventRow(s.id, 1, turn_id, "turn_started", {}, 3)])
    # A crash here: clients may have seen numbers up to 1000 that were never stored.
    assert msg_db.seq_floor(conn, s.id) == 1000
    assert msg_db.interrupt_running_turns(conn, now_ms=4) == 1
    # The restart tells the turn's end with the next numbers above the reservation (a resume from anywhere sees it).
    told = ev_db.events_after(conn, s.id, 1)
    assert [(e.seq, e.type, e.data.get("code") or e.data.get("state")) for e in told] == [
        (1001, "error", "INTERRUPTED"),
        (1002, "turn_ended", "interrupted"),
    ]
    assert msg_db.seq_floor(conn, s.id) == 1002
    t2, history = msg_db.accept_and_begin(conn, s.id, "again", now_ms=5, reserve_to=2000, history_limit=10)
    assert [m.content for m in history] == ["hi"]
    ev_db.append_events(conn, [ev_db.EventRow(s.id, 1003, t2, "turn_started", {}, 6)])
    msg_db.finish_turn(conn, t2, "completed", now_ms=7, result="again")
    # The reservation outlives the turn (the session's next turn may show events before its acceptance commits).
    assert msg_db.seq_floor(conn, s.id) == 2000
    # A clean end of the session's life gives it back: the next life continues right after the last stored number.
    msg_db.release_reservation(conn, s.id)
    assert msg_db.seq_floor(conn, s.id) == 1003


def test_session_status_follows_its_turns(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "s.db")

    def status() -> str:
        row = sess_db.get_session(conn, sid)
        assert row is not None
        return row.status

    sid = sess_db.get_or_create_session(conn, "webchat", "1", "", now_ms=1).id
    assert status() == "pending"  # nothing asked yet
    first = msg_db.create_turn(conn, sid, "one", now_ms=2)
    assert status() == "waiting"  # queued, not started
    msg_db.start_turn(conn, first, now_ms=3)
    assert status() == "running"
    second = msg_db.create_turn(conn, sid, "two", now_ms=4)
    assert status() == "running", "a turn queued behind a running one leaves it running"
    msg_db.finish_turn(conn, first, "completed", now_ms=5, result="1", session_status="waiting")
    assert status() == "waiting"
    msg_db.start_turn(conn, second, now_ms=6)
    msg_db.finish_turn(conn, second, "completed", now_ms=7, result="2")
    assert status() == "completed"


def test_events_marked_fed_for_their_session_are_not_fed_again_when_the_cursor_lags(tmp_path: Path) -> None:
    # The dispatcher's exactly-once: a turn commits with `mark_fed`; the global cursor may lag behind it.
    conn = open_db(tmp_path / "fed.db")
    a = sess_db.get_or_create_session(conn, "x", "a", "", now_ms=0).id
    b = sess_db.get_or_create_session(conn, "x", "b", "", now_ms=0).id
    rows = [("c", f"k{i}", b"fp", a if i % 2 == 0 else b, f"t{i}", b"{}", 0) for i in range(6)]
    conn.executemany(
        "INSERT INTO ingress_events (connector, event_key, fingerprint, session_id, text, payload, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    assert [p.text for p in ingress_db.undispatched(conn)] == [f"t{i}" for i in range(6)]
    ingress_db.mark_fed(conn, a, 3)  # session a's turn held events 1 and 3 (ids are 1-based)
    assert [p.text for p in ingress_db.undispatched(conn)] == ["t1", "t3", "t4", "t5"]
    ingress_db.mark_fed(conn, a, 1)  # never moves back
    assert [p.text for p in ingress_db.undispatched(conn)] == ["t1", "t3", "t4", "t5"]
    ingress_db.advance_cursor(conn, 4)
    assert [p.text for p in ingress_db.undispatched(conn)] == ["t4", "t5"]


def test_ingest_resolves_a_batchs_sessions_by_any_candidate_and_creates_by_the_first(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "ing.db")
    known = sess_db.get_or_create_session(conn, "t", "bound", "", now_ms=0).id
    other = sess_db.get_or_create_session(conn, "u", "x", "", now_ms=0).id  # same chat, another transport

    def item(key: str, *chats: str) -> ingress_db.IngressItem:
        spec = ingress_db.SessionSpec(candidates=tuple(("t", c, "") for c in chats))
        return ingress_db.IngressItem(key, key.encode(), key, b"{}", spec)

    batch = [item("1", "new", "bound"), item("2", "x"), item("3", "x"), item("4", "y", "x")]
    out = ingress_db.ingest(conn, "c", batch, now_ms=1)
    assert [o.status for o in out] == ["accepted"] * 4
    assert out[0].session_id == known  # found by its second candidate
    assert out[1].session_id == out[2].session_id == out[3].session_id not in (known, other)  # "x" made once
    assert sess_db.get_or_create_session(conn, "t", "x", "", now_ms=2).id == out[1].session_id
    assert conn.execute("SELECT count(*) FROM sessions WHERE chat_id IN ('new', 'y')").fetchone()[0] == 0


def test_ingest_asks_same_payload_only_when_fingerprints_differ(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "same.db")
    spec = ingress_db.SessionSpec(candidates=(("t", "a", ""),))
    asked: list[tuple[bytes, bytes]] = []

    def same(stored: bytes, new: bytes) -> bool:
        asked.append((stored, new))
        return stored.lower() == new.lower()

    def put(*items: tuple[str, bytes]) -> list[str]:
        batch = [ingress_db.IngressItem(k, p, "x", p, spec) for k, p in items]
        return [o.status for o in ingress_db.ingest(conn, "c", batch, now_ms=1, same_payload=same)]

    assert put(("k", b"ABC"), ("k", b"abc"), ("k", b"abd")) == ["accepted", "duplicate", "rejected"]
    assert asked == [(b"ABC", b"abc"), (b"ABC", b"abd")]  # a copy in the same batch: its payload at hand
    asked.clear()
    assert put(("k", b"ABC"), ("k", b"Abc"), ("k", b"xyz")) == ["duplicate", "duplicate", "rejected"]
    assert asked == [(b"ABC", b"Abc"), (b"ABC", b"xyz")]  # the stored payload, read back
    item = ingress_db.IngressItem("k", b"Abc", "x", b"Abc", spec)
    assert ingress_db.ingest(conn, "c", [item], now_ms=1)[0].status == "rejected"  # without it: fingerprints
