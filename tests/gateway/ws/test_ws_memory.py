"""Memory comes back: rounds of `/ws` connections, each on its own chat with one turn, leave no objects behind."""

from __future__ import annotations

import gc
import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio.testing
from trio._core._run import GLOBAL_RUN_CONTEXT

from gateway.daemon.serve import GC_THRESHOLDS, collect_when_quiet
from tests.conftest import RunningGateway, make_config, start_gateway, until
from tests.gateway.wshelpers import client, deltas
from tests.gateway.wshelpers import until as until_frame

ROUNDS = 5
PER_ROUND = 50


async def _round(gw: RunningGateway, first_chat: int) -> None:
    """PER_ROUND connections at once, each on a new chat, one turn each, then closed; waits until the gateway has
    let go of them: no connection actor, no live session (they retire after their idle timeout)."""

    async def one(chat: int) -> None:
        async with client(gw, chat_id=chat) as c:
            text = f"round chat {chat} " + "word " * 20
            await c.send_message(text)
            assert deltas(await until_frame(c, "result")) == text

    async with trio.open_nursery() as nursery:
        for i in range(PER_ROUND):
            nursery.start_soon(one, first_chat + i)
    rt = gw.runtime
    await until(
        lambda: (
            rt.registry.count("connection:") == 0
            and rt.router.live_sessions == 0
            and rt.router.parked_sessions == 0
            and not rt.connections
        )
    )


OURS = ("gateway.", "actors.", "storage.", "trio.", "hypercorn.", "wsproto.", "nacl.")


def _held() -> tuple[int, int]:
    """(live objects of the gateway's own types and of the libraries its connections use, memory blocks the Python
    allocator has handed out and not got back). The first is exact (a leaked session key or task counts one); the
    second counts every object, strings too, which `gc.get_objects()` does not list.

    trio keeps an exited cancel scope in its deadline heap until the deadline passes, or until more than 1000 such
    entries make it prune the heap (each ask's timeout is one): up to ~4,400 blocks that come and go with trio's
    own pruning, more than the noise this test allows. They are pruned first, as trio would."""
    GLOBAL_RUN_CONTEXT.runner.deadlines._prune()
    gc.collect()
    gc.collect()
    ours = sum(1 for o in gc.get_objects() if str(type(o).__module__).startswith(OURS))
    return ours, sys.getallocatedblocks()


async def test_rounds_of_connections_leave_no_objects_behind(nursery: trio.Nursery, tmp_path: Path) -> None:
    config, paths = make_config(tmp_path, sessions={"idle_timeout": 0.2})
    gw = await start_gateway(nursery, config, paths)
    held: list[tuple[int, int]] = []
    with trio.fail_after(120):
        for r in range(ROUNDS):
            await _round(gw, 1000 * (r + 1))
            # Nothing in flight any more (the outbox's deliveries, log records, the store's last commits): what is
            # left is what the gateway keeps.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            held.append(_held())
        await gw.stop()
    # Round 1 warms what stays (imports, compiled regexes, SQLite's statement cache); after it, the same work again
    # must leave the counts where they were, not a little more each round: a table keyed by turn or session, a
    # session that never retires, an actor's task left behind. One object kept per connection would be 150 more
    # over rounds 3-5; the noise (messages in flight to the outbox, trio's cancel bookkeeping) is ~40.
    ours, blocks = [h[0] for h in held], [h[1] for h in held]
    assert ours[-1] - ours[1] < 2 * PER_ROUND, f"our objects after each round: {ours}"
    assert max(blocks[1:]) - blocks[1] < 0.005 * blocks[1], f"allocated blocks after each round: {blocks}"


def _connection_tasks() -> int:
    """Tasks whose own coroutine is the connection actor's (its main task is the server's, which runs the app)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found, todo = 0, [root]
    while todo:
        task = todo.pop()
        code = getattr(task.coro, "cr_code", None)
        if code is not None and code.co_filename.endswith(str(Path("gateway", "ws", "connection.py"))):
            found += 1
        todo.extend(child for n in task.child_nurseries for child in n.child_tasks)
    return found


async def test_an_idle_connection_keeps_no_task_of_its_own(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Issue 17: an idle connection is the server's task reading the socket; the task that sends its session's
    events and notifications exists only while something is being sent (it was three tasks, with two channels)."""
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        async with client(gw, chat_id=7) as c:
            await c.send_message("hello " + "word " * 50)
            assert deltas(await until_frame(c, "result")).startswith("hello")
            await until(lambda: _connection_tasks() == 0)
            gw.runtime.notifications.publish({"kind": "test", "text": "pushed"})
            pushed = await until_frame(c, "notification")
            assert pushed[-1]["notification"]["text"] == "pushed"
            await until(lambda: _connection_tasks() == 0)
            await c.send_message("again")
            assert deltas(await until_frame(c, "result")) == "again"


def _session_tasks() -> int:
    """Tasks running a session actor's own code (its serve loop, runner or flusher)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    found, todo = 0, [root]
    while todo:
        task = todo.pop()
        code = getattr(task.coro, "cr_code", None)
        if code is not None and code.co_filename.endswith(str(Path("actors", "session.py"))):
            found += 1
        todo.extend(child for n in task.child_nurseries for child in n.child_tasks)
    return found


async def test_an_idle_connection_keeps_no_session_actor(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Issue 17: a session idle while its /ws client listens is parked (no actor, no task, no mailbox: the router
    keeps its subscriber and its numbering); the next message wakes it and the stream goes on where it was."""
    config, paths = make_config(tmp_path, sessions={"subscribed_idle_timeout": 0.2})
    gw = await start_gateway(nursery, config, paths)
    router = gw.runtime.router
    with trio.fail_after(30):
        async with client(gw, chat_id=7) as c:
            await c.send_message("hello " + "word " * 20)
            first = await until_frame(c, "result")
            await until(lambda: router.live_sessions == 0 and router.parked_sessions == 1)
            assert _session_tasks() == 0
            # Events published while parked still reach the client: a turn from another connection on the chat.
            async with client(gw, chat_id=7) as other:
                await other.send_message("from the other one")
                assert deltas(await until_frame(other, "result")) == "from the other one"
            second = await until_frame(c, "result")
            assert deltas(second) == "from the other one"
            # Numbered on from where the parked session was, not from past its reservation (100 000 further on).
            assert first[-1]["seq"] < second[-1]["seq"] < first[-1]["seq"] + 20
            await until(lambda: router.live_sessions == 0 and router.parked_sessions == 1)
            await c.send_message("again")
            assert deltas(await until_frame(c, "result")) == "again"
        # The client left: the parked session forgets it (and with no listener left, the key altogether).
        await until(lambda: router.parked_sessions == 0)


def _frames_of(task: trio.lowlevel.Task) -> list[str]:
    """The files of the coroutine frames a task is suspended in, outermost first."""
    files: list[str] = []
    coro: Any = task.coro
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is not None:
            files.append(code.co_filename)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return files


async def test_an_idle_socket_holds_no_middleware_frames(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Issue 17: `/ws` is served ahead of Starlette's middleware and routing, whose ten frames would otherwise stay
    suspended on every idle socket's task (~3 KB each), and the socket's task opens no nursery."""
    config, paths = make_config(tmp_path)
    gw = await start_gateway(nursery, config, paths)
    with trio.fail_after(30):
        async with client(gw, chat_id=8) as c:
            await c.send_message("hello")
            await until_frame(c, "result")
            root = trio.lowlevel.current_root_task()
            assert root is not None
            sockets, todo = [], [root]
            while todo:
                task = todo.pop()
                files = _frames_of(task)
                if any(f.endswith(str(Path("gateway", "ws", "connection.py"))) for f in files):
                    sockets.append((task, files))
                todo.extend(child for n in task.child_nurseries for child in n.child_tasks)
            assert len(sockets) == 1
            task, files = sockets[0]
            assert not [f for f in files if "starlette" in f], files
            # Nor a nursery of its own (~1.3 KB each): its helpers start in the gateway's one (`Runtime.ws_tasks`).
            assert task.child_nurseries == [], task.child_nurseries


def _connection_objects() -> int:
    """Live objects of the libraries a connection's server side is built from; once its connection is closed,
    such an object is garbage in a reference cycle, which only a collection frees."""
    return sum(1 for o in gc.get_objects() if str(type(o).__module__).startswith(("hypercorn.", "h11.", "wsproto.")))


async def test_a_burst_of_connections_is_collected_once_quiet(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Issue 17 target 3: a closed connection leaves hypercorn's per-connection server, protocol and h11 state in
    a reference cycle. Under the serving gateway's collector thresholds (young collections every 10 000 new
    objects) an idle gateway allocates too little to trigger any collection, so a burst's cycles stayed until the
    next burst; `collect_when_quiet` frees them once the burst is over. Nothing here calls `gc.collect()` after the
    start. The collector starts only once the burst is over: started before, it may find a quiet moment within a
    round (more likely on a loaded machine) and leave the rest of the round's garbage to the next burst."""
    config, paths = make_config(tmp_path, sessions={"idle_timeout": 0.2})
    gw = await start_gateway(nursery, config, paths)
    thresholds = gc.get_threshold()
    # A known start: no garbage anywhere and the generations' counts at zero, so the rounds' allocations alone
    # decide which collections run (a few young ones; a full one needs a hundred).
    gc.collect()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        with trio.fail_after(60):
            serving = _connection_objects()
            await _round(gw, 1)
            await _round(gw, 1000)
            # Every connection is closed and its session retired: what is left of them is garbage (~10 objects per
            # connection), and the idle gateway triggers no collection that would free it.
            assert _connection_objects() - serving >= 2 * PER_ROUND
            full = gc.get_stats()[2]["collections"]
            nursery.start_soon(partial(collect_when_quiet, period=0.2, after=1))
            await until(lambda: _connection_objects() <= serving, interval=0.2)
            assert gc.get_stats()[2]["collections"] > full
    finally:
        gc.set_threshold(*thresholds)
