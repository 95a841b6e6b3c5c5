"""The storage actor: group commit, answers only after the commit, op isolation, commit failures."""

from __future__ import annotations

import sqlite3
import threading
from functools import partial
from pathlib import Path

import pytest
import trio

from actors.store import Reader, StorageUnavailableError, Store, StoreActor, StoreMsg
from actors.supervisor import ChildSpec, supervise
from storage import events as ev_db
from storage import sessions as sess_db
from storage.db import open_db, open_reader
from storage.events import EventRow
from tests.conftest import until


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


def _refused(code: int, message: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # what SQLite sets on a real error of this kind
    return exc


@pytest.mark.parametrize(
    ("code", "message"),
    [(sqlite3.SQLITE_IOERR, "disk I/O error"), (sqlite3.SQLITE_FULL, "database or disk is full")],
)
async def test_an_io_error_or_a_full_disk_fails_the_whole_batch_and_commits_nothing(
    tmp_path: Path, code: int, message: str
) -> None:
    conn = open_db(tmp_path / "io.db")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            store, actor = await start_store(nursery, conn)

            def broken(c: sqlite3.Connection) -> None:
                c.execute("INSERT INTO settings (key, value) VALUES ('broken', 'v')")
                raise _refused(code, message)

            outcomes: dict[str, BaseException | int | None] = {}

            async def call(name: str, fn: object, *args: object) -> None:
                try:
                    outcomes[name] = await store.call(fn, *args)  # type: ignore[arg-type]
                except Exception as exc:
                    outcomes[name] = exc

            # Three ops sent together, so the actor drains them into one batch: good writes around the refused one.
            async with trio.open_nursery() as callers:
                callers.start_soon(call, "first", insert, "before")
                callers.start_soon(call, "broken", broken)
                callers.start_soon(call, "last", insert, "after")
            assert all(isinstance(o, StorageUnavailableError) for o in outcomes.values()), outcomes
            assert actor.stats.failing
            # Nothing was committed, so nothing may have been acknowledged.
            assert conn.execute("SELECT count(*) FROM settings").fetchone()[0] == 0
            # A later write commits and clears the failing state; a read alone would not.
            assert await store.call(insert, "recovered") == 1
            assert not actor.stats.failing
            nursery.cancel_scope.cancel()


async def test_a_real_full_database_rolls_back_the_batch_and_recovers(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "full.db")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            store, actor = await start_store(nursery, conn)

            def limit(c: sqlite3.Connection, pages: int | None) -> None:
                n = pages or c.execute("PRAGMA page_count").fetchone()[0]
                c.execute(f"PRAGMA max_page_count = {int(n)}")

            def fill(c: sqlite3.Connection, n: int) -> None:
                c.executemany(
                    "INSERT INTO settings (key, value) VALUES (?, ?)", [(f"k{n}-{i}", "x" * 400) for i in range(50)]
                )

            await store.call(limit, None)
            refused: int | None = None
            for n in range(100):
                try:
                    await store.call(fill, n)
                except StorageUnavailableError:
                    refused = n
                    break
            assert refused is not None, "SQLite's max_page_count never made the database full"
            assert actor.stats.failing
            stored = {r[0] for r in conn.execute("SELECT key FROM settings")}
            assert not any(k.startswith(f"k{refused}-") for k in stored)
            await store.call(limit, 1 << 30)
            await store.call(fill, refused)
            assert not actor.stats.failing
            nursery.cancel_scope.cancel()


async def test_a_request_not_started_by_its_deadline_never_runs_and_a_started_one_is_waited_for(
    tmp_path: Path,
) -> None:
    # A frozen disk, in miniature: the batch in the worker thread hangs. The bug: a caller's timeout answered "not
    # stored" while the request still waited in the mailbox and was stored later (a re-post then said `duplicate`).
    db = tmp_path / "w.db"
    conn = open_db(db)
    gate = threading.Event()

    def stuck(c: sqlite3.Connection) -> int:
        gate.wait(20)
        return insert(c, "stuck")

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            actor = StoreActor(conn)
            spec: ChildSpec[StoreMsg] = ChildSpec("store", actor.run, capacity=64)
            store = Store(await nursery.start(partial(supervise, spec)), timeout=0.3, stats=actor.stats)
            first: list[int] = []

            async def call_stuck() -> None:
                first.append(await store.call(stuck))

            nursery.start_soon(call_stuck)
            await until(lambda: actor.stats.busy_since is not None)
            with pytest.raises(StorageUnavailableError, match="nothing was stored"):
                await store.call(insert, "queued")  # waits in the mailbox past its deadline: withdrawn
            assert "commit for" in (store.degraded() or "")  # stuck longer than the timeout: /health degraded
            with pytest.raises(StorageUnavailableError, match="commit for"):
                await store.call(insert, "refused")  # refused at once while the commit is stuck
            assert first == []  # started: its caller waits for the real outcome, past its own deadline
            gate.set()
            await until(lambda: first)
            assert first == [1] and store.degraded() is None
            assert await store.call(insert, "after") == 2
            nursery.cancel_scope.cancel()
    assert {r[0] for r in sqlite3.connect(db).execute("SELECT key FROM settings")} == {"stuck", "after"}
    conn.close()


async def test_while_writes_fail_a_probe_reopens_the_database_once_the_disk_takes_writes(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    conn = open_db(db)
    attempts: list[bool] = []
    writable = False

    def reopen() -> sqlite3.Connection:
        attempts.append(writable)
        if not writable:
            raise OSError(30, "Read-only file system")
        return open_db(db)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            actor = StoreActor(conn, reopen=reopen, probe_interval=0.05)
            spec: ChildSpec[StoreMsg] = ChildSpec("store", actor.run, capacity=64)
            store = Store(await nursery.start(partial(supervise, spec)), stats=actor.stats)
            # The disk "goes read-only" under the connection: SQLite refuses every write from now on.
            await store.call(lambda c: c.execute("PRAGMA query_only=ON"))
            with pytest.raises(StorageUnavailableError):
                await store.call(insert, "x")
            assert actor.stats.failing and "cannot write" in (store.degraded() or "")
            await until(lambda: len(attempts) >= 2)  # probes go on without any request
            writable = True
            await until(lambda: not actor.stats.failing)
            assert actor.stats.reopened == 1 and actor.conn is not conn and store.degraded() is None
            assert await store.call(insert, "y") == 1
            nursery.cancel_scope.cancel()


async def test_one_row_event_writes_share_one_statement_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "m.db")
    sid = sess_db.get_or_create_session(conn, "t", "1", "", now_ms=0).id
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    outcomes: dict[int, object] = {}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            store, actor = await start_store(nursery, conn)

            async def write(seq: int) -> None:
                row = EventRow(sid, seq, None, "text_delta", {"text": str(seq)}, 0)
                try:
                    outcomes[seq] = await store.call(ev_db.append_events, [row])
                except Exception as exc:
                    outcomes[seq] = exc

            async with trio.open_nursery() as writers:
                for seq in range(1, 33):
                    writers.start_soon(write, seq)
            inserts = sum(s.startswith("INSERT INTO events") for s in statements)
            assert actor.stats.largest_batch > 1 and inserts < 32  # merged: fewer statements than writes
            # A repeated (session, seq) among merged writes: that write alone fails, the others commit.
            async with trio.open_nursery() as writers:
                for seq in (33, 5, 34):
                    writers.start_soon(write, seq)
            nursery.cancel_scope.cancel()
    assert isinstance(outcomes[5], sqlite3.IntegrityError)
    assert all(outcomes[s] is None for s in range(1, 35) if s != 5)
    stored = [r[0] for r in conn.execute("SELECT seq FROM events WHERE session_id = ? ORDER BY seq", (sid,))]
    assert stored == list(range(1, 35))
    assert conn.execute("SELECT last_seq FROM sessions WHERE id = ?", (sid,)).fetchone()[0] == 34
    conn.close()


async def test_closing_the_reader_under_an_abandoned_read_leaves_the_connection_to_that_read(tmp_path: Path) -> None:
    # A read abandoned by its caller (the gateway stopping) still runs in its thread; closing the connection under
    # it would free what SQLite reads (a segfault in a full run). The read finishes on an open connection, and the
    # connection is closed once it returns.
    db = tmp_path / "gateway.db"
    open_db(db).close()
    reader = Reader(partial(open_reader, db))
    conn = reader.conn
    started, release = threading.Event(), threading.Event()
    seen: list[object] = []

    def slow_read(c: sqlite3.Connection) -> int:
        started.set()
        release.wait(30)
        try:
            seen.append(int(c.execute("SELECT count(*) FROM settings").fetchone()[0]))
        except sqlite3.Error as exc:
            seen.append(exc)
        return 0

    with trio.fail_after(30):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.read, slow_read, 30.0)
                await trio.to_thread.run_sync(started.wait, 30)
                scope.cancel()  # the caller goes; the thread stays
        reader.close()
        conn.execute("SELECT 1")  # still open: the read owns it
        release.set()
        await until(lambda: seen != [])
        assert isinstance(seen[0], int), seen
        await until(lambda: reader._limiter.borrowed_tokens == 0)
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")  # closed by the read's thread once it returned


async def test_closing_an_idle_reader_closes_its_connection_at_once(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    open_db(db).close()
    reader = Reader(partial(open_reader, db))
    assert await reader.read(lambda c: int(c.execute("SELECT 1").fetchone()[0]), 5.0) == 1
    reader.close()
    with pytest.raises(sqlite3.ProgrammingError):
        reader.conn.execute("SELECT 1")


def insert_and_count(conn: sqlite3.Connection, key: str) -> int:
    insert(conn, key)
    return int(conn.total_changes)


async def test_a_mark_holds_until_anything_is_written_and_none_is_given_when_its_batch_wrote_after_it(
    tmp_path: Path,
) -> None:
    conn = open_db(tmp_path / "m.db")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            actor = StoreActor(conn)
            spec: ChildSpec[StoreMsg] = ChildSpec("store", actor.run, capacity=64)
            store = Store(await nursery.start(partial(supervise, spec)), stats=actor.stats)
            mark = store.mark(await store.call(insert_and_count, "a"))
            assert mark is not None and store.unchanged(mark)
            await store.call(lambda c: c.execute("SELECT count(*) FROM settings").fetchone())
            assert store.unchanged(mark)  # a read writes nothing
            await store.call(insert, "b")
            assert not store.unchanged(mark)

            # Two calls in one batch: the first one's mark is refused, the second's write came after it.
            marks: list[tuple[int, int] | None] = []

            async def marked(key: str) -> None:
                marks.append(store.mark(await store.call(insert_and_count, key)))

            async with trio.open_nursery() as both:
                both.start_soon(marked, "c")
                both.start_soon(marked, "d")
            assert actor.stats.largest_batch >= 2
            assert sorted(m is None for m in marks) == [False, True]
            assert Store(store.address).mark(conn.total_changes) is None  # a handle without the actor's stats
            nursery.cancel_scope.cancel()
    conn.close()
