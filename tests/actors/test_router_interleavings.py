"""The router and session actors under random interleavings (hypothesis): submits, idle timers, aborts,
subscribers joining and leaving, session crashes and retirements (as a session delete asks) across a few keys, on
the autojump clock, with the store inline.

Checked after every example: never two running turns of one key; every turn ends exactly once (one `turn_ended`,
matching its stored state); every request is answered; every subscriber sees strictly increasing sequence numbers
with no gap (across its resubscriptions, as `gateway.http.turns.follow` does)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cbor2
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from actors.base import ActorError, Address, Reply
from actors.messages import (
    Abort,
    Resolve,
    Retire,
    RouterMsg,
    SessionKey,
    Submit,
    Subscribe,
    Subscription,
    TurnAccepted,
    Unsubscribe,
)
from actors.providers.base import ProviderEvent, ProviderInfo, TextDelta, TurnRequest
from actors.router import Router, start_router
from actors.session import SessionConfig
from actors.store import Store, StoreActor, StoreMsg
from actors.supervisor import ChildSpec, supervise
from storage.db import apply_pragmas, open_db

KEYS = [SessionKey("api", "1"), SessionKey("api", "2"), SessionKey("api", "2", "7")]
IDLE = 2  # sessions.idle_timeout; waits and turn lengths are whole seconds so timers coincide with ops
FOREVER = 10_000.0  # virtual seconds: every ask gets its answer long before this

_template: sqlite3.Connection | None = None


def fresh_db() -> sqlite3.Connection:
    """A migrated in-memory database (migrating once, then copying: each example starts from scratch)."""
    global _template
    if _template is None:
        _template = open_db(":memory:")
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    _template.backup(conn)
    apply_pragmas(conn, synchronous="normal")
    return conn


@dataclass
class World:
    """What the example observed; every invariant violation is recorded here, not raised inside a task."""

    running: Counter[SessionKey] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    accepted: dict[str, SessionKey] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)  # requests not answered yet (a client that left drops its own)


class StepProvider:
    """A turn of `n` steps: one virtual second and one delta per step. Counts turns running per key."""

    name = "steps"

    def __init__(self, world: World) -> None:
        self.world = world

    def info(self) -> ProviderInfo:
        return ProviderInfo("steps")

    def start_turn(self, request: TurnRequest) -> StepTurn:
        return StepTurn(self.world, request)


class StepTurn:
    def __init__(self, world: World, request: TurnRequest) -> None:
        self.world = world
        self.request = request

    async def events(self) -> AsyncIterator[ProviderEvent]:
        key, world = self.request.key, self.world
        world.running[key] += 1
        if world.running[key] > 1:
            world.violations.append(f"{world.running[key]} turns of {key} run at once ({self.request.prompt})")
        try:
            for i in range(int(self.request.prompt.split()[-1])):
                await trio.sleep(1)
                yield TextDelta(f" s{i}")
        finally:
            world.running[key] -= 1

    async def abort(self) -> int:
        return 0


Op = tuple[Any, ...]
keys = st.integers(0, len(KEYS) - 1)
action = st.one_of(
    st.tuples(st.just("submit"), keys, st.integers(0, 2)),
    st.tuples(st.just("abort"), keys),
    st.tuples(st.just("subscribe"), keys, st.sampled_from(["live", "all"]), st.sampled_from([2, 64])),
    st.tuples(st.just("leave"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("crash"), keys),
    st.tuples(st.just("retire"), keys),
)
# Rounds: a wait of whole seconds, then a burst of actions at that instant, racing the idle timers due then.
ops = st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.lists(action, min_size=1, max_size=3)), max_size=15).map(
    lambda rounds: [op for wait, burst in rounds for op in [("wait", wait), *burst]]
)
# Issue 13's race, twenty times over (one try loses it to the scheduler's coin more often than not): a Submit
# reaching a session together with its idle timer, then another one while the first runs. Retiring that session
# on its live counter started a second actor, and a second turn of the key, beside the first.
IDLE_RACE = [
    op
    for key in (0, 1) * 10
    for op in [("submit", key, 0), ("wait", IDLE), ("submit", key, 2), ("wait", 0), ("submit", key, 1), ("wait", 4)]
]


@dataclass
class Follower:
    key: SessionKey
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    channel: trio.MemorySendChannel[Any] | None = None


class Driver:
    def __init__(self, world: World, router: Router, address: Address[RouterMsg], nursery: trio.Nursery) -> None:
        self.world = world
        self.router = router
        self.address = address
        self.nursery = nursery
        self.followers: list[Follower] = []
        self.prompts = 0
        self.asks = 0

    def request(self, what: str, make: Any) -> tuple[str, Reply[Any]]:
        """Send a request through the router now (ops that happen at one instant race each other and the timers)."""
        self.asks += 1
        name = f"#{self.asks} {what}"
        reply: Reply[Any] = Reply()
        self.address.send_nowait(make(reply))
        self.world.waiting.add(name)
        return name, reply

    async def answer(self, name: str, reply: Reply[Any]) -> Any:
        """Wait for a request's answer; an error answer is an answer too."""
        try:
            try:
                return await reply.wait()
            except ActorError as exc:
                return exc
        finally:
            self.world.waiting.discard(name)

    async def submit(self, name: str, reply: Reply[Any], key: SessionKey) -> None:
        answer = await self.answer(name, reply)
        if isinstance(answer, TurnAccepted):
            self.world.accepted[answer.turn_id] = key

    def subscribe(self, me: Follower, after: int | None, buffer: int) -> tuple[str, Reply[Any], Any]:
        send, receive = trio.open_memory_channel[Any](buffer)
        me.channel = send
        return *self.request(f"subscribe {me.key}", partial(Subscribe, me.key, send, after)), receive

    async def follow(self, me: Follower, last: int | None, buffer: int, first: tuple[str, Reply[Any], Any]) -> None:
        """Like gateway.http.turns.follow: when the session closes the channel, subscribe again from the last event
        seen. Checks that the numbers it sees go up by exactly one."""
        name, reply, receive = first
        with me.scope:
            while True:
                answer = await self.answer(name, reply)
                if isinstance(answer, Subscription):
                    with receive:
                        if last is None:
                            last = answer.last_seq
                        for event in [*answer.replay, *[e async for e in receive]]:
                            if event.seq != last + 1:
                                self.world.violations.append(f"subscriber of {me.key} saw seq {event.seq} after {last}")
                            last = event.seq
                else:
                    await trio.sleep(1)  # busy or restarting: try again, as a client would
                name, reply, receive = self.subscribe(me, last, buffer)

    def leave(self, index: int, politely: bool) -> None:
        """A subscriber goes away: politely (Unsubscribe, as /ws does) or by just closing its end."""
        if not self.followers:
            return
        me = self.followers.pop(index % len(self.followers))
        if politely and me.channel is not None:
            self.address.send_nowait(Unsubscribe(me.key, me.channel))
        me.scope.cancel()

    def crash(self, key: SessionKey) -> None:
        address = self.router.address_of(key)  # inspection, as the other router tests do
        if address is not None:
            try:
                address.send_nowait("not a message")  # type: ignore[arg-type]
            except ActorError:
                pass

    async def run(self, script: list[Op]) -> None:
        for op in script:
            match op:
                case ("submit", k, steps):
                    self.prompts += 1
                    text = f"p{self.prompts} {steps}"
                    name, reply = self.request(f"submit {text}", partial(Submit, KEYS[k], text))
                    self.nursery.start_soon(self.submit, name, reply, KEYS[k])
                case ("abort", k):
                    self.nursery.start_soon(self.answer, *self.request(f"abort {KEYS[k]}", partial(Abort, KEYS[k])))
                case ("subscribe", k, start, buffer):
                    me = Follower(KEYS[k])
                    self.followers.append(me)
                    after = 0 if start == "all" else None
                    self.nursery.start_soon(self.follow, me, after, buffer, self.subscribe(me, after, buffer))
                case ("leave", index, politely):
                    self.leave(index, politely)
                case ("crash", k):
                    self.crash(KEYS[k])
                case ("retire", k):
                    self.nursery.start_soon(self.answer, *self.request(f"retire {KEYS[k]}", partial(Retire, KEYS[k])))
                case ("wait", seconds):
                    await trio.sleep(seconds)


async def scenario(script: list[Op]) -> World:
    world = World()
    conn = fresh_db()
    try:
        async with trio.open_nursery() as infra:
            spec: ChildSpec[StoreMsg] = ChildSpec("store", StoreActor(conn, inline=True).run, capacity=4096)
            store = Store(await infra.start(partial(supervise, spec)), timeout=FOREVER)
            async with trio.open_nursery() as core:
                router = Router(
                    store=store, provider=lambda: StepProvider(world), session_config=SessionConfig(idle_timeout=IDLE)
                )
                address = await start_router(core, router)
                async with trio.open_nursery() as clients:
                    driver = Driver(world, router, address, clients)
                    await driver.run(script)
                    # Quiesce: let every turn run out, then wake every key once (a session whose restart budget ran
                    # out is forgotten until its next message, which runs what it left queued) and let those end.
                    await trio.sleep(100)
                    for key in KEYS:
                        clients.start_soon(driver.answer, *driver.request(f"resolve {key}", partial(Resolve, key)))
                    await trio.sleep(100)
                    for me in driver.followers:
                        me.scope.cancel()
                    await trio.sleep(1)
                    world.violations += [f"{what} was never answered" for what in sorted(world.waiting)]
                    clients.cancel_scope.cancel()
                core.cancel_scope.cancel()
            infra.cancel_scope.cancel()
        turns = conn.execute("SELECT id, state FROM turns").fetchall()
        ends = conn.execute("SELECT turn_id, body FROM events WHERE type = 'turn_ended'").fetchall()
        ended = Counter(turn_id for turn_id, _ in ends)
        states = {turn_id: cbor2.loads(body)["state"] for turn_id, body in ends}
    finally:
        conn.close()
    for turn_id, state in turns:
        if ended[turn_id] != 1:
            world.violations.append(f"turn {turn_id} ({state}) has {ended[turn_id]} turn_ended events")
        elif states[turn_id] != state:
            world.violations.append(f"turn {turn_id} is {state} but its turn_ended says {states[turn_id]}")
    stored = {t for t, _ in turns}
    world.violations += [f"accepted turn {t} is not stored" for t in world.accepted if t not in stored]
    return world


@settings(
    max_examples=100,
    deadline=None,
    # The same examples on every run (CI included), and trio's scheduler is seeded by hypothesis too. Timers due at
    # one instant are still ordered partly by memory address, hence the explicit examples repeat their race.
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(script=ops)
@example(script=IDLE_RACE)
@example(script=[("submit", 0, 2), ("retire", 0), ("submit", 0, 1)])  # a successor must wait for the retiring actor
def test_random_interleavings_keep_the_invariants(script: list[Op]) -> None:
    world = trio.run(scenario, script, clock=trio.testing.MockClock(autojump_threshold=0))
    assert not world.violations, world.violations
