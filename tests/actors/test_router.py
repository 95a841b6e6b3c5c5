"""The router and session actors: serialized turns per key, concurrency across keys, fan-out, abort,
hibernation and revival, crash isolation."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from actors.base import Reply, ask
from actors.messages import Idle, Resolve, SessionKey, Submit, Subscribe, Unsubscribe
from actors.providers.base import ProviderEvent, ProviderInfo, TextDelta, TurnRequest
from actors.providers.echo import EchoProvider
from actors.router import Router, start_router
from actors.session import SessionConfig
from actors.store import Store, StoreActor, StoreMsg
from actors.supervisor import ChildSpec, supervise
from storage import messages as msg_db
from storage.db import open_db
from storage.events import EventRow
from tests.actors.harness import harness, until_turn_ends
from tests.conftest import until

A = SessionKey("api", "1")
A2 = SessionKey("api", "1", "77")
B = SessionKey("api", "2")


class GateProvider:
    """Each turn waits until the test opens its gate; records how many turns run per key at once."""

    name = "gate"

    def __init__(self) -> None:
        self.gates: dict[str, trio.Event] = {}
        self.running: Counter[SessionKey] = Counter()
        self.max_running: Counter[SessionKey] = Counter()
        self.started: list[str] = []

    def info(self) -> ProviderInfo:
        return ProviderInfo("gate")

    def start_turn(self, request: TurnRequest) -> GateTurn:
        return GateTurn(self, request)


class GateTurn:
    def __init__(self, provider: GateProvider, request: TurnRequest) -> None:
        self.p = provider
        self.r = request

    async def events(self) -> AsyncIterator[ProviderEvent]:
        p, key = self.p, self.r.key
        p.running[key] += 1
        p.max_running[key] = max(p.max_running[key], p.running[key])
        p.started.append(self.r.prompt)
        try:
            gate = p.gates.setdefault(self.r.prompt, trio.Event())
            await gate.wait()
            yield TextDelta(self.r.prompt)
        finally:
            p.running[key] -= 1

    async def abort(self) -> int:
        return 0


async def test_turns_serialize_per_key_and_run_concurrently_across_keys(tmp_path: Path) -> None:
    gate = GateProvider()
    async with harness(tmp_path, lambda: gate) as h:
        _, events_a, _ = await h.subscribe(A)
        for text, key in (("a1", A), ("a2", A), ("b1", B)):
            await h.submit(key, text)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(gate.started) == ["a1", "b1"]  # a2 waits behind a1; b1 runs beside it
        gate.gates["a1"].set()
        first = await until_turn_ends(events_a)
        assert [e.data.get("text") for e in first if e.type == "result"] == ["a1"]
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(gate.started) == ["a1", "a2", "b1"]
        gate.gates["a2"].set()
        gate.gates["b1"].set()
        second = await until_turn_ends(events_a)
        assert [e.data.get("text") for e in second if e.type == "result"] == ["a2"]
        assert gate.max_running[A] == 1
        assert gate.max_running[B] == 1
        # Sequence numbers are contiguous per session.
        seqs = [e.seq for e in first + second]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_session_whose_turn_end_was_slow_to_store_still_exits_and_its_key_answers_again(
    tmp_path: Path,
) -> None:
    # The bug: past `end_shown_after` the turn's end was shown and its commit's wait abandoned, so nothing marked
    # those events stored once the commit came. Told to stop, the session waited for that forever; the next actor of
    # its key waits for the old one to exit, so every request for the key then went unanswered ("router did not
    # answer").
    gate = GateProvider()
    disk, entered = threading.Event(), threading.Event()

    def stuck(conn: sqlite3.Connection) -> None:
        entered.set()
        disk.wait(30)  # a slow disk, in miniature: every commit queued behind this one waits

    # The idle timer armed while `live` still listened is the subscribed one: short too, or the retirement waits
    # its default 10 s after `live` closes.
    quick = {"idle_timeout": 0.5, "subscribed_idle_timeout": 0.5, "end_shown_after": 0.2}
    async with harness(tmp_path, lambda: gate, inline=False, timeout=30, **quick) as h:  # type: ignore[arg-type]
        _, live, _ = await h.subscribe(A)
        await h.submit(A, "one")
        await until(lambda: gate.started == ["one"])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.store.call, stuck)
            await until(entered.is_set)
            gate.gates["one"].set()
            events = await until_turn_ends(live)  # shown after 0.2 s, while its commit still waits
            assert [e.type for e in events][-2:] == ["result", "turn_ended"]
            disk.set()
        live.close()  # idle now: the router retires it once its end is stored
        await until(lambda: h.router.statistics().retired == 1)
        gate.gates["two"] = trio.Event()
        gate.gates["two"].set()
        _, again, _ = await h.subscribe(A)  # a new actor of the key, started once the old one exited
        await h.submit(A, "two")
        assert [e.data.get("text") for e in await until_turn_ends(again) if e.type == "result"] == ["two"]


async def test_the_router_routes_a_burst_waiting_in_its_mailbox_in_one_scheduler_pass(tmp_path: Path) -> None:
    # Each message used to cost the router at least one scheduler pass (the checkpoint in `receive()`, and a wait
    # for each new session's first run): with 1000 busy connections on a loaded machine that was a few dozen
    # messages a second, and asks queued behind a burst timed out ("router did not answer within 10 s").
    async with harness(tmp_path, lambda: EchoProvider()) as h:
        await trio.testing.wait_all_tasks_blocked()
        replies: list[Reply[str]] = [Reply() for _ in range(200)]
        for i, reply in enumerate(replies):
            h.address.send_nowait(Resolve(SessionKey("api", f"burst-{i}"), reply))
        for _ in range(2):  # the router is woken by the first message: it runs within two passes
            await trio.lowlevel.checkpoint()
        assert h.router.statistics().started == 200
        ids = {await reply.wait() for reply in replies}
        assert len(ids) == 200


async def test_every_subscriber_sees_the_same_stream(tmp_path: Path) -> None:
    async with harness(tmp_path, lambda: EchoProvider(delay=0.001)) as h:
        subs = [await h.subscribe(A) for _ in range(3)]
        await h.submit(A, "one two three four")
        streams = [await until_turn_ends(r) for _, r, _ in subs]
        assert streams[0] == streams[1] == streams[2]
        types = [e.type for e in streams[0]]
        assert types == ["turn_started", *["text_delta"] * 4, "result", "turn_ended"]
        assert "".join(e.data["data"] for e in streams[0] if e.type == "text_delta") == "one two three four"


async def test_resubscribe_after_seq_replays_exactly_the_missed_events(tmp_path: Path) -> None:
    async with harness(tmp_path, lambda: EchoProvider()) as h:
        _, live, _ = await h.subscribe(A)
        await h.submit(A, "alpha beta gamma")
        everything = await until_turn_ends(live)
        live.close()
        cut = everything[2].seq
        sub, _later, _ = await h.subscribe(A, after=cut)
        assert sub.replay == everything[3:]
        assert sub.last_seq == everything[-1].seq


async def test_hibernation_and_revival_keep_history(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(tmp_path, lambda: EchoProvider(delay=0.01), idle_timeout=30.0, timeout=300) as h:
        _, live, _ = await h.subscribe(A)
        await h.submit(A, "first turn")
        first = await until_turn_ends(live)
        live.close()  # the subscriber leaves
        assert h.router.live_sessions == 1
        await trio.sleep(31)
        await trio.testing.wait_all_tasks_blocked()
        assert h.router.live_sessions == 0, "an idle session hibernates"
        assert h.router.statistics().retired == 1

        accepted = await h.submit(A, "second turn")  # revives it from storage
        assert h.router.live_sessions == 1
        sub, live, _ = await h.subscribe(A, after=0)
        replayed = list(sub.replay)
        if not any(e.type == "turn_ended" and e.data["turn_id"] == accepted.turn_id for e in replayed):
            replayed += await until_turn_ends(live)
        assert replayed[: len(first)] == first
        assert [e.seq for e in replayed] == list(range(1, len(replayed) + 1))
        history = await h.store.call(msg_db.history, accepted.session_id)
        assert [(m.role, m.content) for m in history] == [
            ("user", "first turn"),
            ("assistant", "first turn"),
            ("user", "second turn"),
            ("assistant", "second turn"),
        ]


async def test_a_session_with_a_subscriber_does_not_hibernate(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Idle with a subscriber, it is parked, not hibernated: no actor, but the subscriber stays subscribed; the
    next request wakes it, numbering on from where it was, and the subscriber gets its events."""
    async with harness(
        tmp_path, lambda: EchoProvider(), idle_timeout=5.0, subscribed_idle_timeout=30.0, timeout=300
    ) as h:
        sub, live, _send = await h.subscribe(A)
        await h.submit(A, "first")
        first = await until_turn_ends(live)
        await trio.sleep(20)
        assert (h.router.live_sessions, h.router.parked_sessions) == (1, 0)  # not before its own timeout
        await trio.sleep(40)
        assert (h.router.live_sessions, h.router.parked_sessions) == (0, 1)
        accepted = await h.submit(A, "second")
        second = await until_turn_ends(live)
        assert accepted.session_id == sub.session_id
        assert [e.seq for e in second] == list(range(first[-1].seq + 1, first[-1].seq + 1 + len(second)))
        assert second[-1].data["state"] == "completed"
        assert h.router.live_sessions == 1 and h.router.parked_sessions == 0


async def test_a_parked_session_forgets_a_subscriber_that_leaves(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Unsubscribe reaches a parked session without waking it; without a listener left, the key is forgotten."""
    async with harness(tmp_path, lambda: EchoProvider(), subscribed_idle_timeout=1.0, timeout=300) as h:
        _sub, _live, send = await h.subscribe(A)
        await trio.sleep(5)
        assert (h.router.live_sessions, h.router.parked_sessions) == (0, 1)
        h.address.send_nowait(Unsubscribe(A, send))
        await trio.sleep(1)
        assert (h.router.live_sessions, h.router.parked_sessions) == (0, 0)


async def test_a_crash_restarts_only_that_session(tmp_path: Path) -> None:
    async with harness(tmp_path, lambda: EchoProvider(delay=0.005)) as h:
        _, live_b, _ = await h.subscribe(B)
        await h.submit(A, "before the crash")
        await h.submit(B, "b keeps streaming through a's crash with many words in it")
        address_a = h.router.address_of(A)
        assert address_a is not None
        address_a.send_nowait("not a message")  # type: ignore[arg-type]
        b_events = await until_turn_ends(live_b)
        assert b_events[-1].data["state"] == "completed"
        # A restarted with its state read back from storage; its address is the same.
        _, live_a, _ = await h.subscribe(A)
        accepted = await h.submit(A, "after")
        a_events = await until_turn_ends(live_a)
        assert a_events[-1].data["state"] == "completed"
        history = await h.store.call(msg_db.history, accepted.session_id)
        assert [m.content for m in history if m.role == "user"] == ["before the crash", "after"]
        assert h.router.address_of(A) is address_a


async def test_abort_stops_the_turn_at_once_and_drops_the_queue(tmp_path: Path) -> None:
    async with harness(tmp_path, lambda: EchoProvider(delay=0.05)) as h:
        _, live, _ = await h.subscribe(A)
        _, live_other, _ = await h.subscribe(A2)
        long_text = " ".join(f"w{i}" for i in range(200))
        first = await h.submit(A, long_text)
        queued = await h.submit(A, "never runs")
        other = await h.submit(A2, "other channel keeps going")
        seen = []
        async for e in live:
            seen.append(e)
            if e.type == "text_delta":
                break
        with trio.fail_after(10):
            killed = await h.abort(A)
        assert killed == 0  # echo has no processes
        # Both end aborted, each with its own turn_ended (the queued one's too: whoever waits for it is told).
        rest = await until_turn_ends(live)
        rest += await until_turn_ends(live)
        ends = [e.data for e in rest if e.type == "turn_ended"]
        # What streamed before the stop counts (estimated: echo reports none); the turn that never ran costs nothing.
        usage = {e["turn_id"]: e.pop("usage", None) for e in ends}
        assert usage[queued.turn_id] is None
        assert usage[first.turn_id]["estimated"] is True and usage[first.turn_id]["output_tokens"] >= 1
        assert sorted(ends, key=str) == sorted(
            [
                {"turn_id": first.turn_id, "state": "aborted"},
                {"turn_id": queued.turn_id, "state": "aborted", "started": False},
            ],
            key=str,
        )
        assert not any(e.type == "result" for e in rest)
        turn = await h.store.call(msg_db.get_turn, queued.turn_id)
        assert turn is not None and turn.state == "aborted"
        other_events = await until_turn_ends(live_other)
        assert other_events[-1].data == {
            "turn_id": other.turn_id,
            "state": "completed",
            "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18, "estimated": True, "model": "echo"},
        }


async def test_an_idle_report_overtaken_by_a_message_keeps_the_session(tmp_path: Path) -> None:
    async with harness(tmp_path, lambda: EchoProvider()) as h:
        await h.submit(A, "one")
        await trio.testing.wait_all_tasks_blocked()
        # The Idle its first actor (incarnation 0) sent before that Submit reached it, read by the router only now:
        # the session has taken a message since, so it stays (the router decides on the count Idle carries).
        h.address.send_nowait(Idle(A, received=0, incarnation=0))
        await trio.testing.wait_all_tasks_blocked()
        assert h.router.live_sessions == 1 and h.router.statistics().retired == 0
        h.address.send_nowait(Idle(A, received=1, incarnation=7))  # another actor's: not this one's to retire
        await trio.testing.wait_all_tasks_blocked()
        assert h.router.live_sessions == 1
        h.address.send_nowait(Idle(A, received=1, incarnation=0))  # idle after all it was sent: retired
        await trio.testing.wait_all_tasks_blocked()
        assert h.router.live_sessions == 0 and h.router.statistics().retired == 1


async def test_a_full_queue_answers_busy(tmp_path: Path) -> None:
    gate = GateProvider()
    async with harness(tmp_path, lambda: gate, max_queue=2) as h:
        await h.submit(A, "q1")
        await h.submit(A, "q2")
        await trio.testing.wait_all_tasks_blocked()
        await h.submit(A, "q3")
        from actors.base import BusyError

        with pytest.raises(BusyError):
            await h.submit(A, "q4")


async def test_a_turn_running_when_its_session_crashes_ends_interrupted(tmp_path: Path) -> None:
    gate = GateProvider()  # its turns wait for a gate the test never opens
    async with harness(tmp_path, lambda: gate) as h:
        _, live, _ = await h.subscribe(A)
        accepted = await h.submit(A, "stuck")
        await trio.testing.wait_all_tasks_blocked()
        assert gate.started == ["stuck"]
        address = h.router.address_of(A)
        assert address is not None
        address.send_nowait("not a message")  # type: ignore[arg-type]
        events = await until_turn_ends(live)
        assert events[-1].data == {"turn_id": accepted.turn_id, "state": "interrupted"}
        turn = await h.store.call(msg_db.get_turn, accepted.turn_id)
        assert turn is not None and turn.state == "interrupted", "not left `running` by the crash"
        # The restarted session takes new turns on the same key.
        gate.gates["after"] = trio.Event()
        gate.gates["after"].set()
        _, live, _ = await h.subscribe(A)
        await h.submit(A, "after")
        assert (await until_turn_ends(live))[-1].data["state"] == "completed"


async def test_a_slow_subscriber_is_cut_off_and_resumes_without_a_gap(tmp_path: Path) -> None:
    async with harness(tmp_path, lambda: EchoProvider()) as h:
        _, watcher, _ = await h.subscribe(A)
        _, slow, _ = await h.subscribe(A, buffer=3)  # holds 3 events, then the session cuts it off
        await h.submit(A, " ".join(f"w{i}" for i in range(50)))
        everything = await until_turn_ends(watcher)
        got = [e async for e in slow]  # its buffer, then the end of the channel (cut off)
        assert got == everything[:3]
        sub, _, _ = await h.subscribe(A, after=got[-1].seq)
        assert got + sub.replay == everything


async def test_a_session_over_its_restart_budget_is_forgotten_then_revived(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(tmp_path, lambda: EchoProvider(), timeout=300) as h:
        _, live_b, _ = await h.subscribe(B)
        await h.submit(A, "first")
        address = h.router.address_of(A)
        assert address is not None
        name = f"session:{A}"
        for n in range(4):  # the budget allows 3 restarts in 10 s: the 4th crash gives up
            address.send_nowait("not a message")  # type: ignore[arg-type]
            await trio.testing.wait_all_tasks_blocked()
            if n < 3:
                # Crashing and restarted: the registry shows it with its restarts and the cause.
                info = h.router.registry.statistics()[name]
                assert info["state"] == "restarting" and info["restarts"] == n + 1
                assert info["last_error"] == f"TypeError: session {A} got an unknown message 'not a message'"
            await trio.sleep(1)  # virtual: past the restart backoff
        assert h.router.address_of(A) is None, "given up and forgotten"
        assert h.router.statistics().crashed == 1
        assert name not in h.router.registry.statistics(), "a forgotten session leaves no entry behind"
        # Other sessions never noticed; the next message for A starts a fresh actor from storage.
        await h.submit(B, "b still works")
        assert (await until_turn_ends(live_b))[-1].data["state"] == "completed"
        _, live_a, _ = await h.subscribe(A)
        accepted = await h.submit(A, "revived")
        assert (await until_turn_ends(live_a))[-1].data["state"] == "completed"
        history = await h.store.call(msg_db.history, accepted.session_id)
        assert [m.content for m in history if m.role == "user"] == ["first", "revived"]


async def test_a_turn_end_stuck_on_a_frozen_disk_holds_a_cancelled_session_a_bounded_time(tmp_path: Path) -> None:
    # A turn's end commit is seen through even at shutdown, but only `end_shown_after` longer once its session is
    # cancelled: a frozen disk must not hold the gateway's stop.
    gate = GateProvider()
    disk, entered = threading.Event(), threading.Event()

    def stuck(conn: sqlite3.Connection) -> None:
        entered.set()
        disk.wait(30)

    conn = open_db(tmp_path / "actors.db", synchronous="normal")
    try:
        async with trio.open_nursery() as infra:
            spec: ChildSpec[StoreMsg] = ChildSpec("store", StoreActor(conn, inline=False).run, capacity=64)
            store = Store(await infra.start(partial(supervise, spec)))
            with trio.fail_after(20):
                async with trio.open_nursery() as core:
                    router = Router(
                        store=store, provider=lambda: gate, session_config=SessionConfig(end_shown_after=0.2)
                    )
                    address = await start_router(core, router)
                    send, live = trio.open_memory_channel[EventRow](100)
                    await ask(address, lambda r: Subscribe(A, send, None, r), timeout=5)
                    await ask(address, lambda r: Submit(A, "one", r), timeout=5)
                    await until(lambda: gate.started == ["one"])
                    infra.start_soon(store.call, stuck)
                    await until(entered.is_set)
                    gate.gates["one"].set()
                    await until_turn_ends(live)  # shown after 0.2 s; its commit still waits behind the frozen disk
                    core.cancel_scope.cancel()  # shutdown
                assert not disk.is_set()  # the session ended while its end commit was still stuck
            disk.set()
            infra.cancel_scope.cancel()
    finally:
        disk.set()
        conn.close()
