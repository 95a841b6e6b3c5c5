"""Running turns for the HTTP edges: submit, follow a session's event stream (resuming by seq), wait for a result."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator, Callable
from functools import partial

import msgspec
import trio

from actors.base import ActorError, BusyError, DeadActorError, ask
from actors.events import TurnUsage
from actors.messages import Abort, Retire, SessionKey, Submit, Subscribe, Subscription, TurnAccepted
from gateway.core import Runtime
from gateway.errors import TurnTimeoutError, UnavailableError
from storage import messages as msg_db
from storage import sessions as sess_db
from storage import usage as usage_db
from storage.clock import now_ms
from storage.events import EventRow
from storage.sessions import SessionRow

ASK_TIMEOUT = 10.0


class TurnOutcome(msgspec.Struct, frozen=True):
    """A turn run for an HTTP caller: what was accepted, and how it ended (read from `runtime.outcomes`)."""

    accepted: TurnAccepted
    state: str  # completed | failed | aborted | interrupted
    text: str
    error: str | None
    usage: TurnUsage | None = None  # tokens in and out, `estimated` when guessed


async def ensure_session(runtime: Runtime, key: SessionKey, owner: str | None) -> SessionRow:
    """Return the session row for `key`, creating it owned by `owner` (the session actor then adopts it)."""
    return await runtime.store.call(
        sess_db.get_or_create_session,
        key.transport,
        key.chat_id,
        key.topic_id,
        now_ms=now_ms(),
        owner=owner,
    )


async def submit(runtime: Runtime, key: SessionKey, text: str) -> TurnAccepted:
    """Queue a turn; raise 429 when the session's queue is full, 503 when the runtime does not answer."""
    try:
        try:
            return await ask(runtime.router_address, lambda r: Submit(key, text, r), timeout=ASK_TIMEOUT)
        except DeadActorError:
            # The key's actor was just retired (its session deleted): the router has forgotten it; once more.
            return await ask(runtime.router_address, lambda r: Submit(key, text, r), timeout=ASK_TIMEOUT)
    except BusyError as exc:
        from gateway.http.ratelimit import rate_limited

        raise rate_limited(2, f"the session is busy: {exc}") from None
    except ActorError as exc:
        raise UnavailableError(f"the agent runtime did not accept the turn: {exc}") from None


async def abort(runtime: Runtime, key: SessionKey) -> int:
    try:
        return await ask(runtime.router_address, lambda r: Abort(key, r), timeout=ASK_TIMEOUT)
    except ActorError as exc:
        raise UnavailableError(f"the agent runtime did not answer the stop: {exc}") from None


async def retire(
    runtime: Runtime,
    key: SessionKey,
    *,
    then: Callable[[sqlite3.Connection], object] | None = None,
    timeout: float = 10.0,
) -> None:
    """Retire the key's session actor and wait until it has exited (its turns ended, its last events stored).

    `then` runs in the store as the actor's last act, before any new actor of the key starts: deleting a
    session's rows there means no actor ever writes under the deleted id. A message for the key sent meanwhile
    waits for that, then starts a fresh session. Raises 503 when the runtime does not answer within `timeout`.
    """
    try:
        await ask(runtime.router_address, lambda r: Retire(key, r, then), timeout=timeout)
    except ActorError as exc:
        raise UnavailableError(f"the session did not stop in time ({exc}); try again") from None


Subscribed = tuple[Subscription, trio.MemoryReceiveChannel[EventRow]]


async def _subscribe(runtime: Runtime, key: SessionKey, after_seq: int | None) -> Subscribed:
    send, receive = trio.open_memory_channel[EventRow](1024)
    make = partial(Subscribe, key, send, after_seq)
    try:
        try:
            sub = await ask(runtime.router_address, make, timeout=ASK_TIMEOUT)
        except DeadActorError:
            sub = await ask(runtime.router_address, make, timeout=ASK_TIMEOUT)
    except ActorError as exc:
        receive.close()
        raise UnavailableError(f"cannot follow the session: {exc}") from None
    return sub, receive


async def follow(
    runtime: Runtime,
    key: SessionKey,
    after_seq: int | None,
    *,
    session_id: str | None = None,
    first: Subscribed | None = None,
) -> AsyncIterator[EventRow]:
    """Yield the session's events after `after_seq` (None: from now on), resubscribing when cut off.

    Follows `session_id` (None: the one the key names at the first subscription; `first` is one already made) and
    ends when the key comes to name another: that session was deleted. Cancel the iteration (or stop iterating) to
    leave; the subscription closes with it.
    """
    while True:
        sub, receive = first if first is not None else await _subscribe(runtime, key, after_seq)
        first = None
        with receive:
            if session_id is not None and sub.session_id != session_id:
                return
            session_id = sub.session_id
            for event in sub.replay:
                if after_seq is None or event.seq > after_seq:
                    after_seq = event.seq
                    yield event
            if after_seq is None:
                after_seq = sub.last_seq
            async for event in receive:
                if event.seq > after_seq:
                    after_seq = event.seq
                    yield event
        # The session closed our channel (we were slow, or it retired): pick up where we stopped.


async def start_and_follow(
    runtime: Runtime, key: SessionKey, text: str
) -> tuple[TurnAccepted, AsyncIterator[EventRow]]:
    """Submit a turn and return its events, ending with its turn_ended (or early, if its session is deleted).

    Subscribed before submitting, so none of the turn's events is missed.
    """
    first: Subscribed | None = await _subscribe(runtime, key, None)
    assert first is not None
    try:
        accepted = await submit(runtime, key, text)
    except BaseException:
        first[1].close()
        raise
    start_seq = first[0].last_seq
    if first[0].session_id != accepted.session_id:
        # Deleted in between: the turn is in the key's fresh session, whose numbers start again from 1.
        first[1].close()
        first, start_seq = None, 0

    async def events() -> AsyncIterator[EventRow]:
        # Events of turns queued ahead of ours are skipped; ours ends with its turn_ended.
        async for event in follow(runtime, key, start_seq, session_id=accepted.session_id, first=first):
            if event.turn_id != accepted.turn_id:
                continue
            yield event
            if event.type == "turn_ended":
                return

    return accepted, events()


def _turn_and_usage(conn: sqlite3.Connection, turn_id: str) -> tuple[msg_db.TurnRow | None, usage_db.TurnUsage | None]:
    return msg_db.get_turn(conn, turn_id), usage_db.of_turn(conn, turn_id)


async def run_turn(runtime: Runtime, key: SessionKey, text: str, *, timeout: float = math.inf) -> TurnOutcome:
    """Submit a turn and wait for its end; raise 504 after `timeout` seconds (the turn goes on)."""
    accepted, events = await start_and_follow(runtime, key, text)
    ended = False
    with trio.move_on_after(timeout) as scope:
        async for event in events:
            ended = event.type == "turn_ended"
    if scope.cancelled_caught:
        raise TurnTimeoutError(f"no reply within {timeout:g} s; the turn goes on (turn {accepted.turn_id})")
    outcome = runtime.outcomes.get(accepted.turn_id) if ended else None
    if outcome is not None:
        return TurnOutcome(accepted, outcome.state, outcome.text, outcome.error, outcome.usage)
    if ended:
        # Forgotten already (thousands of turns ended since): storage has the same end.
        row, used = await runtime.store.call(_turn_and_usage, accepted.turn_id)
        if row is not None:
            done = row.state == "completed"
            usage = None
            if used is not None:
                tokens = (used.input_tokens, used.output_tokens, used.input_tokens + used.output_tokens)
                usage = TurnUsage(*tokens, used.estimated, used.model)
            text = (row.result or "") if done else ""
            return TurnOutcome(accepted, row.state, text, None if done else row.error, usage)
    return TurnOutcome(accepted, "failed", "", "the session was deleted before the turn ended")
