"""The storage actor: sole owner of the SQLite connection, committing each mailbox drain in one transaction."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

import trio

from actors.base import Address, AskTimeoutError, Reply, TemporaryFailure

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("gateway.store")


class StorageUnavailableError(TemporaryFailure):
    """The database could not commit (disk full, I/O error, locked); nothing in the batch was stored."""


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """One unit of work: `fn(conn)` runs inside the batch's transaction, under its own savepoint."""

    fn: Callable[[sqlite3.Connection], T]
    reply: Reply[T]


StoreMsg = Op[Any]


@dataclass(slots=True)
class StoreStats:
    batches: int = 0
    ops: int = 0
    largest_batch: int = 0
    failed_commits: int = 0
    last_error: str | None = field(default=None)
    # True from a batch that storage refused (disk full, I/O error) until a batch that writes commits again.
    failing: bool = False


# Result codes (the low byte of an extended code) that mean the database refused work, not that the op was wrong.
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
}


def unavailable(exc: BaseException) -> StorageUnavailableError | None:
    """The StorageUnavailableError an SQLite error stands for (disk full, I/O error...), else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _UNAVAILABLE:
        return StorageUnavailableError(f"the database cannot write: {exc}")
    return None


def _commit(conn: sqlite3.Connection) -> StorageUnavailableError | None:
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        return StorageUnavailableError(f"the database could not commit: {exc}")
    return None


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled the transaction back itself (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM do).
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _begin(conn: sqlite3.Connection) -> StorageUnavailableError | None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return StorageUnavailableError(f"cannot start a transaction: {exc}")
    return None


def _run_batch(conn: sqlite3.Connection, batch: list[Op[Any]]) -> list[tuple[bool, Any]]:
    """Run every op in one transaction; an op's own error rolls back only that op.

    Optimistic: the batch first runs without savepoints (two statements fewer per op); only when an op
    fails is the transaction rolled back and the batch run again with a savepoint around each op.
    When the database itself refuses (disk full, I/O error), every op of the batch fails with
    StorageUnavailableError: nothing of it is committed, so nothing of it may be acknowledged.
    """
    err = _begin(conn)
    if err is not None:
        return [(False, err)] * len(batch)
    results: list[tuple[bool, Any]] = []
    for op in batch:
        try:
            results.append((True, op.fn(conn)))
        except Exception as exc:
            _rollback(conn)
            refused = unavailable(exc)
            if refused is not None:
                return [(False, refused)] * len(batch)
            return _run_batch_isolated(conn, batch)
    err = _commit(conn)
    return [(False, err)] * len(batch) if err is not None else results


def _run_batch_isolated(conn: sqlite3.Connection, batch: list[Op[Any]]) -> list[tuple[bool, Any]]:
    err = _begin(conn)
    if err is not None:
        return [(False, err)] * len(batch)
    results: list[tuple[bool, Any]] = []
    for op in batch:
        try:
            conn.execute("SAVEPOINT op")
            value = op.fn(conn)
        except Exception as exc:
            refused = unavailable(exc)
            if refused is not None or not conn.in_transaction:
                # The database refused, or rolled the whole transaction back: the earlier ops are gone too.
                _rollback(conn)
                return [(False, refused or StorageUnavailableError(f"the transaction was lost: {exc}"))] * len(batch)
            try:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            except sqlite3.Error:
                pass
            results.append((False, exc))
        else:
            conn.execute("RELEASE op")
            results.append((True, value))
    err = _commit(conn)
    return [(False, err)] * len(batch) if err is not None else results


class StoreActor:
    """Drains its mailbox into batches and runs each in a single worker thread (limiter of 1)."""

    def __init__(self, conn: sqlite3.Connection, *, max_batch: int = 512, inline: bool = False) -> None:
        self.conn = conn
        self.max_batch = max_batch
        # inline=True runs batches on the trio thread: only for actor tests under the autojump clock,
        # where a worker thread would let virtual time jump while SQLite is busy.
        self.inline = inline
        self.stats = StoreStats()
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, inbox: trio.MemoryReceiveChannel[StoreMsg]) -> None:
        """Serve until cancelled. A batch already handed to the thread always finishes and is answered."""
        while True:
            first = await inbox.receive()
            batch: list[Op[Any]] = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(inbox.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            # Shielded: once SQLite has the batch, its callers must learn the outcome even at shutdown.
            changes = self.conn.total_changes
            if self.inline:
                results = _run_batch(self.conn, batch)
                await trio.lowlevel.checkpoint()
            else:
                with trio.CancelScope(shield=True):
                    results = await trio.to_thread.run_sync(_run_batch, self.conn, batch, limiter=self._limiter)
            refused = bool(results) and isinstance(results[0][1], StorageUnavailableError)
            if refused:
                self.stats.failing = True
            elif self.conn.total_changes != changes:
                self.stats.failing = False  # a write committed: storage takes writes again
            self.stats.batches += 1
            self.stats.ops += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for op, (ok, value) in zip(batch, results, strict=True):
                if ok:
                    op.reply.set(value)
                else:
                    if isinstance(value, StorageUnavailableError):
                        self.stats.failed_commits += 1
                        self.stats.last_error = str(value)
                    op.reply.fail(value)
            if results and isinstance(results[0][1], StorageUnavailableError):
                log.error("storage commit failed: %s", self.stats.last_error)


class Store:
    """The handle other actors use: `await store.call(fn, *args)` answers after the commit that holds it."""

    def __init__(self, address: Address[StoreMsg], *, timeout: float = 30.0, stats: StoreStats | None = None) -> None:
        self.address = address
        self.timeout = timeout
        self.stats = stats  # the actor's live counters, for health checks (None when not shared)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args, **kwargs)` in the storage thread; return its value once committed.

        Raises whatever `fn` raised (its writes rolled back), StorageUnavailableError when the commit failed,
        and AskTimeoutError after `timeout` seconds. Cancellation abandons the wait, not the write.
        """
        reply: Reply[T] = Reply()
        op = Op(lambda conn: fn(conn, *args, **kwargs), reply)
        with trio.move_on_after(self.timeout):
            await self.address.send(op)
            return await reply.wait()
        raise AskTimeoutError(f"storage did not answer within {self.timeout:g} s")
