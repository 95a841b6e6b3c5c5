"""Token usage in storage: per-turn rows, sums per day (UTC), model, session and user, and the daily caps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import usage as usage_db
from storage import users as users_db
from storage.db import open_db
from storage.usage import ALL, DAY_MS, CapPolicy, UsageCapReachedError

DAY1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY2 = DAY1 + DAY_MS


def _turn(
    conn: sqlite3.Connection,
    turn_id: str,
    *,
    at: int,
    owner: str | None = "u1",
    session: str = "s1",
    model: str = "m1",
    tokens: tuple[int, int] = (10, 5),
    estimated: bool = False,
) -> None:
    usage_db.record(
        conn,
        turn_id,
        session,
        owner=owner,
        provider="openai",
        model=model,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        estimated=estimated,
        now_ms=at,
    )


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    c = open_db(tmp_path / "u.db")
    _turn(c, "t1", at=DAY1 + 1000, tokens=(100, 20))
    _turn(c, "t2", at=DAY1 + DAY_MS - 1, model="m2", tokens=(7, 3), estimated=True)  # the day's last millisecond
    _turn(c, "t3", at=DAY2, session="s2", tokens=(1, 1))  # the next day's first
    _turn(c, "t4", at=DAY2 + 5, owner="u2", model="m2", tokens=(50, 50))
    _turn(c, "t5", at=DAY2 + 6, owner=None, session="s9", tokens=(2, 2))
    return c


def test_sums_per_utc_day_split_at_midnight(conn: sqlite3.Connection) -> None:
    rows, total = usage_db.summarize(conn, "day", owner="u1")
    assert [(r.key, r.turns, r.input_tokens, r.output_tokens, r.estimated_turns) for r in rows] == [
        ("2026-01-01", 2, 107, 23, 1),
        ("2026-01-02", 1, 1, 1, 0),
    ]
    assert (total.key, total.turns, total.total_tokens) == (None, 3, 132)


def test_sums_per_model_session_and_user_largest_first(conn: sqlite3.Connection) -> None:
    by_model, _ = usage_db.summarize(conn, "model")
    assert [(r.key, r.total_tokens) for r in by_model] == [("m1", 126), ("m2", 110)]
    by_session, _ = usage_db.summarize(conn, "session", owner="u1")
    assert [(r.key, r.total_tokens) for r in by_session] == [("s1", 130), ("s2", 2)]
    by_user, total = usage_db.summarize(conn, "user", owner=ALL)
    assert [(r.key, r.total_tokens) for r in by_user] == [("u1", 132), ("u2", 100), (None, 4)]
    assert total.total_tokens == 236


def test_owner_none_means_the_turns_of_no_account(conn: sqlite3.Connection) -> None:
    rows, total = usage_db.summarize(conn, "session", owner=None)
    assert [r.key for r in rows] == ["s9"] and total.total_tokens == 4


def test_range_is_half_open(conn: sqlite3.Connection) -> None:
    rows, total = usage_db.summarize(conn, "day", from_ms=DAY2, to_ms=DAY2 + DAY_MS)
    assert [r.key for r in rows] == ["2026-01-02"] and total.turns == 3
    _, before = usage_db.summarize(conn, "day", to_ms=DAY2)
    assert before.turns == 2
    _, nothing = usage_db.summarize(conn, "model", owner="nobody")
    assert (nothing.turns, nothing.total_tokens) == (0, 0)


def test_a_turn_is_recorded_once(conn: sqlite3.Connection) -> None:
    _turn(conn, "t1", at=DAY2, tokens=(999, 999))
    got = usage_db.of_turn(conn, "t1")
    assert got is not None and (got.input_tokens, got.output_tokens, got.created_at) == (100, 20, DAY1 + 1000)
    t2 = usage_db.of_turn(conn, "t2")
    assert t2 is not None and t2.estimated and usage_db.of_turn(conn, "missing") is None


def test_used_today_counts_the_utc_day_once_per_turn(conn: sqlite3.Connection) -> None:
    assert usage_db.used_today(conn, "u1", now_ms=DAY1 + 5000) == 130  # t2, at 23:59:59.999, is still day one
    assert usage_db.used_today(conn, "u1", now_ms=DAY2 + 10) == 2
    assert usage_db.used_today(conn, None, now_ms=DAY2 + 10) == 4
    assert usage_db.used_today(conn, "u1", now_ms=DAY2 + DAY_MS) == 0
    _turn(conn, "t3", at=DAY2 + 20, session="s2", tokens=(500, 500))  # recorded again: counted once
    assert usage_db.used_today(conn, "u1", now_ms=DAY2 + 30) == 2
    # The day's counter agrees with the rows it sums.
    rows, _ = usage_db.summarize(conn, "day", owner="u1")
    assert [r.total_tokens for r in rows] == [130, 2]


def test_caps_own_then_default_and_refusal(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "c.db")
    user = users_db.create_user(conn, username="ann", email=None, password_hash="x", now_ms=1)
    _turn(conn, "t1", at=DAY1, owner=user.id, tokens=(60, 40))
    now = DAY1 + 10
    usage_db.check_cap(conn, user.id, CapPolicy(), now_ms=now)  # no cap anywhere: never refused
    usage_db.check_cap(conn, user.id, CapPolicy(default=101), now_ms=now)
    with pytest.raises(UsageCapReachedError) as refused:
        usage_db.check_cap(conn, user.id, CapPolicy(default=100), now_ms=now)  # reached counts, not only passed
    assert (refused.value.used, refused.value.cap, refused.value.resets_at_ms) == (100, 100, DAY2)
    usage_db.set_cap(conn, user.id, 500, now_ms=now)  # its own cap wins over the default
    assert usage_db.get_cap(conn, user.id) == 500 and usage_db.all_caps(conn) == {user.id: 500}
    usage_db.check_cap(conn, user.id, CapPolicy(default=100), now_ms=now)
    usage_db.set_cap(conn, user.id, 50, now_ms=now)
    with pytest.raises(UsageCapReachedError):
        usage_db.check_cap(conn, user.id, CapPolicy(), now_ms=now)
    usage_db.check_cap(conn, user.id, CapPolicy(), now_ms=DAY2)  # a new UTC day
    usage_db.set_cap(conn, user.id, None, now_ms=now)
    assert usage_db.get_cap(conn, user.id) is None
    # Turns of no account have a cap of their own, never an account's default.
    _turn(conn, "t2", at=DAY1, owner=None, tokens=(5, 5))
    usage_db.check_cap(conn, None, CapPolicy(default=1), now_ms=now)
    with pytest.raises(UsageCapReachedError):
        usage_db.check_cap(conn, None, CapPolicy(unowned=10), now_ms=now)


def test_a_deleted_account_takes_its_cap_but_not_its_usage(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "d.db")
    user = users_db.create_user(conn, username="bob", email=None, password_hash="x", now_ms=1)
    usage_db.set_cap(conn, user.id, 10, now_ms=1)
    _turn(conn, "t1", at=DAY1, owner=user.id)
    assert users_db.delete_user(conn, user.id)
    assert usage_db.all_caps(conn) == {}
    assert usage_db.summarize(conn, "user")[1].turns == 1


def test_sessions_named_gives_only_the_sessions_that_still_exist(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO sessions (id, transport, chat_id, topic_id, title, created_at) VALUES "
        "('s1', 'webchat', 'c1', '', 'Mine', 1), ('s2', 'telegram', '42', 't7', '', 1)"
    )
    named = usage_db.sessions_named(conn, ["s1", "s2", "s9"])
    assert named == {"s1": ("Mine", "webchat", "c1", ""), "s2": ("", "telegram", "42", "t7")}
    assert usage_db.sessions_named(conn, []) == {}
