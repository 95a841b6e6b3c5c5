"""The storage actor: sole owner of the SQLite connection, committing each mailbox drain in one transaction."""

from __future__ import annotations

import errno
import logging
import math
import sqlite3
from collections import deque
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import msgspec
import trio

from actors.base import Address, BusyError, DeadActorError, Reply, TemporaryFailure
from storage import events as ev_db

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("gateway.store")


class StorageUnavailableError(TemporaryFailure):
    """Storage refused the request (disk full, read-only, I/O error, frozen): nothing of it was stored."""


class Op(msgspec.Struct, Generic[T], frozen=True):
    """One unit of work: `fn(conn, *args, **kwargs)` runs inside the batch's transaction."""

    fn: Callable[..., T]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    reply: Reply[T]

    def __call__(self, conn: sqlite3.Connection) -> T:
        return self.fn(conn, *self.args, **self.kwargs)


StoreMsg = Op[Any]


class Pending:
    """Requests sent to the actor and not yet started, oldest first, each with the time its caller gives up.

    One timer task (`StoreActor._expire`) withdraws those not started in time, so that a call needs no cancel
    scope and deadline of its own: those were a third of the event loop's work per one-row write (issue 17)."""

    __slots__ = ("entries", "wake")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, float, Reply[Any]]] = deque()  # (deadline, timeout, reply)
        self.wake = trio.Event()  # set when the first entry comes into an empty queue

    def add(self, timeout: float, reply: Reply[Any]) -> None:
        if not self.entries:
            self.wake.set()
        self.entries.append((trio.current_time() + timeout, timeout, reply))

    def claim(self, reply: Reply[Any]) -> bool:
        """The actor starts `reply`'s request (False: its caller already gave up). Requests are started in the
        mailbox's order, which is the order they were added in, so a started one is the oldest left."""
        entries = self.entries
        if entries and entries[0][2] is reply:
            entries.popleft()
        return reply.claim()


class StoreStats(msgspec.Struct):
    batches: int = 0
    ops: int = 0
    largest_batch: int = 0
    failed_commits: int = 0
    last_error: str | None = None
    # True from a batch that storage refused (disk full, I/O error) until a batch that writes commits again, or
    # a probe finds the disk writable again.
    failing: bool = False
    # trio time at which the batch now in the worker thread was handed over (None: the thread is idle).
    busy_since: float | None = None
    reopened: int = 0  # connections replaced after the disk came back
    # The writer connection's `total_changes` after the last batch: it moves with every row written (even rolled
    # back), so an unchanged value with an unchanged `reopened` means nothing was written in between.
    changes: int = 0
    pending: Pending = msgspec.field(default_factory=Pending)  # shared with the `Store` handle (its deadlines)

    def stalled_for(self, now: float) -> float:
        """Seconds the current commit has been running (0 when none is)."""
        return 0.0 if self.busy_since is None else now - self.busy_since

    def degraded(self, now: float, stall_after: float) -> str | None:
        """Why storage cannot take writes now (for `/health`), or None when it can."""
        stalled = self.stalled_for(now)
        if stalled >= stall_after:
            return (
                f"storage has not finished a commit for {stalled:.0f} s (the disk is frozen or very slow); "
                "writes are refused until it does"
            )
        if self.failing:
            return f"storage cannot write: {self.last_error}; writes resume by themselves once the disk takes them"
        return None


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


# errno values that mean the disk refused a write (full, read-only, failing), not that the request was wrong.
_DISK_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


def disk_refused(exc: BaseException) -> StorageUnavailableError | None:
    """The StorageUnavailableError a file write's OSError stands for (disk full, read-only, I/O error), else None."""
    if isinstance(exc, OSError) and exc.errno in _DISK_REFUSED:
        return StorageUnavailableError(f"the disk refused the write: {exc.strerror}")
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


# Writes whose calls may be merged: `fn(conn, a)` then `fn(conn, b)` does what one `fn(conn, [*a, *b])` does, and
# returns None. Merged, many one-row writes from many callers cost one statement per commit instead of one each
# (each statement releases and retakes the GIL in this thread).
COMBINABLE: frozenset[Callable[..., None]] = frozenset({ev_db.append_events})


def _runs(batch: list[Op[Any]]) -> list[tuple[int, int]]:
    """The batch cut into [start, end) runs: consecutive combinable ops of one function together, others alone."""
    runs: list[tuple[int, int]] = []
    i, n = 0, len(batch)
    while i < n:
        fn = batch[i].fn
        j = i + 1
        if fn in COMBINABLE and len(batch[i].args) == 1 and not batch[i].kwargs:
            while j < n and batch[j].fn is fn and len(batch[j].args) == 1 and not batch[j].kwargs:
                j += 1
        runs.append((i, j))
        i = j
    return runs


def _run_batch(conn: sqlite3.Connection, batch: list[Op[Any]]) -> list[tuple[bool, Any]]:
    """Run every op in one transaction; an op's own error rolls back only that op.

    Optimistic: the batch first runs without savepoints (two statements fewer per op), consecutive combinable
    ops merged into one call; only when a call fails is the transaction rolled back and the batch run again
    op by op with a savepoint around each. When the database itself refuses (disk full, I/O error), every op
    of the batch fails with StorageUnavailableError: nothing of it is committed, so nothing of it may be
    acknowledged.
    """
    err = _begin(conn)
    if err is not None:
        return [(False, err)] * len(batch)
    results: list[tuple[bool, Any]] = []
    for start, end in _runs(batch):
        try:
            if end - start == 1:
                results.append((True, batch[start](conn)))
            else:
                batch[start].fn(conn, [row for op in batch[start:end] for row in op.args[0]])
                results += [(True, None)] * (end - start)
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
            value = op(conn)
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
    """Drains its mailbox into batches and runs each in a single worker thread (limiter of 1).

    While storage refuses writes (`stats.failing`), every `probe_interval` seconds it asks `reopen()` for a fresh
    connection that has proved the disk takes writes; when one comes, it replaces the old connection (a disk
    remounted writable after going read-only needs new file handles) and writes resume without a restart.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        max_batch: int = 512,
        inline: bool = False,
        reopen: Callable[[], sqlite3.Connection] | None = None,
        probe_interval: float = 5.0,
        reader: Reader | None = None,
    ) -> None:
        self.conn = conn
        self.max_batch = max_batch
        # inline=True runs batches on the trio thread: only for actor tests under the autojump clock,
        # where a worker thread would let virtual time jump while SQLite is busy.
        self.inline = inline
        self.reopen = reopen
        self.probe_interval = probe_interval
        self.reader = reader
        self.stats = StoreStats()
        self._limiter = trio.CapacityLimiter(1)
        self._probed_at = -math.inf

    async def run(self, inbox: trio.MemoryReceiveChannel[StoreMsg]) -> None:
        """Serve until cancelled. A batch already handed to the thread always finishes and is answered."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire)
            await self._serve(inbox)

    async def _expire(self) -> None:
        """Withdraw each request its caller's deadline passed before the actor started it: it never runs, and its
        caller learns that nothing was stored (even while the actor waits on a frozen disk)."""
        pending = self.stats.pending
        while True:
            if not pending.entries:
                pending.wake = trio.Event()
                await pending.wake.wait()
                continue
            deadline, timeout, reply = pending.entries[0]
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
                continue  # the actor may have started it meanwhile
            pending.entries.popleft()
            if reply.withdraw():
                reply.fail(_not_started(timeout))

    async def _serve(self, inbox: trio.MemoryReceiveChannel[StoreMsg]) -> None:
        pending = self.stats.pending
        while True:
            first: Op[Any] | None = None
            if self.stats.failing and self.reopen is not None:
                # Wake up to probe even when nothing is asked, so health comes back without traffic.
                wait = max(0.0, self._probed_at + self.probe_interval - trio.current_time())
                with trio.move_on_after(wait):
                    first = await inbox.receive()
                if trio.current_time() >= self._probed_at + self.probe_interval:
                    await self._probe()
            else:
                first = await inbox.receive()
            if first is None:
                continue
            batch: list[Op[Any]] = [first] if pending.claim(first.reply) else []
            while len(batch) < self.max_batch:
                try:
                    op = inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if pending.claim(op.reply):  # else its caller's deadline passed first: it never runs
                    batch.append(op)
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[Op[Any]]) -> None:
        changes = self.conn.total_changes
        try:
            if self.inline:
                results = _run_batch(self.conn, batch)
                await trio.lowlevel.checkpoint()
            else:
                self.stats.busy_since = trio.current_time()
                # Shielded: once SQLite has the batch, its callers must learn the outcome even at shutdown.
                with trio.CancelScope(shield=True):
                    results = await trio.to_thread.run_sync(_run_batch, self.conn, batch, limiter=self._limiter)
        except BaseException as exc:
            # Never leave a claimed request unanswered: its caller waits for the outcome however long it takes.
            for op in batch:
                op.reply.fail(StorageUnavailableError(f"the storage actor failed: {exc!r}"))
            raise
        finally:
            self.stats.busy_since = None
        refused = bool(results) and isinstance(results[0][1], StorageUnavailableError)
        if refused:
            if not self.stats.failing:
                self._probed_at = trio.current_time()  # the first probe one interval after the first refusal
            self.stats.failing = True
        elif self.conn.total_changes != changes:
            self.stats.failing = False  # a write committed: storage takes writes again
        self.stats.changes = self.conn.total_changes
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
        if refused:
            log.error("storage commit failed: %s", self.stats.last_error)

    async def _probe(self) -> None:
        assert self.reopen is not None
        self._probed_at = trio.current_time()
        reopen = self.reopen
        try:
            with trio.CancelScope(shield=True):
                conn = await trio.to_thread.run_sync(reopen, limiter=self._limiter)
        except Exception as exc:
            log.info("storage still refuses writes: %s", _short(exc))
            return
        old, self.conn = self.conn, conn
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close_quietly, old, limiter=self._limiter)
        if self.reader is not None:
            await self.reader.reopen()
        self.stats.failing = False
        self.stats.reopened += 1
        log.warning("storage takes writes again: the database was reopened")


def _not_started(timeout: float) -> StorageUnavailableError:
    return StorageUnavailableError(
        f"storage did not start this request within {timeout:g} s (the disk may be frozen or very slow); "
        "nothing was stored"
    )


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass  # a connection to a file system gone read-only cannot checkpoint on its way out; nothing is lost


class Reader:
    """A second connection, for reads only, in its own worker thread: reads go on while the writer's commit is
    stuck on a frozen disk (WAL lets a reader see the last commit meanwhile)."""

    def __init__(self, open_conn: Callable[[], sqlite3.Connection]) -> None:
        self._open = open_conn
        self.conn = open_conn()
        self._limiter = trio.CapacityLimiter(1)
        self.stuck = False  # the last read timed out (its thread may still hang in the kernel)
        self.reads = 0  # reads asked for, over the gateway's life
        self._closing = False

    async def read(self, fn: Callable[[sqlite3.Connection], T], timeout: float) -> T:
        """Run `fn(conn)` (which must not write) in the reader thread; StorageUnavailableError after `timeout`."""
        conn = self.conn
        self.reads += 1

        def run(conn: sqlite3.Connection) -> T:
            try:
                return fn(conn)
            finally:
                if self._closing:  # closed meanwhile (the gateway stopped): the last user closes it
                    _close_quietly(conn)

        with trio.move_on_after(timeout):
            # Abandoned on timeout or cancel: a read stuck in the kernel must not hold its caller; the next reads
            # queue behind it on the limiter and time out the same way until the disk answers.
            value = await trio.to_thread.run_sync(run, conn, limiter=self._limiter, abandon_on_cancel=True)
            self.stuck = False
            return value
        self.stuck = True
        raise StorageUnavailableError(f"storage did not answer a read within {timeout:g} s (the disk may be frozen)")

    def close(self) -> None:
        """Close the connection now if no read uses it; else the abandoned read's thread closes it when its query
        returns. Closing it under a running query frees what SQLite is still reading: the process segfaults."""
        self._closing = True
        if self._limiter.borrowed_tokens == 0:
            self.conn.close()

    async def reopen(self) -> None:
        """Take a fresh connection (the writer's was replaced); the old one closes once no read uses it."""
        try:
            self.conn = await trio.to_thread.run_sync(self._open, limiter=self._limiter, abandon_on_cancel=True)
        except Exception as exc:
            log.warning("cannot reopen the read connection: %s", _short(exc))


class Store:
    """The handle other actors use: `await store.call(fn, *args)` answers after the commit that holds it."""

    def __init__(
        self,
        address: Address[StoreMsg],
        *,
        timeout: float = 30.0,
        stats: StoreStats | None = None,
        reader: Reader | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.stats = stats  # the actor's live counters, for health checks (None when not shared)
        self.reader = reader

    def mark(self, changes: int) -> tuple[int, int] | None:
        """Called as soon as a `call` returns whose `fn` ended with the writer's `total_changes` at `changes`: a mark
        that `unchanged` holds to while this gateway writes nothing more, or None when it already has (later in the
        same batch), or when this handle has no stats."""
        stats = self.stats
        if stats is None or stats.changes != changes:
            return None
        return stats.reopened, changes

    def unchanged(self, mark: tuple[int, int]) -> bool:
        """Whether this gateway has written nothing since `mark` (writes from other processes are not seen)."""
        stats = self.stats
        return stats is not None and (stats.reopened, stats.changes) == mark

    def degraded(self) -> str | None:
        """Why storage cannot take writes now (frozen, read-only, full, I/O errors), or None when it can."""
        return self.stats.degraded(trio.current_time(), self.timeout) if self.stats is not None else None

    async def call(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(conn, *args, **kwargs)` in the storage thread; return its value once committed.

        Raises whatever `fn` raised (its writes rolled back), and StorageUnavailableError when the commit failed
        or when the actor has not started the request within `timeout` seconds: the request is then withdrawn
        and never runs, so that error always means "not stored". Once the actor has started it, the call waits
        for the real outcome however long the disk takes. Refused at once while a commit has been stuck for
        `timeout` (a frozen disk). Cancellation abandons the wait, not the write.
        """
        if self.stats is not None and self.stats.stalled_for(trio.current_time()) >= self.timeout:
            raise StorageUnavailableError(self.degraded() or "storage is stalled")
        reply: Reply[T] = Reply()
        op = Op(fn, args, kwargs, reply)
        if self.stats is not None:
            # Room in the mailbox (the usual case): enqueued without a checkpoint of its own and without a cancel
            # scope, the actor's timer task keeping the deadline; waiting for the reply is the call's checkpoint.
            try:
                self.address.send_nowait(op)
            except BusyError:
                pass
            except DeadActorError as exc:
                raise StorageUnavailableError(f"the storage actor has stopped: {exc}") from None
            else:
                self.stats.pending.add(self.timeout, reply)
                return await reply.wait()
        with trio.move_on_after(self.timeout):
            try:
                await self.address.send(op)
            except DeadActorError as exc:
                raise StorageUnavailableError(f"the storage actor has stopped: {exc}") from None
            return await reply.wait()
        if not reply.withdraw():
            return await reply.wait()
        raise _not_started(self.timeout)

    async def read(self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Like `call` for a read-only `fn`: on the reader connection when there is one, so reads keep working
        while a write is stuck on the disk."""
        if self.reader is None:
            return await self.call(fn, *args, **kwargs)
        stats = self.stats
        if self.reader.stuck and stats is not None and stats.stalled_for(trio.current_time()) >= self.timeout:
            # The last read hung and the disk still stalls (frozen): say so at once rather than after another
            # timeout. A read-only or full disk reads fine: only a stall counts here.
            raise StorageUnavailableError(f"storage cannot read right now: {self.degraded()}")
        return await self.reader.read(lambda conn: fn(conn, *args, **kwargs), self.timeout)
