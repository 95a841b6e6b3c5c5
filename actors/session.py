"""The session actor: one turn at a time, a queue behind it, events persisted and fanned out to subscribers."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import msgspec
import trio
import trio.lowlevel

from actors import events as evs
from actors.base import ActorError, Address, BusyError, DeadActorError, Reply, Stop
from actors.choice import NO_PIN, Choose, Pin
from actors.messages import (
    Abort,
    Idle,
    Resolve,
    Retire,
    RouterMsg,
    SessionKey,
    SessionMsg,
    Sink,
    Submit,
    Subscribe,
    Subscription,
    TurnAccepted,
    Unsubscribe,
)
from actors.providers.base import (
    FinalText,
    HistoryMessage,
    ProviderTurn,
    SystemStatus,
    TextDelta,
    ToolActivity,
    TurnRequest,
    Usage,
    estimate_usage,
)
from actors.store import StorageUnavailableError, Store
from storage import events as ev_db
from storage import messages as msg_db
from storage import sessions as sess_db
from storage import usage as usage_db
from storage.clock import now_ms
from storage.events import EventRow
from storage.ids import new_id

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger("gateway.session")


class SessionConfig(msgspec.Struct, frozen=True):
    idle_timeout: float = 300.0
    # Idle with subscribers listening (an open /ws connection): parked this much sooner. Its actor exits and the
    # router keeps only the subscribers and the numbering (a `Parked`); the next request wakes it without a store
    # round trip, so a short wait costs a turn nothing and saves a task, a mailbox and a nursery per connection.
    subscribed_idle_timeout: float = 0.25
    max_queue: int = 32
    history_limit: int = 50
    recent_events: int = 4096  # kept in memory so subscribers join a live stream without a gap
    subscriber_buffer: int = 1024
    # While a turn streams, its events are committed in groups at most this often (a result still waits for its
    # own commit): one commit per delta burst would cost the loop more than sending them.
    commit_interval: float = 0.2
    model: str | None = None  # when the session pins none (None: the provider's own default)
    # Where an account has no cap of its own.
    caps: usage_db.CapPolicy = msgspec.field(default_factory=usage_db.CapPolicy)
    # A turn's outcome is shown once committed, or after this long if its commit is still queued (a slow disk).
    end_shown_after: float = 5.0


# Sequence numbers reserved ahead of what is stored; see storage.messages.reserve_seq.
SEQ_RESERVE = 100_000
# How long an idle session's acceptance commit waits for its turn's first output before it starts anyway. The
# commit runs in the store's thread, which takes the GIL from the event loop at each SQLite call: started at once,
# it races the first delta's way out (under load, each handover waits for a core); started after, it overlaps the
# rest of the stream. A provider slower than this (a model's first token) has its commit overlap that wait instead.
FIRST_OUTPUT_WAIT = 0.005


class Parked(msgspec.Struct, eq=False):
    """A session asleep while subscribers still listen, as the router keeps it instead of its actor: filled by the
    actor as it exits (`ready`), handed to the key's next actor, which continues from it without reading storage."""

    subscribers: list[Sink[EventRow]] = msgspec.field(default_factory=list)
    session_id: str = ""
    owner: str | None = None
    seq: int = 0
    reserved: int = 0
    ready: bool = False

    def listened(self) -> bool:
        """Whether a subscriber still listens (or the exiting actor has not filled this in yet)."""
        if not self.ready:
            return True
        self.subscribers = [ch for ch in self.subscribers if ch.statistics().open_receive_channels > 0]
        return bool(self.subscribers)


class _QueuedTurn(msgspec.Struct):
    turn_id: str
    prompt: str
    history: list[msg_db.MessageRow] | None = None  # set when accepted and begun in one transaction
    pin: Pin = NO_PIN  # read with `history`
    # Started while its acceptance commits: set once that commit is over, `refused` when it failed.
    accepted: trio.Event | None = None
    refused: bool = False
    # Set by the runner once the turn's first output was shown (or it ended without any): the acceptance's
    # commit starts then (see FIRST_OUTPUT_WAIT).
    output: trio.Event | None = None


class _Fresh(msgspec.Struct, frozen=True):
    """A session this life's open created, under no cap then: until this gateway writes anything more (a pin set
    over the API, a turn's usage elsewhere), its history is empty, its pin none and its cap not reached, so its
    first turn starts without the reader thread's round trip. A write from another process (a cap set by the CLI)
    is not seen here; the acceptance's commit still checks the cap in its own transaction, as for any turn."""

    mark: tuple[int, int]  # the store's mark after the open (`Store.mark`)
    caps: usage_db.CapPolicy  # the policy checked then


class _RunningTurn(msgspec.Struct):
    turn_id: str
    scope: trio.CancelScope
    handle: ProviderTurn | None = None
    aborted: bool = False
    finished: trio.Event = msgspec.field(default_factory=trio.Event)


def _with(also: Callable[[Any], None] | None, fn: Callable[Concatenate[Any, P], T]) -> Callable[Concatenate[Any, P], T]:
    """`fn`, followed in the same transaction by the submitter's `also` (when given)."""
    if also is None:
        return fn

    def both(conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        result = fn(conn, *args, **kwargs)
        also(conn)
        return result

    return both


def _pinned(fn: Callable[Concatenate[Any, P], T], session_id: str) -> Callable[Concatenate[Any, P], tuple[T, Pin]]:
    """`fn` that also reads the session's pin in its transaction: a turn sees the pin as of its start, without a
    store round trip of its own."""

    def both(conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> tuple[T, Pin]:
        return fn(conn, *args, **kwargs), sess_db.pin_of(conn, session_id)

    return both


def _capped(
    fn: Callable[Concatenate[Any, P], T], owner: str | None, caps: usage_db.CapPolicy
) -> Callable[Concatenate[Any, P], T]:
    """`fn`, refused first (UsageCapReachedError, in its transaction: nothing stored) when `owner`'s tokens of the
    UTC day have reached their cap."""

    def both(conn: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        usage_db.check_cap(conn, owner, caps, now_ms=now_ms())
        return fn(conn, *args, **kwargs)

    return both


def _cap_history_pin(
    conn: Any, session_id: str, owner: str | None, caps: usage_db.CapPolicy, history_limit: int
) -> tuple[list[msg_db.MessageRow], Pin]:
    """A read: refuse (UsageCapReachedError) when `owner`'s cap is reached, else the history and the pin."""
    usage_db.check_cap(conn, owner, caps, now_ms=now_ms())
    return msg_db.history(conn, session_id, limit=history_limit), sess_db.pin_of(conn, session_id)


def _append_and_reserve(conn: Any, batch: list[EventRow], reserve_to: int) -> None:
    ev_db.append_events(conn, batch)
    if batch:
        msg_db.reserve_seq(conn, batch[0].session_id, reserve_to)


def _open_session(
    conn: Any, key: SessionKey, now: int, reserve: int = 0, caps: usage_db.CapPolicy | None = None
) -> tuple[sess_db.SessionRow, int, list[msg_db.TurnRow], int | None]:
    """What a new life of the session starts from: its row (created if new), where its numbering continues, and
    its turns still queued; with `reserve`, that many numbers above it reserved in the same transaction.

    Last, for a session this call created and whose owner is under no cap by `caps`: the writer's `total_changes`
    at its end (see `_Fresh`), else None."""
    found = sess_db.find_session(conn, key.transport, key.chat_id, key.topic_id)
    row = found or sess_db.create_session(conn, key.transport, key.chat_id, key.topic_id, now_ms=now)
    floor = msg_db.seq_floor(conn, row.id)
    if reserve:
        msg_db.reserve_seq(conn, row.id, floor + reserve)
    fresh: int | None = None
    if found is None and caps is not None:
        try:
            usage_db.check_cap(conn, row.owner, caps, now_ms=now)
        except usage_db.UsageCapReachedError:
            pass
        else:
            fresh = conn.total_changes
    return row, floor, msg_db.queued_turns(conn, row.id), fresh


def _added(a: Usage, b: Usage) -> Usage:
    return Usage(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens)


class SessionActor:
    """State of one SessionKey while it is awake; everything that must survive lives in storage."""

    # Slots: one per live session (a __dict__ of these is ~0.6 KB more, and memory freed when it parks seldom
    # goes back to the system).
    __slots__ = (
        "after",
        "choose",
        "config",
        "exited",
        "incarnation",
        "key",
        "leaving",
        "on_event",
        "parking",
        "received",
        "router",
        "store",
        "woken",
    )

    def __init__(
        self,
        key: SessionKey,
        *,
        store: Store,
        router: Address[RouterMsg],
        choose: Choose,
        config: SessionConfig,
        on_event: Callable[[EventRow], None] | None = None,
        after: trio.Event | None = None,
        incarnation: int = 0,
        woken: Parked | None = None,
    ) -> None:
        self.key = key
        self.store = store
        self.router = router
        self.choose = choose  # the session's pin -> provider and model, against the default of that moment
        self.config = config
        self.on_event = on_event
        self.received = 0  # requests taken, over restarts too: sent in Idle for the router to compare
        self.incarnation = incarnation  # which actor of this key (the router numbers them), sent in Idle
        self.after = after  # the key's previous actor has exited once this is set
        self.leaving: Stop | Retire | None = None  # told to stop: kept over a crash, so a restart does nothing
        self.exited = trio.Event()  # set once this actor will never touch the session again
        self.woken = woken  # where its parked predecessor left off: its first life continues from there
        self.parking: Parked | None = None  # set by the router with the Stop that parks it: filled on the way out

    async def run(self, inbox: trio.MemoryReceiveChannel[SessionMsg]) -> None:
        """One life of the actor (the supervisor calls it again after a crash, with fresh state).

        The first waits until the key's previous actor has exited, so two actors of one key never overlap. After
        Stop or Retire the actor is done: a life that ends then (even by a crash) sets `exited` and answers Retire.
        """
        if self.after is not None:
            await self.after.wait()
            self.after = None
        if self.leaving is None:
            try:
                await _SessionLife(self).run(inbox)
            except Exception as exc:
                if self.leaving is not None:
                    self._left(exc)
                raise
        self._left(None)

    def _left(self, error: Exception | None) -> None:
        self.exited.set()
        if isinstance(self.leaving, Retire):
            if error is None:
                self.leaving.reply.set(None)
            else:
                self.leaving.reply.fail(ActorError(f"session {self.key} failed while retiring: {error!r}"))


class _SessionLife:
    __slots__ = (
        "a",
        "cfg",
        "end_calls",
        "ends",
        "ends_stored",
        "flushed",
        "flushed_seq",
        "flusher_on",
        "fresh",
        "held",
        "idle_sent_at",
        "last_activity",
        "life_floor",
        "nursery",
        "owner",
        "pending",
        "queue",
        "recent",
        "released",
        "reserved",
        "runner_on",
        "running",
        "safe",
        "seq",
        "session_id",
        "shown",
        "stopping",
        "subscribers",
        "unsent",
        "urgent",
        "waiting",
        "wind_down_at",
    )

    def __init__(self, actor: SessionActor) -> None:
        self.a = actor
        self.cfg = actor.config
        self.session_id = ""
        self.owner: str | None = None
        self.seq = 0
        self.life_floor = 0
        self.shown = 0  # the last sequence number sent to subscribers
        self.held: list[EventRow] = []  # a turn's outcome whose commit failed: shown once the flusher stores it
        # Emitted but not sent yet, in seq order: an event waiting for its commit holds back the later ones, so
        # subscribers always get numbers in order (a dropped turn's end is committed while the next turn streams).
        self.unsent: deque[EventRow] | None = None  # created by the first event that must wait
        self.released: set[int] = set()
        # Numbers up to `safe` are stored or durably reserved, so no later life gives them out again; an event above
        # it is held back until a commit covers it (a client never sees a number a crash could reissue).
        self.safe = 0
        self.reserved = 0  # what this life has asked storage to reserve (covered once that commit returns)
        self.flushed_seq = 0
        self.pending: list[EventRow] = []
        # The events shown since the last turn's end was stored, so a subscriber joins a live stream without a gap;
        # created on first use and let go once everything shown is stored (a subscriber then reads storage).
        self.recent: deque[EventRow] | None = None
        self.subscribers: list[Sink[EventRow]] = []
        self.queue: list[_QueuedTurn] = []  # at most `max_queue`
        self.running: _RunningTurn | None = None
        self.last_activity = trio.current_time()
        self.idle_sent_at: int | None = None
        # The runner and the flusher are tasks only while they have work: an idle session is its serve loop alone.
        self.nursery: trio.Nursery | None = None
        self.runner_on = False
        self.flusher_on = False
        self.urgent: trio.Event | None = None  # the flusher's wait, cut short when many events wait
        self.flushed: trio.Event | None = None  # set (and dropped) at each commit of events, when someone waits
        self.ends = 0  # turns' end records being committed (see _record_end)
        self.ends_stored: trio.Event | None = None  # set (and dropped) once none is, when someone waits
        # Those commits' waits for the store, and until when they may go on: no limit, until this life is cancelled
        # (shutdown) or crashes; then `end_shown_after` more, so a frozen disk never holds the stop.
        self.end_calls: set[trio.CancelScope] = set()
        self.wind_down_at = math.inf
        self.stopping = False
        self.waiting: trio.CancelScope | None = None  # the serve loop's wait for a message, until its idle deadline
        # Created by this life's open and nothing written since: its first turn needs no read (see `_Fresh`).
        self.fresh: _Fresh | None = None

    # ---- lifecycle ----

    async def run(self, inbox: trio.MemoryReceiveChannel[SessionMsg]) -> None:
        key = self.a.key
        woken, self.a.woken = self.a.woken, None
        if woken is not None and woken.ready:
            # Parked by a clean exit: nothing changed in storage since (one actor per key at a time).
            self.session_id, self.owner = woken.session_id, woken.owner
            self.seq = self.flushed_seq = self.shown = self.life_floor = woken.seq
            self.reserved = self.safe = woken.reserved  # still reserved in storage: kept while parked
            self.subscribers = woken.subscribers
            await self._live(inbox)
            return
        if woken is not None:
            for ch in woken.subscribers:
                ch.close()  # not handed over (its actor crashed on the way out): they subscribe again
        try:
            # One store round trip, not three: under load each waits for a whole commit, and the requests that
            # woke this actor (a first Submit, a Subscribe) wait for all of it.
            # Numbers are reserved here, when the actor wakes (a client's connect), so a first turn's first
            # delta does not wait for a commit to show: its acceptance commits alongside. Refused (a disk gone
            # read-only), the life starts without: its events then wait for the commit that covers them.
            store, caps = self.a.store, self.cfg.caps
            try:
                row, floor, queued, changes = await store.call(_open_session, key, now_ms(), SEQ_RESERVE, caps)
                reserved = floor + SEQ_RESERVE
            except StorageUnavailableError:
                row, floor, queued, changes = await store.call(_open_session, key, now_ms(), 0, caps)
                reserved = floor
            mark = store.mark(changes) if changes is not None else None
            if mark is not None:
                self.fresh = _Fresh(mark, caps)
            self.session_id = row.id
            self.owner = row.owner
            self.seq = self.flushed_seq = self.shown = floor
            self.life_floor = self.seq  # numbers up to here belong to earlier lives of this session
            self.reserved = self.safe = reserved
        except Exception as exc:
            if self._refuse_waiting(inbox, exc):
                return  # retired meanwhile: nothing to restart
            raise
        for t in queued:
            self.queue.append(_QueuedTurn(t.id, t.prompt))
        await self._live(inbox)

    async def _live(self, inbox: trio.MemoryReceiveChannel[SessionMsg]) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                try:
                    await self._until_stopped(inbox, nursery)
                finally:
                    self._wind_down()
        finally:
            for ch in self.subscribers:
                ch.close()
            self.subscribers.clear()
            parked = self.a.parking is not None and self.a.parking.ready
            clean = self.running is None and not self.pending and self.flushed_seq >= self.seq
            if self.reserved > self.seq and clean and not parked:
                # A clean end of this life (stop, retire, shutdown), everything shown stored: give the reservation
                # back, so the next life numbers on from here. Kept if that fails: numbers jump, none is reused.
                # Kept when parked: the next actor carries on with it.
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    try:
                        await self.a.store.call(msg_db.release_reservation, self.session_id)
                    except Exception as exc:
                        log.warning("session %s: sequence reservation kept (%r)", self.a.key, exc)

    async def _until_stopped(self, inbox: trio.MemoryReceiveChannel[SessionMsg], nursery: trio.Nursery) -> None:
        """Serve until told to stop, then finish what is queued and stored (parked: hand over the subscribers),
        and end the nursery."""
        self._kick_runner()
        await self._serve(inbox, nursery)
        # Stop or Retire: let the running turn and the queue finish, then flush what they wrote.
        while self.running is not None or self.queue:
            if self.running is not None:
                await self.running.finished.wait()
            else:
                await trio.lowlevel.checkpoint()
        while self.ends:  # a turn's end still being stored (slow disk): the actor exits after it
            if self.ends_stored is None:
                self.ends_stored = trio.Event()
            await self.ends_stored.wait()
        await self._wait_flushed(self.seq)
        leaving = self.a.leaving
        if isinstance(leaving, Retire) and leaving.then is not None:
            await self.a.store.call(leaving.then)  # the last act: no successor has started yet
        parking = self.a.parking
        if isinstance(leaving, Stop) and parking is not None:
            # Parked: the subscribers stay open, kept by the router for the key's next actor.
            parking.subscribers = [ch for ch in self.subscribers if ch.statistics().open_receive_channels]
            parking.session_id, parking.owner = self.session_id, self.owner
            # What storage holds reserved (not `reserved`, which a refused commit may have raised).
            parking.seq, parking.reserved = self.seq, self.safe
            parking.ready = True
            self.subscribers = []
        nursery.cancel_scope.cancel()

    def _wind_down(self) -> None:
        """This life is over (stopped, cancelled at shutdown, or crashed): a turn's end still being committed is
        waited for `end_shown_after` more at most, so a frozen disk never holds the stop."""
        self.wind_down_at = trio.current_time() + self.cfg.end_shown_after
        for call in self.end_calls:
            call.deadline = min(call.deadline, self.wind_down_at)

    def _refuse_waiting(self, inbox: trio.MemoryReceiveChannel[SessionMsg], exc: Exception) -> bool:
        """This life cannot start (storage down): answer what waits for it with the reason at once rather than
        leave its askers to time out. Returns True when a Stop or Retire was among them."""
        stopped = False
        while True:
            try:
                msg = inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return stopped
            if isinstance(msg, Stop | Retire):
                stopped = True  # the router has forgotten this actor already: nothing to restart
                if isinstance(msg, Retire):
                    msg.reply.fail(exc)  # its last act (a delete) was not done
                continue
            self.a.received += 1
            reply = getattr(msg, "reply", None)
            if isinstance(reply, Reply):
                reply.fail(exc)

    async def _serve(self, inbox: trio.MemoryReceiveChannel[SessionMsg], nursery: trio.Nursery) -> None:
        while True:
            idle = self._idle_timeout()
            deadline = self.last_activity + idle if idle is not None else math.inf
            # Idle already reported and the router kept us (it had sent more): wait a full period again
            # rather than spin on a deadline that has passed.
            if deadline == math.inf or self.idle_sent_at == self.a.received:
                deadline = trio.current_time() + (idle if idle is not None else self.cfg.idle_timeout)
            msg: SessionMsg | None = None
            with trio.move_on_at(deadline) as self.waiting:
                msg = await inbox.receive()
            self.waiting = None
            if msg is None:
                idle = self._idle_timeout()
                # Woken by the deadline set while it was busy: idle for the full period first.
                if (
                    idle is not None
                    and trio.current_time() >= self.last_activity + idle
                    and (self.idle_sent_at != self.a.received)
                ):
                    self.idle_sent_at = self.a.received
                    note = Idle(self.a.key, self.a.received, self.a.incarnation, watched=bool(self.subscribers))
                    try:
                        self.a.router.send_nowait(note)
                    except BusyError:
                        self.idle_sent_at = None  # router busy: try again after the next timeout
                continue
            if isinstance(msg, Submit | Subscribe | Unsubscribe | Abort | Resolve | Retire):
                self.a.received += 1  # what the router sent (Stop is not counted: it follows an Idle)
            match msg:
                case Submit():
                    await self._submit(msg)
                case Subscribe():
                    await self._subscribe(msg)
                case Unsubscribe():
                    self._drop_subscriber(msg.channel)
                case Abort():
                    nursery.start_soon(self._abort, msg.reply, msg.only)
                case Resolve():
                    msg.reply.set(self.session_id)
                case Stop() | Retire():
                    self.a.leaving = msg
                    return
                case _:
                    raise TypeError(f"session {self.a.key} got an unknown message {msg!r}")
            self.last_activity = trio.current_time()

    def _rearm(self) -> None:
        """The last turn is over: the serve loop's wait (set while busy) ends when this idle period does."""
        idle = self._idle_timeout()
        if idle is not None and self.waiting is not None:
            self.waiting.deadline = self.last_activity + idle

    def _idle_timeout(self) -> float | None:
        """How long this session may idle before it goes (None: busy): hibernated after `idle_timeout`, or parked
        after `subscribed_idle_timeout` while subscribers listen."""
        self.subscribers = [ch for ch in self.subscribers if ch.statistics().open_receive_channels > 0]
        if self.running is not None or self.queue:
            return None
        return self.cfg.subscribed_idle_timeout if self.subscribers else self.cfg.idle_timeout

    # ---- requests ----

    async def _submit(self, msg: Submit) -> None:
        if not msg.reply.claim():
            return  # its asker gave up before we got to it: it was told "not accepted", so it must not run
        try:
            await self._accept(msg)
        finally:
            if not msg.reply.done:  # cancelled mid-way (a crash beside it): never leave a claimed ask waiting
                msg.reply.fail(
                    DeadActorError(f"session {self.a.key} stopped while accepting the turn (it may be stored)")
                )

    async def _accept(self, msg: Submit) -> None:
        if len(self.queue) >= self.cfg.max_queue:
            msg.reply.fail(BusyError(f"session {self.a.key} already has {len(self.queue)} turns queued"))
            return
        ahead = len(self.queue) + (1 if self.running else 0)
        if ahead == 0:
            await self._accept_started(msg)
            return
        try:
            turn_id = await self.a.store.call(
                _capped(_with(msg.also, msg_db.create_turn), self.owner, self.cfg.caps),
                self.session_id,
                msg.text,
                now_ms=now_ms(),
            )
        except Exception as exc:
            msg.reply.fail(exc)
            return
        self.queue.append(_QueuedTurn(turn_id, msg.text))
        self._kick_runner()
        msg.reply.set(TurnAccepted(self.session_id, turn_id, ahead))

    async def _accept_started(self, msg: Submit) -> None:
        """Idle: check the cap and read the history (a read, no commit), then start the turn while its acceptance
        commits, so its first delta does not wait for an fsync. Its end (and so its result) is recorded and shown
        only after that commit; a commit that fails (storage refusing writes, or the cap reached meanwhile) cuts
        the turn off, and the asker is told nothing was stored."""
        caps = self.cfg.caps
        fresh, self.fresh = self.fresh, None
        history: list[msg_db.MessageRow]
        pin: Pin
        if fresh is not None and fresh.caps is caps and self.a.store.unchanged(fresh.mark):
            history, pin = [], NO_PIN  # what the read would find: see `_Fresh`
        else:
            try:
                history, pin = await self.a.store.read(
                    _cap_history_pin, self.session_id, self.owner, caps, self.cfg.history_limit
                )
            except Exception as exc:
                msg.reply.fail(exc)  # the cap is reached, or storage cannot read: nothing was started
                return
        accepted, output = trio.Event(), trio.Event()
        turn = _QueuedTurn(new_id(), msg.text, history, pin, accepted, output=output)
        reserve_to = self.seq + SEQ_RESERVE
        self.reserved = max(self.reserved, reserve_to)
        self.queue.append(turn)
        self._kick_runner()
        # Shielded (it is short): cancelled here, the turn would wait for an acceptance that was never asked for.
        with trio.CancelScope(shield=True):
            with trio.move_on_after(FIRST_OUTPUT_WAIT):
                await output.wait()
            turn.output = None
            # One more round: the subscribers' senders woken by that output run before the commit's thread starts.
            await trio.lowlevel.checkpoint()
        try:
            await self.a.store.call(
                _capped(_with(msg.also, msg_db.accept_and_begin), self.owner, caps),
                self.session_id,
                msg.text,
                now_ms=now_ms(),
                reserve_to=reserve_to,
                history_limit=0,
                turn_id=turn.turn_id,
            )
        except Exception as exc:
            turn.refused = True
            if turn in self.queue:
                self.queue.remove(turn)
            elif self.running is not None and self.running.turn_id == turn.turn_id:
                self.running.scope.cancel()
            msg.reply.fail(exc)
            return
        else:
            # The turn's events streamed meanwhile are held until now: their numbers are reserved from here on.
            self._cover(reserve_to)
        finally:
            accepted.set()
        msg.reply.set(TurnAccepted(self.session_id, turn.turn_id, 0))

    async def _subscribe(self, msg: Subscribe) -> None:
        if msg.after_seq is None or msg.after_seq >= self.shown:
            self.subscribers.append(msg.channel)
            msg.reply.set(Subscription(self.session_id, [], self.shown))
            return
        replay: list[EventRow] = []
        after = msg.after_seq
        while True:
            recent = self.recent or ()
            floor = recent[0].seq if recent else self.shown + 1
            if after + 1 >= floor:
                replay.extend(e for e in recent if e.seq > after)
                break
            try:
                rows = await self.a.store.read(ev_db.events_after, self.session_id, after, limit=2000)
            except StorageUnavailableError as exc:
                msg.reply.fail(exc)  # this subscriber resumes later; the session and its running turn go on
                return
            # Committed but not shown yet (a turn's end is shown once its commit returns): those come live.
            rows = [r for r in rows if r.seq <= self.shown]
            if not rows and after >= self.shown:
                break
            if not rows:
                if after < self.life_floor:
                    # Deltas are shown before they are stored; a crash loses the unstored ones (their numbers stay
                    # reserved, never reused). The client resumes with what follows.
                    log.info("session %s: events after seq %d were lost in a crash; resuming", self.a.key, after)
                else:
                    log.error("session %s: gap in events after seq %d", self.a.key, after)  # a bug: never expected
                replay.extend(e for e in self.recent or () if e.seq > after)
                break
            replay.extend(rows)
            after = rows[-1].seq
        self.subscribers.append(msg.channel)
        msg.reply.set(Subscription(self.session_id, replay, self.shown))

    def _drop_subscriber(self, channel: Sink[EventRow]) -> None:
        if channel in self.subscribers:
            self.subscribers.remove(channel)
            channel.close()

    async def _abort(self, reply: Reply[int], only: frozenset[str] | None = None) -> None:
        killed = 0
        try:
            dropped = [t for t in self.queue if only is None or t.turn_id in only]
            for t in dropped:
                self.queue.remove(t)
            if dropped:
                # Recorded first (shielded): a crash while the running turn stops must not leave these `queued`
                # in storage, where the next life would run them. Each ends like any other turn, with its
                # turn_ended, so whoever waits for it learns it.
                ts = now_ms()
                ending = [
                    self.emit(t.turn_id, evs.TurnEnded(t.turn_id, "aborted", started=False), show=False)
                    for t in dropped
                ]
                batch, self.pending = self.pending, []

                def drop_all(conn: Any) -> None:
                    ev_db.append_events(conn, batch)
                    for t in dropped:
                        msg_db.finish_turn(conn, t.turn_id, "aborted", now_ms=ts, error="aborted before it started")

                await self._record_end(drop_all, batch, ending, f"{len(dropped)} dropped turn(s)")
            running = self.running
            if running is not None and (only is not None and running.turn_id not in only):
                running = None  # another client's turn: it goes on
            if running is not None and not running.aborted:
                running.aborted = True
                if running.handle is not None:
                    try:
                        killed = await running.handle.abort()
                    except Exception as exc:
                        log.error("session %s: provider abort failed: %r", self.a.key, exc)
                running.scope.cancel()
                await running.finished.wait()
        finally:
            # Answered even when a crash of the session cuts this short: its running turn ends then anyway.
            reply.set(killed)

    # ---- events ----

    def emit(self, turn_id: str | None, typed: evs.SessionEvent, *, show: bool = True) -> EventRow:
        """Give the event the next sequence number and queue it for storage; with `show`, send it to every
        subscriber now (else the caller calls `show` once it is committed)."""
        self.seq += 1
        event = EventRow(self.session_id, self.seq, turn_id, evs.kind_of(typed), evs.payload(typed), now_ms())
        self.pending.append(event)
        if not self.flusher_on:
            self._kick_flusher()
        elif self.urgent is not None and len(self.pending) >= self.cfg.recent_events // 2:
            self.urgent.set()
        if show and not self.unsent and event.seq <= self.safe:
            self._send(event)  # nothing waits for a commit ahead of it
            return event
        if self.unsent is None:
            self.unsent = deque()
        self.unsent.append(event)
        if show:
            self.show(event)
        return event

    def show(self, event: EventRow) -> None:
        """Let an emitted event go to subscribers: now, or right after earlier ones still waiting for their commit."""
        self.released.add(event.seq)
        self._release()

    def _cover(self, upto: int) -> None:
        """A commit made every number up to `upto` safe from reuse: show what waited for that."""
        if upto > self.safe:
            self.safe = upto
            self._release()

    def _release(self) -> None:
        unsent = self.unsent
        while unsent and unsent[0].seq in self.released and unsent[0].seq <= self.safe:
            first = unsent.popleft()
            self.released.discard(first.seq)
            self._send(first)

    def _send(self, event: EventRow) -> None:
        """Send an event to every subscriber and listener (a subscriber that cannot keep up is cut off)."""
        self.shown = max(self.shown, event.seq)
        if self.recent is None:
            self.recent = deque(maxlen=self.cfg.recent_events)
        self.recent.append(event)
        gone: list[Sink[EventRow]] | None = None
        for ch in self.subscribers:
            try:
                ch.send_nowait(event)
            except trio.WouldBlock:
                # A subscriber that cannot keep up is cut off; it resumes from its last seq.
                ch.close()
                gone = [*(gone or ()), ch]
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                gone = [*(gone or ()), ch]
        if gone is not None:
            self.subscribers = [ch for ch in self.subscribers if ch not in gone]
        if self.a.on_event is not None:
            self.a.on_event(event)

    def _kick_flusher(self) -> None:
        if self.nursery is not None and not self.flusher_on:
            self.flusher_on = True
            self.nursery.start_soon(self._flusher)

    def _flushed_to(self, seq: int) -> None:
        self.flushed_seq = max(self.flushed_seq, seq)
        if self.flushed is not None:
            self.flushed.set()
            self.flushed = None

    async def _flusher(self) -> None:
        """Store what is pending, then end (emit starts it again): no task while nothing waits for a commit."""
        try:
            await self._flush()
        finally:
            self.flusher_on = False

    async def _flush(self) -> None:
        backoff = 0.05
        while self.pending:
            if self.running is not None and self.cfg.commit_interval > 0:
                # Mid-turn: gather more of its events into this commit (a turn's end commits what is left).
                self.urgent = trio.Event()
                with trio.move_on_after(self.cfg.commit_interval):
                    await self.urgent.wait()
                self.urgent = None
            batch, self.pending = self.pending, []
            if not batch:
                continue  # a turn's end already wrote them with its final state
            reserve_to = self.reserved
            if batch[-1].seq > self.reserved - SEQ_RESERVE // 10:
                reserve_to = batch[-1].seq + SEQ_RESERVE  # a very long turn: extend the reservation in time
            while True:
                try:
                    # Shielded: these events were shown already; a crash of the session (or shutdown) arriving
                    # now must not drop them between here and the store (a resumer would find a gap).
                    with trio.CancelScope(shield=True):
                        await self.a.store.call(_append_and_reserve, batch, reserve_to)
                    self.reserved = max(self.reserved, reserve_to)
                    self._cover(max(reserve_to, batch[-1].seq))
                    break
                except Exception as exc:
                    log.error("session %s: cannot store %d events (%r); retrying", self.a.key, len(batch), exc)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            backoff = 0.05
            self._flushed_to(batch[-1].seq)
            while self.held and self.held[0].seq <= self.flushed_seq:
                self.show(self.held.pop(0))

    async def _wait_flushed(self, seq: int) -> None:
        while self.flushed_seq < seq:
            if self.flushed is None:
                self.flushed = trio.Event()
            await self.flushed.wait()

    # ---- turns ----

    def _kick_runner(self) -> None:
        if self.nursery is not None and self.queue and not self.runner_on:
            self.runner_on = True
            self.nursery.start_soon(self._runner)

    async def _runner(self) -> None:
        """Run the queued turns one after another, then end (a new turn starts it again)."""
        try:
            while self.queue:
                turn = self.queue.pop(0)
                await self._run_turn(turn)
                self.last_activity = trio.current_time()
        finally:
            self.runner_on = False
        self._rearm()

    async def _run_turn(self, turn: _QueuedTurn) -> None:
        store = self.a.store
        running = _RunningTurn(turn.turn_id, trio.CancelScope())
        self.running = running
        deltas: list[str] = []
        final: str | None = None
        reported: Usage | None = None  # the provider's own count, summed over its reports
        request: TurnRequest | None = None
        provider_name, model_name = "", ""
        state, error = "completed", None
        # Cancelled from outside (shutdown, or a crash elsewhere in this session), even while the turn is being
        # begun: the turn still gets a recorded end below, then the cancellation goes on. Otherwise it would stay
        # `running` in storage (a begin already sent commits anyway) and its last events would be lost.
        cut_off: trio.Cancelled | None = None
        try:
            try:
                history: list[msg_db.MessageRow] | None = turn.history
                pin = turn.pin
                if history is None:
                    reserve_to = self.seq + SEQ_RESERVE
                    self.reserved = max(self.reserved, reserve_to)
                    history, pin = await store.call(
                        _pinned(msg_db.begin_turn, self.session_id),
                        turn.turn_id,
                        self.session_id,
                        now_ms=now_ms(),
                        reserve_to=reserve_to,
                        history_limit=self.cfg.history_limit,
                    )
                    self._cover(reserve_to)
                # Decided once, here at the turn's start, from the pin read in the turn's own transaction.
                chosen = self.a.choose(pin)
                provider = chosen.provider
                model = chosen.model or self.cfg.model
                provider_name = provider.name
                model_name = model or provider.info().default_model or ""
                self.emit(turn.turn_id, evs.TurnStarted(turn.turn_id, turn.prompt))
                request = TurnRequest(
                    session_id=self.session_id,
                    key=self.a.key,
                    prompt=turn.prompt,
                    history=[HistoryMessage(m.role, m.content) for m in history or ()],
                    model=model,
                    owner=self.owner,
                )
                with running.scope:
                    if running.aborted:
                        running.scope.cancel()
                    handle = provider.start_turn(request)
                    running.handle = handle
                    try:
                        async for item in handle.events():
                            match item:
                                case TextDelta():
                                    deltas.append(item.text)
                                    self.emit(turn.turn_id, evs.TextDelta(item.text))
                                case ToolActivity():
                                    self.emit(turn.turn_id, evs.ToolActivity(item.name))
                                case SystemStatus():
                                    self.emit(turn.turn_id, evs.SystemStatus(item.text))
                                case FinalText():
                                    final = item.text
                                case Usage():
                                    reported = item if reported is None else _added(reported, item)
                            if turn.output is not None:
                                turn.output.set()  # its acceptance may commit now
                    except Exception as exc:
                        state, error = "failed", f"{type(exc).__name__}: {exc}"
                        log.warning("session %s: turn %s failed: %s", self.a.key, turn.turn_id, error)
            except trio.Cancelled as exc:
                cut_off = exc
                state, error = "interrupted", "gateway stopped during the turn"
            if turn.output is not None:
                turn.output.set()  # ended (or cut off) before any output: nothing left to wait for
            if turn.accepted is not None:
                # Started while its acceptance committed: nothing of its end is recorded or shown before that.
                with trio.CancelScope(shield=True):
                    await turn.accepted.wait()
                if turn.refused:
                    # Not stored, so there is no turn to end in storage: its subscribers learn it ended, and its
                    # events are stored once storage takes writes again (their numbers were shown).
                    self.emit(turn.turn_id, evs.TurnEnded(turn.turn_id, "failed"))
                    if cut_off is not None:
                        raise cut_off
                    return
            if cut_off is None and (running.scope.cancelled_caught or running.aborted):
                state, error = "aborted", "aborted by the user"
            text = final if final is not None else "".join(deltas)
            usage: evs.TurnUsage | None = None
            if request is not None and (reported is not None or text or state == "completed"):
                # A turn that reached its provider and got something back: counted, by estimate if it said nothing.
                got = reported if reported is not None else estimate_usage(request, text)
                total = got.input_tokens + got.output_tokens
                usage = evs.TurnUsage(got.input_tokens, got.output_tokens, total, reported is None, model_name)
            told: evs.TurnUsage | msgspec.UnsetType = msgspec.UNSET if usage is None else usage
            # The turn's outcome is shown only once committed (below): a client that saw a `result` can rely on
            # it surviving a crash. Deltas are shown at once (a crash may lose some; their numbers are reserved).
            ending: list[EventRow] = []
            if state == "completed":
                result = evs.Result(text, stream_fallback=final is not None and not deltas, usage=told)
                ending.append(self.emit(turn.turn_id, result, show=False))
            elif state == "failed":
                ending.append(self.emit(turn.turn_id, evs.Error("AGENT_ERROR", str(error)), show=False))
            elif state == "interrupted":  # the same end as a restart gives a turn a crash cut off
                cut = evs.Error("INTERRUPTED", msg_db.INTERRUPTED_MESSAGE)
                ending.append(self.emit(turn.turn_id, cut, show=False))
            ending.append(self.emit(turn.turn_id, evs.TurnEnded(turn.turn_id, state, usage=told), show=False))
            # The remaining events go in the same transaction as the turn's end state.
            batch, self.pending = self.pending, []
            ts = now_ms()

            def finish(conn: Any) -> None:
                ev_db.append_events(conn, batch)
                msg_db.finish_turn(
                    conn,
                    turn.turn_id,
                    state,
                    now_ms=ts,
                    result=text if state == "completed" else (text or None),
                    error=error,
                    session_status="completed" if not self.queue else "waiting",
                )
                if usage is not None:
                    usage_db.record(
                        conn,
                        turn.turn_id,
                        self.session_id,
                        owner=self.owner,
                        provider=provider_name,
                        model=model_name,
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                        estimated=usage.estimated,
                        now_ms=ts,
                    )

            await self._record_end(finish, batch, ending, f"turn {turn.turn_id}")
            if cut_off is not None:
                raise cut_off
        finally:
            self.running = None
            running.finished.set()

    async def _record_end(
        self, fn: Callable[[Any], None], batch: list[EventRow], ending: list[EventRow], what: str
    ) -> None:
        """Store turns' last events with their end state (`fn`, one transaction), then show `ending`.

        Shielded and bounded: the end is recorded even during shutdown or a crash, and never hangs them (its
        commit is waited for at most `end_shown_after` once they begin). The
        commit runs in a task of its own, waited for here at most `end_shown_after`: one that takes longer still
        marks its events stored when it returns, which a session told to stop waits for before it exits. Were the
        commit abandoned with the wait, nothing would ever mark them: the actor would never exit, and the next
        actor of its key, which waits for that, would leave every request for the key unanswered.
        """
        stored = trio.Event()
        shown = refused = False

        async def commit() -> None:
            nonlocal shown, refused
            try:
                backoff = 0.05
                while True:
                    try:
                        # Shielded: a commit under way is seen through even at shutdown (for a bounded time, see
                        # `wind_down_at`); the wait between tries is not (a restart ends a turn left `running`).
                        with trio.CancelScope(shield=True, deadline=self.wind_down_at) as call:
                            self.end_calls.add(call)
                            try:
                                await self.a.store.call(fn)
                            finally:
                                self.end_calls.discard(call)
                        if call.cancelled_caught:
                            return  # wound down: the store commits it if it holds it, else the restart ends it
                        break
                    except StorageUnavailableError as exc:
                        refused = True
                        # Nothing of it was stored (a withdrawn or failed commit): the turn's end state must be, or
                        # it stays `running` in storage with no actor to end it. Try it whole again.
                        log.error("session %s: cannot record the end of %s (%s); retrying", self.a.key, what, exc)
                        await trio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                log.error("session %s: cannot record the end of %s: %r", self.a.key, what, exc)
                # Not stored: the flusher keeps trying (events are never dropped) and shows them once stored.
                self.pending[:0] = batch
                if not shown:
                    self.held.extend(ending)
                self._kick_flusher()
            else:
                if batch:
                    self._flushed_to(batch[-1].seq)
                    self._cover(batch[-1].seq)  # stored
                if not shown:
                    shown = True
                    for event in ending:
                        self.show(event)
                if self.flushed_seq >= self.shown and not self.pending:
                    # Everything shown is stored: a subscriber joining now reads it from storage. A long reply's
                    # deltas would otherwise stay in memory until the session hibernates.
                    self.recent = None
                    if not self.unsent:
                        self.unsent = None
            finally:
                self.ends -= 1
                stored.set()
                if not self.ends and self.ends_stored is not None:
                    self.ends_stored.set()
                    self.ends_stored = None

        assert self.nursery is not None  # turns and aborts run in it
        self.ends += 1
        self.nursery.start_soon(commit)
        with trio.CancelScope(shield=True), trio.move_on_after(self.cfg.end_shown_after):
            await stored.wait()
        if not stored.is_set() and not refused:
            # Still queued in the store, which will commit it: show it now rather than hold back every later event.
            # (One storage refused stays unshown until a retry stores it: a client that saw it may rely on it.)
            log.warning(
                "session %s: storing the end of %s takes over %g s; showing it meanwhile",
                self.a.key,
                what,
                self.cfg.end_shown_after,
            )
            shown = True
            for event in ending:
                self.show(event)
