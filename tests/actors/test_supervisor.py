"""Supervisor restart modes and budget, on the autojump clock."""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import trio
import trio.lowlevel
import trio.testing

from actors.base import AskTimeoutError, Reply, ask
from actors.store import StorageUnavailableError
from actors.supervisor import (
    SUPERVISED,
    ChildSpec,
    GaveUpError,
    Registry,
    Restart,
    RestartBudget,
    RestartPolicy,
    Supervisor,
    service,
    supervise,
)
from tests.conftest import until


class Boom(Exception):
    pass


def crashing(counter: list[float]) -> ChildSpec[object]:
    async def run(inbox: trio.MemoryReceiveChannel[object]) -> None:
        counter.append(trio.current_time())
        await trio.sleep(1)
        raise Boom("crash")

    return ChildSpec("crasher", run, RestartPolicy(Restart.PERMANENT, max_restarts=3, window=60, backoff=0.5))


async def test_permanent_restarts_until_budget_then_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    # Virtual seconds: a supervisor that never gave up would fail here instead of looping forever.
    with trio.fail_after(1000), pytest.raises(GaveUpError) as info:
        await supervise(crashing(starts))
    assert isinstance(info.value.__cause__, Boom)
    assert len(starts) == 4  # first run + 3 restarts
    # Backoff doubles between restarts: 0.5, 1, 2 seconds (plus 1 s of work each time).
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([1.5, 2.0, 3.0])


async def test_budget_window_slides_so_rare_crashes_never_give_up(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []

    async def run(inbox: trio.MemoryReceiveChannel[object]) -> None:
        starts.append(trio.current_time())
        await trio.sleep(30)  # one crash every 30 s; the window holds at most 2 of them
        if len(starts) < 8:
            raise Boom("rare")

    spec: ChildSpec[object] = ChildSpec("rare", run, RestartPolicy(Restart.TRANSIENT, max_restarts=2, window=60))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervise, spec))
    assert len(starts) == 8


async def test_transient_exits_normally_without_restart(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0

    async def run(inbox: trio.MemoryReceiveChannel[object]) -> None:
        nonlocal runs
        runs += 1

    spec: ChildSpec[object] = ChildSpec("t", run, RestartPolicy(Restart.TRANSIENT))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervise, spec))
    assert runs == 1


async def test_temporary_is_never_restarted(autojump_clock: trio.testing.MockClock) -> None:
    runs = 0

    async def run(inbox: trio.MemoryReceiveChannel[object]) -> None:
        nonlocal runs
        runs += 1
        raise Boom("once")

    spec: ChildSpec[object] = ChildSpec("tmp", run, RestartPolicy(Restart.TEMPORARY))
    with pytest.raises(GaveUpError):
        await supervise(spec)
    assert runs == 1


async def test_address_survives_restart_and_registry_counts(autojump_clock: trio.testing.MockClock) -> None:
    registry = Registry()

    async def run(inbox: trio.MemoryReceiveChannel[tuple[str, Reply[str]]]) -> None:
        async for text, reply in inbox:
            if text == "crash":
                raise Boom("asked to")
            reply.set(text.upper())

    spec: ChildSpec[tuple[str, Reply[str]]] = ChildSpec(
        "echo", run, RestartPolicy(Restart.PERMANENT, max_restarts=5, window=10, backoff=0.1), registry=registry
    )
    async with trio.open_nursery() as nursery:
        address = await nursery.start(partial(supervise, spec))
        assert await ask(address, lambda r: ("hi", r), timeout=1) == "HI"
        with pytest.raises(AskTimeoutError):
            await ask(address, lambda r: ("crash", r), timeout=1)
        assert await ask(address, lambda r: ("again", r), timeout=1) == "AGAIN"
        stats = registry.statistics()["echo"]
        assert stats["restarts"] == 1
        assert stats["state"] == "running"
        assert "Boom" in str(stats["last_error"])
        nursery.cancel_scope.cancel()


def test_budget_modes() -> None:
    b = RestartBudget(RestartPolicy(Restart.TRANSIENT, max_restarts=1, window=5))
    assert not b.allows(None, now=0)
    assert b.allows(Boom(), now=0)
    assert not b.allows(Boom(), now=1)
    assert b.allows(Boom(), now=7)


async def test_ask_times_out_on_an_actor_that_never_answers(autojump_clock: trio.testing.MockClock) -> None:
    async def run(inbox: trio.MemoryReceiveChannel[Reply[int]]) -> None:
        async for _ in inbox:
            pass

    spec: ChildSpec[Reply[int]] = ChildSpec("mute", run)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(partial(supervise, spec))
        start = trio.current_time()
        with pytest.raises(AskTimeoutError):
            await ask(address, lambda r: r, timeout=2.5)
        assert trio.current_time() - start == pytest.approx(2.5)
        nursery.cancel_scope.cancel()


def test_describe_error_names_the_crash_inside_nursery_groups() -> None:
    from actors.supervisor import describe_error

    inner = Boom("manifest announces protocol 7")
    nested = ExceptionGroup("outer", [ExceptionGroup("Exceptions from Trio nursery", [inner])])
    assert describe_error(nested) == "Boom: manifest announces protocol 7"
    assert describe_error(Boom("plain")) == "Boom: plain"
    two = ExceptionGroup("two crashes", [Boom("a"), ValueError("b")])
    assert describe_error(two).startswith("ExceptionGroup: two crashes")


async def test_an_old_actor_stopping_leaves_its_successors_entry(autojump_clock: trio.testing.MockClock) -> None:
    # A session retired and revived at once: the new actor registers under the same name before the old one's
    # supervisor has finished, and the old one must not take the new one off the registry on its way out.
    registry = Registry()
    transient = RestartPolicy(Restart.TRANSIENT)

    async def until_stopped(inbox: trio.MemoryReceiveChannel[str]) -> None:
        async for msg in inbox:
            if msg == "stop":
                return

    old_spec: ChildSpec[str] = ChildSpec("session:x", until_stopped, transient, registry=registry)
    new_spec: ChildSpec[str] = ChildSpec("session:x", until_stopped, transient, registry=registry)
    async with trio.open_nursery() as nursery:
        old = await nursery.start(partial(supervise, old_spec))
        new = await nursery.start(partial(supervise, new_spec))
        mine = registry.get("session:x")
        old.send_nowait("stop")
        await trio.testing.wait_all_tasks_blocked()
        assert registry.get("session:x") is mine and registry.statistics()["session:x"]["state"] == "running"
        new.send_nowait("stop")
        await trio.testing.wait_all_tasks_blocked()
        assert registry.get("session:x") is None and len(registry) == 0


async def test_a_failed_actor_stays_listed_unless_its_owner_forgets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry()
    once = RestartPolicy(Restart.TRANSIENT, max_restarts=0)

    async def crash(inbox: trio.MemoryReceiveChannel[object]) -> None:
        raise Boom("broken")

    for forget in (False, True):
        spec: ChildSpec[object] = ChildSpec(f"a{forget}", crash, once, registry=registry, forget_failed=forget)
        with pytest.raises(GaveUpError):
            await supervise(spec)
    assert list(registry.statistics()) == ["aFalse"]
    assert registry.statistics()["aFalse"]["state"] == "failed"


async def test_a_crash_while_the_actor_is_being_stopped_does_not_escape_the_supervisor() -> None:
    # A child that fails while its actor is cancelled makes the actor's nursery raise [RuntimeError, Cancelled]:
    # not an `Exception`, so it slipped past the crash handling and took the supervisor's parent down (seen with
    # a telegram poller failing while its connector was replaced).
    async def run(inbox: trio.MemoryReceiveChannel[object]) -> None:
        async def fails_when_cancelled() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise RuntimeError("failed while stopping")

        async with trio.open_nursery() as n:
            n.start_soon(fails_when_cancelled)
            n.start_soon(trio.sleep_forever)

    stopped = trio.Event()
    scope = trio.CancelScope()

    async def supervised() -> None:
        with scope:
            await supervise(ChildSpec("stopping", run, registry=Registry()))
        stopped.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:  # would raise RuntimeError if the crash escaped
            nursery.start_soon(supervised)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await stopped.wait()
    assert scope.cancelled_caught


async def test_a_dynamic_supervisor_runs_named_children_and_a_failed_one_never_takes_it_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry()
    failed: list[str] = []

    async def crash(inbox: trio.MemoryReceiveChannel[object]) -> None:
        raise Boom("always")

    async def serve(inbox: trio.MemoryReceiveChannel[tuple[str, Reply[str]]]) -> None:
        async for _, reply in inbox:
            reply.set(trio.lowlevel.current_task().name)

    with trio.fail_after(100):
        async with Supervisor("top", on_failed=lambda c: failed.append(c.name)) as sup:
            bad = await sup.start(
                ChildSpec("bad", crash, RestartPolicy(max_restarts=2, backoff=0.5), registry=registry)
            )
            good = await sup.start(ChildSpec("good", serve, registry=registry))
            assert await ask(good.address, lambda r: ("who", r), timeout=1) == SUPERVISED + "good"
            await bad.done.wait()
            assert failed == ["bad"] and bad.error == "Boom: always"
            assert sup.get("bad") is bad and registry.statistics()["bad"]["state"] == "failed"
            # The supervisor and its other children go on; a stopped child is forgotten.
            assert await ask(good.address, lambda r: ("again", r), timeout=1) == SUPERVISED + "good"
            await good.stop()
            assert sup.get("good") is None and "good" not in registry.statistics()
            sup.cancel()


async def test_a_permanent_child_waits_out_temporary_failures_and_never_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def storage_down(inbox: trio.MemoryReceiveChannel[object]) -> None:
        starts.append(trio.current_time())
        if len(starts) < 12:  # far beyond its budget of 2
            raise StorageUnavailableError("the disk is read-only")
        await trio.sleep_forever()

    policy = RestartPolicy(Restart.PERMANENT, max_restarts=2, window=60, backoff=0.5, max_backoff=4)
    with trio.fail_after(1000):
        async with Supervisor("top") as sup:
            child = await sup.start(ChildSpec("poller", storage_down, policy))
            await until(lambda: len(starts) >= 12, interval=1)
            assert child.error is None and not child.done.is_set()
            # Backoff doubles up to its cap: 0.5, 1, 2, 4, 4...
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert gaps[:5] == pytest.approx([0.5, 1, 2, 4, 4])
            sup.cancel()


async def test_a_service_is_started_once_it_says_it_is_ready(autojump_clock: trio.testing.MockClock) -> None:
    ready_at: list[float] = []

    async def slow_start(*, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep(3)
        ready_at.append(trio.current_time())
        task_status.started()
        await trio.sleep_forever()

    async with Supervisor("top") as sup:
        await sup.start(service("slow", slow_start, announces=True))
        assert ready_at == [trio.current_time()]
        sup.cancel()


async def test_an_ask_withdrawn_at_its_deadline_never_runs_and_a_claimed_one_is_answered_past_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[str] = []

    async def slow(inbox: trio.MemoryReceiveChannel[tuple[str, Reply[str]]]) -> None:
        async for text, reply in inbox:
            if not reply.claim():
                continue  # its asker gave up: it must not run
            await trio.sleep(5)  # longer than the askers' timeout
            ran.append(text)
            reply.set(text)

    async with Supervisor("top") as sup:
        child = await sup.start(ChildSpec("slow", slow))
        async with trio.open_nursery() as n:
            first: list[str] = []

            async def ask_first() -> None:
                first.append(await ask(child.address, lambda r: ("first", r), timeout=1))

            n.start_soon(ask_first)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(AskTimeoutError):  # queued behind "first" when its deadline passed
                await ask(child.address, lambda r: ("second", r), timeout=1)
        assert first == ["first"]  # claimed before the deadline: waited for, not a timeout
        await trio.sleep(10)
        assert ran == ["first"]
        sup.cancel()
