"""The storage actor: group commit, answers only after the commit, op isolation, commit failures."""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

import pytest
import trio

from actors.store import StorageUnavailableError, Store, StoreActor, StoreMsg
from actors.supervisor import ChildSpec, supervise
from storage.db import open_db


def insert(conn: sqlite3.Connection, key: str) -> int:
    conn.execute("INSERT INTO settings (key, value) VALUES (?, 'v')", (key,))
    return int(conn.execute("SELECT count(*) FROM settings").fetchone()[0])


async def start_store(nursery: trio.Nursery, conn: sqlite3.Connection) -> tuple[Store, StoreActor]:
    actor = StoreActor(conn)
    spec: ChildSpec[StoreMsg] = ChildSpec("store", actor.run, capacity=4096)
    return Store(await nursery.start(partial(supervise, spec))), actor


async def test_group_commit_answers_after_commit_with_100_concurrent_writers(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    conn = open_db(db)
    observer = sqlite3.connect(db)  # a second connection only sees committed rows
    missing: list[str] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store, actor = await start_store(nursery, conn)

            async def writer(i: int) -> None:
                for j in range(5):
                    key = f"w{i}-{j}"
                    await store.call(insert, key)
                    row = observer.execute("SELECT 1 FROM settings WHERE key = ?", (key,)).fetchone()
                    if row is None:
                        missing.append(key)

            async with trio.open_nursery() as writers:
                for i in range(100):
                    writers.start_soon(writer, i)
            nursery.cancel_scope.cancel()
    assert missing == [], "a write was answered before its commit was visible"
    assert observer.execute("SELECT count(*) FROM settings").fetchone()[0] == 500
    assert actor.stats.ops == 500
    # Concurrent writers share commits: far fewer transactions than writes.
    assert actor.stats.batches < 500
    assert actor.stats.largest_batch > 1
    conn.close()


async def test_a_failing_op_rolls_back_alone(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "i.db")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            store, _ = await start_store(nursery, conn)

            def half_then_fail(c: sqlite3.Connection) -> None:
                c.execute("INSERT INTO settings (key, value) VALUES ('half', 'x')")
                raise ValueError("bad input")

            results: dict[str, object] = {}

            async def run(name: str, fn: object) -> None:
                try:
                    results[name] = await store.call(fn)  # type: ignore[arg-type]
                except Exception as exc:
                    results[name] = exc

            async with trio.open_nursery() as n:
                n.start_soon(run, "ok1", partial(insert, key="a"))
                n.start_soon(run, "bad", half_then_fail)
                n.start_soon(run, "ok2", partial(insert, key="b"))
            nursery.cancel_scope.cancel()
    assert isinstance(results["bad"], ValueError)
    keys = {r[0] for r in conn.execute("SELECT key FROM settings")}
    assert keys == {"a", "b"}


async def test_a_failed_commit_fails_every_op_in_the_batch(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "c.db")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            store, actor = await start_store(nursery, conn)

            def orphan(c: sqlite3.Connection) -> None:
                # A deferred foreign-key violation is only detected at COMMIT: a real commit failure.
                c.execute("PRAGMA defer_foreign_keys = ON")
                c.execute(
                    "INSERT INTO turns (id, session_id, state, prompt, created_at) "
                    "VALUES ('t', 'nope', 'queued', '', 0)"
                )

            with pytest.raises(StorageUnavailableError):
                await store.call(orphan)
            assert actor.stats.failed_commits == 1
            # The store keeps serving afterwards.
            assert await store.call(insert, "after") == 1
            nursery.cancel_scope.cancel()
    assert conn.execute("SELECT count(*) FROM turns").fetchone()[0] == 0
