"""The outbox actor under the autojump clock: exact attempt counts, exact backoff, one attempt per row at a time."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
import trio.testing

from actors.base import Address
from actors.connector import DeliveryRequest, DeliveryResult
from actors.outbox import Deliverer, OutboxActor, OutboxMsg, OutboxPolicy, TurnFinished
from actors.store import Store, StoreActor, StoreMsg
from actors.supervisor import ChildSpec, supervise
from storage import connectors as conn_db
from storage import messages as msg_db
from storage import outbox as outbox_db
from storage import sessions as sess_db
from storage.db import open_db

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: the outbox's clock is BASE_MS + trio's virtual time


def clock() -> int:
    return BASE_MS + round(trio.current_time() * 1000)


@dataclass
class Receiver:
    """The connector side: each target fails `fails[url]` times (retryable), then takes the delivery."""

    fails: dict[str, int]
    attempts: dict[str, list[int]] = field(default_factory=dict)  # url -> the clock at each attempt
    running: set[str] = field(default_factory=set)
    overlaps: list[str] = field(default_factory=list)

    async def deliver(self, ref: str, request: DeliveryRequest) -> DeliveryResult:
        url = str(request.target["address"])
        if request.delivery_id in self.running:
            self.overlaps.append(request.delivery_id)  # a second attempt while the first still runs
        self.running.add(request.delivery_id)
        try:
            self.attempts.setdefault(url, []).append(clock())
            await trio.sleep(0.01)  # an HTTP round trip, in virtual time
            if len(self.attempts[url]) <= self.fails.get(url, 0):
                return DeliveryResult("retryable", "HTTP 503")
            return DeliveryResult("delivered")
        finally:
            self.running.discard(request.delivery_id)


@asynccontextmanager
async def outbox(
    tmp_path: Path, deliver: Deliverer, policy: OutboxPolicy
) -> AsyncIterator[tuple[Store, Address[OutboxMsg]]]:
    conn = open_db(tmp_path / "outbox.db", synchronous="normal")
    try:
        async with trio.open_nursery() as nursery:
            store_spec: ChildSpec[StoreMsg] = ChildSpec("store", StoreActor(conn, inline=True).run, capacity=4096)
            store = Store(await nursery.start(partial(supervise, store_spec)))
            actor = OutboxActor(store, deliver, policy, clock=clock)
            spec: ChildSpec[OutboxMsg] = ChildSpec("outbox", actor.run, capacity=4096)
            yield store, await nursery.start(partial(supervise, spec))
            nursery.cancel_scope.cancel()
    finally:
        conn.close()


async def finish_turn(store: Store, address: Address[OutboxMsg], chat: str, urls: list[str]) -> None:
    """A session whose turn just ended, with one http reply target per URL: the outbox plans one delivery each."""

    def prepare(conn: sqlite3.Connection) -> tuple[str, str]:
        row = sess_db.get_or_create_session(conn, "http:hooks", chat, "", now_ms=clock())
        targets: list[dict[str, object]] = [{"plugin": "http", "connector": "hooks", "address": u} for u in urls]
        conn_db.set_reply_targets(conn, row.id, targets, now_ms=clock())
        return row.id, msg_db.create_turn(conn, row.id, "hi", now_ms=clock())

    session_id, turn_id = await store.call(prepare)
    await address.send(TurnFinished(session_id, turn_id, "the answer"))


async def settled(store: Store, count: int) -> list[outbox_db.Delivery]:
    """Wait (in virtual time) until `count` deliveries are delivered or dead-lettered; return them all."""
    while True:
        rows = await store.call(outbox_db.list_deliveries, limit=1000)
        if len(rows) == count and all(r.state in ("delivered", "dead_letter") for r in rows):
            return rows
        await trio.sleep(0.05)


async def test_retries_back_off_exactly_then_deliver_or_dead_letter(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    receiver = Receiver(fails={"flaky": 2, "broken": 99})
    policy = OutboxPolicy(max_attempts=4, backoff=0.2, max_backoff=0.5)
    async with outbox(tmp_path, receiver.deliver, policy) as (store, address):
        with trio.fail_after(60):
            await finish_turn(store, address, "c1", ["flaky", "broken"])
            rows = {r.target["address"]: r for r in await settled(store, 2)}
    assert (rows["flaky"].state, rows["flaky"].attempts) == ("delivered", 3)
    assert (rows["broken"].state, rows["broken"].attempts) == ("dead_letter", 4)
    assert rows["broken"].last_error == "HTTP 503"
    assert len(receiver.attempts["flaky"]) == 3 and len(receiver.attempts["broken"]) == 4
    # Each retry waits backoff * 2^(n-1), capped at max_backoff, counted from the end of the failed attempt
    # (the 10 ms round trip): on the virtual clock that is exact.
    gaps = [b - a for a, b in zip(receiver.attempts["broken"], receiver.attempts["broken"][1:], strict=False)]
    assert gaps == [10 + 200, 10 + 400, 10 + 500]
    assert receiver.overlaps == []


async def test_many_failing_deliveries_get_exactly_their_attempts_and_never_two_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Attempts ending while the loop reads the due rows must not be started again from that (stale) read."""
    receiver = Receiver(fails={f"t{i}": 99 for i in range(40)})
    policy = OutboxPolicy(max_attempts=5, backoff=0.05, max_backoff=0.05)
    async with outbox(tmp_path, receiver.deliver, policy) as (store, address):
        with trio.fail_after(600):
            for chat in range(8):
                await finish_turn(store, address, f"c{chat}", [f"t{chat * 5 + i}" for i in range(5)])
            rows = await settled(store, 40)
    assert receiver.overlaps == []
    assert {r.state for r in rows} == {"dead_letter"} and {r.attempts for r in rows} == {5}
    assert sorted(len(a) for a in receiver.attempts.values()) == [5] * 40
