"""A store and router over a real SQLite file, driven in-process for actor tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from actors.base import Address, ask
from actors.messages import Abort, RouterMsg, SessionKey, Submit, Subscribe, Subscription, TurnAccepted
from actors.providers.base import Provider
from actors.router import Router, start_router
from actors.session import SessionConfig
from actors.store import Reader, Store, StoreActor, StoreMsg
from actors.supervisor import ChildSpec, supervise
from storage.db import open_db, open_reader
from storage.events import EventRow


@dataclass
class Harness:
    store: Store
    router: Router
    address: Address[RouterMsg]
    db_path: Path

    async def submit(self, key: SessionKey, text: str) -> TurnAccepted:
        return await ask(self.address, lambda r: Submit(key, text, r), timeout=5)

    async def subscribe(
        self, key: SessionKey, after: int | None = None, buffer: int = 10_000
    ) -> tuple[Subscription, trio.MemoryReceiveChannel[EventRow], trio.MemorySendChannel[EventRow]]:
        send, receive = trio.open_memory_channel[EventRow](buffer)
        sub: Subscription = await ask(self.address, lambda r: Subscribe(key, send, after, r), timeout=5)
        return sub, receive, send

    async def abort(self, key: SessionKey) -> int:
        return await ask(self.address, lambda r: Abort(key, r), timeout=5)


async def until_turn_ends(receive: trio.MemoryReceiveChannel[EventRow]) -> list[EventRow]:
    """Collect events up to and including the next `turn_ended`."""
    out: list[EventRow] = []
    async for event in receive:
        out.append(event)
        if event.type == "turn_ended":
            return out
    raise AssertionError(f"stream ended before turn_ended: {[e.type for e in out]}")


@asynccontextmanager
async def harness(
    tmp_path: Path,
    provider: Callable[[], Provider],
    *,
    inline: bool = True,
    timeout: float = 10,
    reader: bool = False,
    **session: object,
) -> AsyncIterator[Harness]:
    """`reader`: reads go to a reader connection, and the store handle sees the actor's stats, as in the runtime."""
    db_path = tmp_path / "actors.db"
    conn = open_db(db_path, synchronous="normal")
    store: Store | None = None
    try:
        # Same nesting as the runtime: the store (infra) outlives the router and sessions (core).
        async with trio.open_nursery() as infra:
            actor = StoreActor(conn, inline=inline)
            spec: ChildSpec[StoreMsg] = ChildSpec("store", actor.run, capacity=4096)
            address = await infra.start(partial(supervise, spec))
            if reader:
                store = Store(address, stats=actor.stats, reader=Reader(partial(open_reader, db_path)))
            else:
                store = Store(address)
            async with trio.open_nursery() as core:
                # A session a subscriber listens to stays live between turns here unless a test says otherwise
                # (the product parks it after 0.25 s): these tests inspect the live actors on the real clock.
                session.setdefault("subscribed_idle_timeout", 30.0)
                config = SessionConfig(**session)  # type: ignore[arg-type]
                router = Router(store=store, provider=provider, session_config=config)
                routed = await start_router(core, router)
                with trio.fail_after(timeout):
                    yield Harness(store, router, routed, db_path)
                core.cancel_scope.cancel()
            infra.cancel_scope.cancel()
    finally:
        if store is not None and store.reader is not None:
            store.reader.close()
        conn.close()
